"""Loads the optional C fast path (_kfast.c), building it with the system C compiler on first
use. `fast.mod` is the module, or None when it cannot be built (no compiler, no Python
headers, PYBPFC_NO_FAST=1): callers then use their pure-Python paths."""
from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kfast.c")
why_not = ""


def _cache_dir() -> str:
    base = os.environ.get("PYBPFC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pybpfc")
    return base


def _build():
    global why_not
    if os.environ.get("PYBPFC_NO_FAST"):
        why_not = "disabled by PYBPFC_NO_FAST"
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    inc = sysconfig.get_paths().get("include")
    if not cc or not inc or not os.path.exists(os.path.join(inc, "Python.h")):
        why_not = "no C compiler or Python headers"
        return None
    with open(SRC, "rb") as f:
        src = f.read()
    tag = hashlib.sha256(src + sys.version.encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    path = os.path.join(out_dir, f"_pybpfc_kfast.{tag}{importlib.machinery.EXTENSION_SUFFIXES[0]}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.path.exists(path):
            with open(os.path.join(out_dir, ".kfast.lock"), "w") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)  # several processes may start at once
                if not os.path.exists(path):
                    tmp = f"{path}.{os.getpid()}.tmp"
                    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{inc}", SRC, "-o", tmp],
                                       capture_output=True, text=True)
                    if r.returncode:
                        why_not = f"build failed: {r.stderr.strip()[:500]}"
                        return None
                    os.replace(tmp, path)
                    for old in os.listdir(out_dir):  # builds of older sources (unlinking is safe
                        if old.startswith("_pybpfc_kfast.") and os.path.join(out_dir, old) != path:
                            try:                      # for processes that still map them)
                                os.unlink(os.path.join(out_dir, old))
                            except OSError:
                                pass
        spec = importlib.util.spec_from_file_location("_pybpfc_kfast", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    except (OSError, ImportError) as e:
        why_not = f"{type(e).__name__}: {e}"
        return None


mod = _build()

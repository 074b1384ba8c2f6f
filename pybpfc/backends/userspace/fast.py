"""Loads the optional C fast path of userspace map operations (_usfast.c), building it with the
system C compiler on first use. `mod` is the module, or None when it cannot be built (no
compiler or Python headers, PYBPFC_NO_FAST=1); maps.py then calls the store through cffi."""
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

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_usfast.c")
why_not = ""


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
    out_dir = os.environ.get("PYBPFC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pybpfc")
    path = os.path.join(out_dir, f"_pybpfc_usfast.{tag}{importlib.machinery.EXTENSION_SUFFIXES[0]}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.path.exists(path):
            with open(os.path.join(out_dir, ".usfast.lock"), "w") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)  # several processes may start at once
                if not os.path.exists(path):
                    tmp = f"{path}.{os.getpid()}.tmp"
                    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{inc}", SRC, "-o", tmp],
                                       capture_output=True, text=True)
                    if r.returncode:
                        why_not = f"build failed: {r.stderr.strip()[:500]}"
                        return None
                    os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location("_pybpfc_usfast", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        from .runtime import ffi, lib

        F, L = ffi(), lib()
        mod.init(*(int(F.cast("uintptr_t", getattr(L, n)))
                   for n in ("pbs_map_lookup_copy", "pbs_map_update_user", "pbs_map_delete",
                             "pbs_map_next_key", "pbs_map_lookup_batch")))
        return mod
    except Exception as e:  # any failure here only costs speed: maps.py uses cffi
        why_not = f"{type(e).__name__}: {e}"
        return None


mod = _build()

"""Locates the native libraries (runtime, agent) and the optional fast-path extensions,
building them first in a source checkout when their sources changed."""
from __future__ import annotations

import fcntl
import importlib.util
import os

from . import build as _build


def library(name: str) -> str:
    """Path of lib<name>.so ("pybpfc_runtime" or "pybpfc_agent"), rebuilt if its sources changed.
    PYBPFC_NATIVE_DIR=<dir> uses <dir>/lib<name>.so as is instead (a separately built copy, e.g.
    under AddressSanitizer), failing if it is not there."""
    override = os.environ.get("PYBPFC_NATIVE_DIR")
    if override:
        path = _build.lib_path(name, override)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: not found (PYBPFC_NATIVE_DIR={override})")
        return path
    path = _build.lib_path(name)
    has_sources = name in _build.targets()
    if not has_sources:
        if os.path.exists(path):
            return path
        raise FileNotFoundError(f"{path}: native library missing and no sources to build it from")
    if _build.is_stale(name):  # several test processes may start at once: build under a lock
        _locked(lambda: _build.is_stale(name) and _build.build(name))
    return path


def _locked(fn):
    lock = os.path.join(_build.OUT, ".build.lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        return fn()


def extension(name: str):
    """(module, None) for an optional CPython extension ("_pybpfc_kfast", ...), or
    (None, reason) when it is disabled (PYBPFC_NO_FAST=1) or cannot be built or imported;
    callers then take their pure-Python paths."""
    if os.environ.get("PYBPFC_NO_FAST"):
        return None, "disabled by PYBPFC_NO_FAST"
    try:
        if _build.ext_is_stale(name):
            _locked(lambda: _build.ext_is_stale(name) and _build.build_ext(name))
        path = _build.ext_path(name)
        spec = importlib.util.spec_from_file_location(f"{__name__}.{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod, None
    except (OSError, ImportError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"

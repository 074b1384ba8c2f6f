"""Locates the native libraries (runtime, agent), building them first in a source checkout."""
from __future__ import annotations

import fcntl
import os

from . import build as _build


def library(name: str) -> str:
    """Path of lib<name>.so ("pybpfc_runtime" or "pybpfc_agent"), rebuilt if its sources changed."""
    path = _build.lib_path(name)
    has_sources = name in _build.targets()
    if not has_sources:
        if os.path.exists(path):
            return path
        raise FileNotFoundError(f"{path}: native library missing and no sources to build it from")
    if _build.is_stale(name):
        lock = os.path.join(_build.OUT, ".build.lock")
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # several test processes may start at once
            if _build.is_stale(name):
                _build.build(name)
    return path

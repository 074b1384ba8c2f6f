"""The optional C fast path of userspace map operations (_usfast.c), built with the package
(pybpfc/_native/build.py). `mod` is the module, or None with the reason in `why_not` (no
compiler or Python headers, PYBPFC_NO_FAST=1); maps.py then calls the store through cffi."""
from __future__ import annotations

from ..._native import extension


def _load():
    mod, why = extension("_pybpfc_usfast")
    if mod is None:
        return None, why
    try:
        from .runtime import ffi, lib

        F, L = ffi(), lib()
        mod.init(*(int(F.cast("uintptr_t", getattr(L, n)))
                   for n in ("pbs_map_lookup_copy", "pbs_map_update_user", "pbs_map_delete",
                             "pbs_map_next_key", "pbs_map_lookup_batch")))
        return mod, None
    except Exception as e:  # any failure here only costs speed: maps.py uses cffi
        return None, f"{type(e).__name__}: {e}"


mod, why_not = _load()

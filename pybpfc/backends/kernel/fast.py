"""The optional C fast path (_kfast.c: map element calls, ring buffer decoding into Structs),
built with the package (pybpfc/_native/build.py). `mod` is the module, or None with the
reason in `why_not` (no compiler or Python headers, PYBPFC_NO_FAST=1): callers then use their
pure-Python paths."""
from __future__ import annotations

from ..._native import extension

mod, why_not = extension("_pybpfc_kfast")

"""BTF: parse object and kernel BTF, re-encode it, and turn its types into pybpfc.lang types.

`BTF(raw)` parses lazily: only the offsets of the type records are computed up front, types
are decoded on first use, so /sys/kernel/btf/vmlinux (100k+ types) is cheap to open.
`pybpfc.btf.core` applies CO-RE relocations in Python; `pybpfc.btf.kernel` resolves an
object's kernel externs (kfuncs, ksyms, kconfig) against the running kernel. See docs/loader.md.
"""
from __future__ import annotations

import functools

from .btf import (
    BTF,
    BTFType,
    KIND_NAMES,
    Member,
    parse_btf_ext,
)
from ..errors import BTFError

VMLINUX_PATH = "/sys/kernel/btf/vmlinux"


@functools.lru_cache(maxsize=1)
def vmlinux() -> BTF:
    """The running kernel's BTF (cached). BTFError when the kernel has none."""
    try:
        with open(VMLINUX_PATH, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BTFError(f"{VMLINUX_PATH}: {e.strerror}") from None
    return BTF(raw, source=VMLINUX_PATH)


__all__ = ["BTF", "BTFType", "BTFError", "KIND_NAMES", "Member", "parse_btf_ext", "vmlinux"]

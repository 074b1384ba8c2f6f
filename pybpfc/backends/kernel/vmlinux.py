"""Type-id lookup in the running kernel's BTF (/sys/kernel/btf/vmlinux), for attach_btf_id of
fentry/fexit/fmod_ret/tp_btf/lsm/iter programs. Only names and kinds are indexed."""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import Optional

from ...errors import BTFError, LoadError, NotSupportedError

VMLINUX = "/sys/kernel/btf/vmlinux"
KIND_TYPEDEF, KIND_FUNC = 8, 12

# Bytes following `struct btf_type` for each kind: (fixed, per-vlen).
_EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
          8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12)}


def index_btf(data: bytes) -> dict:
    """{(kind, name): type id} of every named type in raw BTF."""
    if len(data) < 24:
        raise BTFError("BTF: truncated header")
    magic, _ver, _fl, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
    if magic != 0xEB9F:
        raise BTFError(f"BTF: bad magic {magic:#x}")
    tstart, sstart = hdr_len + type_off, hdr_len + str_off
    strs = data[sstart:sstart + str_len]
    out, off, end, tid = {}, tstart, tstart + type_len, 1
    while off < end:
        name_off, info, _ = struct.unpack_from("<III", data, off)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, per = _EXTRA.get(kind, (None, None))
        if fixed is None:
            raise BTFError(f"BTF: unknown kind {kind} at type {tid}")
        if name_off:
            e = strs.find(b"\0", name_off)
            out.setdefault((kind, strs[name_off:e].decode(errors="replace")), tid)
        off += 12 + fixed + per * vlen
        tid += 1
    return out


@lru_cache(maxsize=1)
def _vmlinux_index() -> dict:
    try:
        with open(VMLINUX, "rb") as f:
            return index_btf(f.read())
    except OSError as e:
        raise LoadError(f"kernel BTF: cannot read {VMLINUX}: {e.strerror}") from None


def find(name: str, kind: int) -> Optional[int]:
    return _vmlinux_index().get((kind, name))


def attach_btf_id(spec) -> int:
    """The vmlinux type id a BTF-attached program names (0 for other kinds)."""
    kind, target = spec.kind, spec.attach_to
    if kind == "freplace":
        raise NotSupportedError(f"prog '{spec.name}': freplace programs replace a function of "
                                f"another loaded program; the loader does not support them")
    if kind in ("fentry", "fexit", "fmod_ret"):
        name, k = target, KIND_FUNC
    elif kind == "tp_btf":
        name, k = "btf_trace_" + target, KIND_TYPEDEF
    elif kind in ("lsm", "lsm_cgroup"):
        name, k = "bpf_lsm_" + target, KIND_FUNC
    elif kind == "iter":
        name, k = "bpf_iter_" + target, KIND_FUNC
    else:
        return 0
    if not target:
        raise LoadError(f"prog '{spec.name}': section '{spec.section}' names no attach target")
    tid = find(name, k)
    if tid is None:
        raise LoadError(f"prog '{spec.name}': '{target}' not found in the kernel's BTF ({VMLINUX})")
    return tid

"""attach_btf_id of BTF-attached programs (fentry/fexit/fmod_ret/tp_btf/lsm/iter): the id of
their target in the running kernel's BTF, found through pybpfc.btf.vmlinux()."""
from __future__ import annotations

from typing import Optional

from ...errors import BTFError, LoadError, NotSupportedError

VMLINUX = "/sys/kernel/btf/vmlinux"
KIND_TYPEDEF, KIND_FUNC = 8, 12


def find(name: str, kind: int) -> Optional[int]:
    from ...btf import VMLINUX_PATH, vmlinux

    try:
        t = vmlinux().find(name, kind)
    except BTFError as e:
        raise LoadError(f"kernel BTF ({VMLINUX_PATH}): {e}") from None
    return t.id if t is not None else None


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

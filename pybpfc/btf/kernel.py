"""Resolve an object's kernel externs against the running kernel (what libbpf does at load).

The ELF reader keeps externs symbolic (Relocation kinds "kfunc", "ksym", "ksym_addr",
"kconfig"); a loader calls these helpers before BPF_PROG_LOAD:

- `fill_kconfig(mapspec)`: the ".kconfig" map's initial bytes from /proc/config.gz (or
  /boot/config-<release>) and the kernel release (LINUX_KERNEL_VERSION & co.).
- `patch_externs(insns, prog)`: kfunc calls get the vmlinux BTF id of the function
  (src=BPF_PSEUDO_KFUNC_CALL), typed ksyms the BTF id of the VAR (src=BPF_PSEUDO_BTF_ID),
  typeless ksyms their /proc/kallsyms address. "kconfig" relocations are then ordinary
  "map_value" relocations into the ".kconfig" map.
"""
from __future__ import annotations

import gzip
import os
import re
import struct

from .. import uapi as U
from ..errors import LoadError
from . import vmlinux
from .btf import KIND_FUNC, KIND_VAR


def kfunc_id(name: str) -> int:
    """vmlinux BTF id of a kernel function; 0 if the kernel has none by that name."""
    t = vmlinux().find(name, KIND_FUNC)
    return t.id if t is not None else 0


def ksym_id(name: str) -> int:
    """vmlinux BTF id of a kernel variable (BTF describes per-CPU variables); 0 if absent."""
    t = vmlinux().find(name, KIND_VAR)
    return t.id if t is not None else 0


def kallsyms_addr(name: str, path: str = "/proc/kallsyms") -> int:
    """Address of a kernel symbol, 0 if absent or hidden (kptr_restrict, no CAP_SYSLOG)."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return int(parts[0], 16)
    except OSError:
        pass
    return 0


def kernel_config(text: str | None = None) -> dict:
    """{CONFIG_X: raw value string} of the running kernel (values as written: y, m, 250, "str")."""
    if text is None:
        text = ""
        try:
            with gzip.open("/proc/config.gz", "rt") as f:
                text = f.read()
        except OSError:
            try:
                with open(f"/boot/config-{os.uname().release}") as f:
                    text = f.read()
            except OSError:
                pass
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def kernel_version(release: str | None = None) -> int:
    """LINUX_KERNEL_VERSION as libbpf computes it: KERNEL_VERSION(a, b, min(c, 255))."""
    release = release or os.uname().release
    nums = [int(x) for x in re.findall(r"\d+", release)[:3]] + [0, 0, 0]
    return (nums[0] << 16) | (nums[1] << 8) | min(nums[2], 255)


def _kconfig_value(name: str, raw: str, size: int, lang):
    from ..lang.types import Str

    if isinstance(lang, type) and issubclass(lang, Str):
        if not (raw.startswith('"') and raw.endswith('"')):
            raise LoadError(f"map '.kconfig': {name}={raw} is not a string")
        return raw[1:-1].encode()
    if raw in ("y", "m", "n"):
        # bool externs take y -> 1; tristate-sized (enum) ones libbpf's y=1, m=2, n=0
        return {"y": 1, "m": 2, "n": 0}[raw]
    try:
        return int(raw, 0)
    except ValueError:
        raise LoadError(f"map '.kconfig': {name}={raw} is not a number") from None


def with_kconfig(mapspec):
    """The map spec a backend should create: for the ".kconfig" map a copy holding the running
    kernel's values (the userspace runtime shares the host's kernel, so both backends use it);
    any other map unchanged."""
    if not (mapspec.tags.get("kconfig") or mapspec.name == ".kconfig"):
        return mapspec
    import copy

    mapspec = copy.copy(mapspec)  # the spec stays reusable
    fill_kconfig(mapspec)
    return mapspec


def fill_kconfig(mapspec, config: dict | None = None, release: str | None = None) -> bytes:
    """Set and return the ".kconfig" map's data for the running (or given) kernel."""
    cfg = kernel_config() if config is None else config
    weak = set(filter(None, mapspec.tags.get("weak", "").split(",")))
    data = bytearray(mapspec.value_size)
    for name, (off, size, lang) in mapspec.variables.items():
        if name == "LINUX_KERNEL_VERSION":
            value = kernel_version(release)
        elif name == "LINUX_HAS_BPF_COOKIE" or name == "LINUX_HAS_SYSCALL_WRAPPER":
            value = 1  # every kernel this project supports has both
        elif name in cfg:
            value = _kconfig_value(name, cfg[name], size, lang)
        elif name in weak:
            value = 0
        elif not cfg:
            raise LoadError(f"map '.kconfig': {name}: the kernel config is not readable "
                            "(/proc/config.gz, /boot/config-<release>)")
        else:
            # as libbpf: a non-weak extern must be set (declare it __weak to default to 0)
            raise LoadError(f"map '.kconfig': {name} is not set in the kernel config")
        if isinstance(value, bytes):
            data[off: off + size] = value[:size].ljust(size, b"\0")
        else:
            data[off: off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    mapspec.data = bytes(data)
    return mapspec.data


def patch_externs(insns: bytearray, prog) -> bytearray:
    """Resolve "kfunc", "ksym" and "ksym_addr" relocations of `prog` in `insns` (in place)."""
    for r in prog.relocations:
        at = r.insn * 8
        weak = r.addend == 1
        if r.kind == "kfunc":
            tid = kfunc_id(r.target)
            if not tid and not weak:
                raise LoadError(f"prog '{prog.name}': kfunc '{r.target}' is not in this kernel's BTF")
            struct.pack_into("<i", insns, at + 4, tid)
        elif r.kind == "ksym":
            tid = ksym_id(r.target)
            if not tid and not weak:
                raise LoadError(f"prog '{prog.name}': kernel variable '{r.target}' is not in this "
                                "kernel's BTF (typed __ksym needs a per-CPU variable)")
            if tid:
                insns[at + 1] = (insns[at + 1] & 0x0F) | (U.BPF_PSEUDO_BTF_ID << 4)
            struct.pack_into("<i", insns, at + 4, tid)
            struct.pack_into("<i", insns, at + 12, 0)
        elif r.kind == "ksym_addr":
            addr = kallsyms_addr(r.target)
            if not addr and not weak:
                raise LoadError(f"prog '{prog.name}': kernel symbol '{r.target}' is not in "
                                "/proc/kallsyms (or its addresses are hidden)")
            struct.pack_into("<I", insns, at + 4, addr & 0xFFFFFFFF)
            struct.pack_into("<I", insns, at + 12, addr >> 32)
    return insns

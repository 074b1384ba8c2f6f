"""uprobes/uretprobes through the uprobe PMU: perf_event_open with the binary's path and the
file offset of the probed instruction, optionally only for one process.

Library names ("libc", "libssl.so.3") become real paths and symbols become file offsets
through pybpfc.elf.symbols.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

from ....errors import AttachError, Error, NotSupportedError
from .links import prog_subject
from .perf_event import PerfEventAttr, attach_perf_fd, perf_event_open, pmu_format_bit, pmu_type

PMU_DIR = "/sys/bus/event_source/devices/uprobe"


def unsupported_reason() -> Optional[str]:
    if pmu_type("uprobe") is None:
        return f"the kernel has no uprobe PMU ({PMU_DIR} missing)"
    if pmu_format_bit("uprobe", "retprobe") is None:
        return f"the uprobe PMU has no retprobe format ({PMU_DIR}/format/retprobe missing)"
    return None


def resolve(binary: str, symbol: Optional[str], offset: int) -> tuple[str, int]:
    """(absolute path, file offset) of binary:symbol+offset ("libc" -> the real library)."""
    from ....elf.symbols import resolve_uprobe

    return resolve_uprobe(binary, symbol, offset)


# -- attach ---------------------------------------------------------------------------------

def attach(prog, binary: str, symbol: Optional[str] = None, offset: int = 0, pid: int = -1,
           retprobe: bool = False, cookie: int = 0):
    kind = "uretprobe" if retprobe else "uprobe"
    subject = prog_subject(prog)
    why = unsupported_reason()
    if why:
        raise NotSupportedError(f"{subject}: {kind}: {why}")
    if not binary:
        raise AttachError(f"{subject}: {kind}: no binary given (section '{kind}/PATH:SYMBOL' "
                          "or attach_uprobe(binary, symbol))")
    target = f"{binary}:{symbol}" if symbol else f"{binary}:{offset:#x}"
    if symbol and offset:
        target += f"+{offset:#x}"
    try:
        path, file_off = resolve(binary, symbol, offset)
    except Error as e:
        raise AttachError(f"{subject}: {kind} {target}: {e}") from None
    config = (1 << pmu_format_bit("uprobe", "retprobe")) if retprobe else 0
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    attr = PerfEventAttr(type=pmu_type("uprobe"), config=config,
                         config1=ctypes.addressof(pbuf), config2=file_off)
    # Per-process probes watch every CPU; system-wide ones are opened once (cpu 0), like libbpf.
    pfd = perf_event_open(attr, pid=pid if pid >= 0 else -1, cpu=-1 if pid >= 0 else 0,
                          subject=f"{subject}: {kind} {target}" + (f" pid {pid}" if pid >= 0 else ""))
    return attach_perf_fd(prog, pfd, kind, target + (f" pid {pid}" if pid >= 0 else ""), cookie)

"""kprobes/kretprobes through the kprobe PMU (perf_event_open with kprobe_func + offset).

Kernels built without kprobes have no /sys/bus/event_source/devices/kprobe: that is probed
and reported as NotSupportedError, never guessed from the version.
"""
from __future__ import annotations

import ctypes
import os

from ....errors import AttachError, NotSupportedError
from .links import prog_subject
from .perf_event import PerfEventAttr, attach_perf_fd, perf_event_open, pmu_format_bit, pmu_type

PMU_DIR = "/sys/bus/event_source/devices/kprobe"


def unsupported_reason():
    """None when kprobes can be attached here, else why not."""
    if pmu_type("kprobe") is None:
        return f"the kernel has no kprobe PMU ({PMU_DIR} missing)"
    return None


def attach(prog, function: str, offset: int = 0, retprobe: bool = False, cookie: int = 0):
    kind = "kretprobe" if retprobe else "kprobe"
    subject = prog_subject(prog)
    why = unsupported_reason()
    if why:
        raise NotSupportedError(f"{subject}: {kind} {function}: {why}")
    if not function:
        raise AttachError(f"{subject}: {kind}: no kernel function given")
    if retprobe and offset:
        raise AttachError(f"{subject}: kretprobe {function}: an offset is only valid for kprobes")
    ptype = pmu_type("kprobe")
    config = 0
    if retprobe:
        bit = pmu_format_bit("kprobe", "retprobe")
        if bit is None:
            raise NotSupportedError(f"{subject}: kretprobe {function}: the kprobe PMU has no "
                                    f"retprobe format ({PMU_DIR}/format/retprobe missing)")
        config |= 1 << bit
    name = ctypes.create_string_buffer(function.encode())
    attr = PerfEventAttr(type=ptype, config=config, config1=ctypes.addressof(name), config2=offset)
    target = f"{function}+{offset}" if offset else function
    pfd = perf_event_open(attr, pid=-1, cpu=0, subject=f"{subject}: {kind} {target}")
    return attach_perf_fd(prog, pfd, kind, target, cookie)


def available() -> bool:
    return os.path.isdir(PMU_DIR)

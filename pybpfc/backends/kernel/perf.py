"""perf_event_open(2): struct perf_event_attr (linux/perf_event.h) and the syscall."""
from __future__ import annotations

import ctypes
import os
import platform
from ctypes import Structure, addressof, c_int, c_int32, c_long, c_uint16, c_uint32, c_uint64, c_void_p, sizeof

from ...errors import Error

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241}.get(platform.machine(), 298)
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = c_long
_syscall.argtypes = [c_long, c_void_p, c_int, c_int, c_int, c_long]

PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 0, 1, 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408
# struct perf_event_mmap_page offsets of data_head/data_tail/data_offset/data_size
MMAP_DATA_HEAD, MMAP_DATA_TAIL, MMAP_DATA_OFFSET, MMAP_DATA_SIZE = 1024, 1032, 1040, 1048


class PerfEventAttr(Structure):
    """struct perf_event_attr up to config3 (PERF_ATTR_SIZE_VER8, 136 bytes). The bitfield
    word is a plain u64 `flags` (bit 0 disabled, 14 watermark, ...)."""

    _fields_ = [("type", c_uint32), ("size", c_uint32), ("config", c_uint64),
                ("sample_period", c_uint64), ("sample_type", c_uint64), ("read_format", c_uint64),
                ("flags", c_uint64), ("wakeup_events", c_uint32), ("bp_type", c_uint32),
                ("config1", c_uint64), ("config2", c_uint64), ("branch_sample_type", c_uint64),
                ("sample_regs_user", c_uint64), ("sample_stack_user", c_uint32),
                ("clockid", c_int32), ("sample_regs_intr", c_uint64), ("aux_watermark", c_uint32),
                ("sample_max_stack", c_uint16), ("_reserved2", c_uint16),
                ("aux_sample_size", c_uint32), ("_reserved3", c_uint32), ("sig_data", c_uint64),
                ("config3", c_uint64)]


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = -1, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC, subject: str = "perf_event_open",
                    exc: type = Error) -> int:
    if not attr.size:
        attr.size = sizeof(attr)
    r = _syscall(_NR_PERF_EVENT_OPEN, addressof(attr), pid, cpu, group_fd, flags)
    if r < 0:
        err = ctypes.get_errno()
        e = exc(f"{subject}: perf_event_open failed: {os.strerror(err)}")
        e.errno = err
        raise e
    return r


def cpu_list(path: str) -> list[int]:
    """CPUs in a /sys/devices/system/cpu list file ("0-3,5")."""
    with open(path) as f:
        text = f.read().strip()
    out = []
    for part in filter(None, text.split(",")):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def possible_cpus() -> list[int]:
    return cpu_list("/sys/devices/system/cpu/possible")


def online_cpus() -> list[int]:
    return cpu_list("/sys/devices/system/cpu/online")

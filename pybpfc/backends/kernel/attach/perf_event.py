"""perf_event_open(2) and attaching BPF programs to perf events.

Tracepoints, uprobes and kprobes are perf events too: their modules open the event here and
hand the fd to attach_perf_fd(), which prefers a BPF link (BPF_LINK_CREATE, attach type
BPF_PERF_EVENT; pinnable, carries a cookie) and falls back to PERF_EVENT_IOC_SET_BPF.
Constants are from linux/perf_event.h (checked by tests/kernel/attach).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
from typing import Optional

from .... import uapi as U
from ....errors import AttachError, NotSupportedError
from .. import perf as _perf
from .. import syscall as S
from ..perf import (PERF_COUNT_SW_BPF_OUTPUT, PERF_COUNT_SW_CPU_CLOCK,  # noqa: F401 - re-exported
                    PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC,
                    PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT, PerfEventAttr,
                    online_cpus)
from .links import FdLink, MultiLink, PerfEventLink, prog_fd, prog_subject

PERF_TYPE_HW_CACHE = 3
PERF_TYPE_RAW = 4
PERF_TYPE_BREAKPOINT = 5
PERF_COUNT_HW_CPU_CYCLES = 0
PERF_COUNT_HW_INSTRUCTIONS = 1
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_COUNT_SW_PAGE_FAULTS = 2
PERF_COUNT_SW_CONTEXT_SWITCHES = 3
FLAG_FREQ = 1 << 10   # perf_event_attr.freq: sample_period holds a frequency


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC, subject: str = "perf event") -> int:
    """The event fd; AttachError, or NotSupportedError when the kernel lacks the event
    (ENOENT/EOPNOTSUPP/ENODEV)."""
    attr.size = ctypes.sizeof(attr)
    try:
        return _perf.perf_event_open(attr, pid, cpu, group_fd, flags, subject, AttachError)
    except AttachError as e:
        err = getattr(e, "errno", 0)
        exc = NotSupportedError if err in (_errno.ENOENT, _errno.EOPNOTSUPP, _errno.ENODEV) else AttachError
        new = exc(f"{subject}: perf_event_open failed: {S.errno_text(err)}")
        new.errno = err
        raise new from None


def pmu_type(pmu: str) -> Optional[int]:
    """The dynamic PMU type number (e.g. 'uprobe', 'kprobe'), None if the kernel lacks it."""
    try:
        with open(f"/sys/bus/event_source/devices/{pmu}/type") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def pmu_format_bit(pmu: str, name: str) -> Optional[int]:
    """The config bit a PMU format names ('config:0' -> 0), e.g. the uprobe retprobe bit."""
    try:
        with open(f"/sys/bus/event_source/devices/{pmu}/format/{name}") as f:
            spec = f.read().strip()
    except OSError:
        return None
    field, _, bits = spec.partition(":")
    if field != "config" or not bits.split("-")[0].isdigit():
        return None
    return int(bits.split("-")[0])


_perf_link_ok: Optional[bool] = None


def attach_perf_fd(prog, pfd: int, kind: str, target: str, cookie: int = 0):
    """Attach a loaded program to an opened perf event; the link owns `pfd`."""
    global _perf_link_ok
    fd = prog_fd(prog)
    if _perf_link_ok is not False:
        try:
            lfd = S.link_create(fd, pfd, U.BPF_PERF_EVENT, subject=prog_subject(prog),
                                perf_event=dict(bpf_cookie=cookie))
            _perf_link_ok = True
            return FdLink(lfd, kind, target, getattr(prog, "name", ""), extra_fds=(pfd,))
        except AttachError as e:
            # EINVAL/ENOTSUPP on kernels older than perf links (5.15); real errors otherwise.
            if _perf_link_ok or getattr(e, "errno", 0) not in (_errno.EINVAL, 524):
                S.close_fd(pfd)
                raise
            _perf_link_ok = False
    if cookie:
        S.close_fd(pfd)
        raise NotSupportedError(f"{prog_subject(prog)}: {kind} {target}: BPF cookies need perf "
                                "BPF links, which this kernel lacks")
    try:
        fcntl.ioctl(pfd, PERF_EVENT_IOC_SET_BPF, fd)
        fcntl.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as e:
        S.close_fd(pfd)
        raise AttachError(f"{prog_subject(prog)}: {kind} {target}: PERF_EVENT_IOC_SET_BPF failed: "
                          f"{S.errno_text(e.errno)}") from None
    return PerfEventLink(pfd, kind, target)


def attach_perf_event(prog, *, type: int, config: int, sample_period: int = 0,
                      sample_freq: int = 0, pid: int = -1, cpu: int = -1):
    """A perf_event program on a hardware/software event: one event per online CPU unless
    `cpu` or `pid` narrows it (the kernel refuses pid=-1 with cpu=-1)."""
    subject = prog_subject(prog)
    if sample_period and sample_freq:
        raise AttachError(f"{subject}: perf_event: give sample_period or sample_freq, not both")
    if not sample_period and not sample_freq:
        raise AttachError(f"{subject}: perf_event: needs sample_period or sample_freq "
                          "(the program runs once per sample)")
    target = f"type={type},config={config}"
    cpus = [cpu] if (cpu >= 0 or pid >= 0) else online_cpus()
    links = []
    try:
        for c in cpus:
            attr = PerfEventAttr(type=type, config=config,
                                 sample_period=sample_freq or sample_period,
                                 flags=FLAG_FREQ if sample_freq else 0)
            pfd = perf_event_open(attr, pid=pid, cpu=c,
                                  subject=f"{subject}: perf_event {target} cpu {c}")
            links.append(attach_perf_fd(prog, pfd, "perf_event", f"{target}/cpu{c}"))
    except BaseException:
        for link in links:
            link.close()
        raise
    return links[0] if len(links) == 1 else MultiLink(links, "perf_event", target)

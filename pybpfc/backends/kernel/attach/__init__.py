"""Kernel attach points. One module per kind; AttachMixin gives KernelBackend the attach_*
methods of pybpfc.backends.base.Backend by delegating to them.

Every call returns a pybpfc.backends.base.Link that detaches on close(). BPF links are used
wherever the kernel has them, so those links can be pinned under /sys/fs/bpf.
"""
from __future__ import annotations

from typing import Iterator, Optional

from . import (cgroup, kprobe, perf_event, raw_tracepoint, socket_filter, tc, tracepoint,
               tracing, uprobe, xdp)
from .links import CallbackLink, FdLink, MultiLink, PerfEventLink


class AttachMixin:
    """attach_* for the kernel backend; `prog` is a RawProgram with `.fd`, `.name`, `.spec`."""

    def attach_tracepoint(self, prog, category: str, name: str):
        return tracepoint.attach(prog, category, name)

    def attach_raw_tracepoint(self, prog, name: str):
        return raw_tracepoint.attach(prog, name)

    def attach_uprobe(self, prog, binary: str, symbol: Optional[str] = None, offset: int = 0,
                      pid: int = -1, retprobe: bool = False, cookie: int = 0):
        return uprobe.attach(prog, binary, symbol, offset, pid, retprobe, cookie)

    def attach_kprobe(self, prog, function: str, offset: int = 0, retprobe: bool = False,
                      cookie: int = 0):
        return kprobe.attach(prog, function, offset, retprobe, cookie)

    def attach_xdp(self, prog, ifname, flags=0):
        return xdp.attach(prog, ifname, flags)

    def attach_tc(self, prog, ifname, direction: str = "ingress", mode: str = "auto"):
        return tc.attach(prog, ifname, direction, mode)

    def attach_socket_filter(self, prog, sock):
        return socket_filter.attach(prog, sock)

    def attach_cgroup(self, prog, path: str, attach_type: Optional[int] = None):
        return cgroup.attach(prog, path, attach_type)

    def attach_perf_event(self, prog, *, type: int, config: int, sample_period: int = 0,
                          sample_freq: int = 0, pid: int = -1, cpu: int = -1):
        return perf_event.attach_perf_event(prog, type=type, config=config,
                                            sample_period=sample_period,
                                            sample_freq=sample_freq, pid=pid, cpu=cpu)

    def attach_fentry(self, prog):
        return tracing.attach(prog)

    def trace_pipe_lines(self, timeout: Optional[float] = None) -> Iterator[str]:
        from .. import tracefs

        return tracefs.trace_pipe_lines(timeout)


__all__ = ["AttachMixin", "FdLink", "PerfEventLink", "CallbackLink", "MultiLink"]

"""Link objects returned by the kernel attach calls. Each detaches on close()."""
from __future__ import annotations

import os
from typing import Callable, Optional

from ....errors import AttachError, NotSupportedError
from ...base import Link
from .. import syscall as S


def prog_subject(prog) -> str:
    return f"prog '{getattr(prog, 'name', '?')}'"


def prog_fd(prog) -> int:
    fd = getattr(prog, "fd", None)
    if not isinstance(fd, int) or fd < 0:
        raise AttachError(f"{prog_subject(prog)}: not loaded in the kernel (no program fd)")
    return fd


class FdLink(Link):
    """A BPF link (BPF_LINK_CREATE, BPF_RAW_TRACEPOINT_OPEN): closing the last fd detaches;
    pinning keeps it attached after this process exits."""

    def __init__(self, fd: int, kind: str, target: str, prog_name: str = "",
                 extra_fds: tuple = ()):
        self.fd, self.kind, self.target, self.prog_name = fd, kind, target, prog_name
        self._extra = list(extra_fds)   # e.g. the perf event fd a perf link refers to

    def pin(self, path: str) -> None:
        if self.fd < 0:
            raise AttachError(f"{self.kind} link {self.target}: already closed")
        S.obj_pin(self.fd, path, subject=f"{self.kind} link {self.target}")

    def update(self, prog) -> None:
        """Swap the attached program without a gap (BPF_LINK_UPDATE)."""
        S.link_update(self.fd, prog_fd(prog), subject=f"{self.kind} link {self.target}")

    @property
    def id(self) -> int:
        """The kernel's id of this link (bpftool link show)."""
        return S.obj_get_info_by_fd(self.fd, S.LinkInfo(), f"{self.kind} link {self.target}").id

    def detach(self) -> None:
        """Detach now even if the link is pinned or its fd is shared (BPF_LINK_DETACH: xdp,
        tcx, cgroup, netns links). Other link types (perf event, raw tracepoint, tracing)
        detach when their last reference, fd or pin, goes."""
        if self.fd >= 0:
            try:
                S.link_detach(self.fd, subject=f"{self.kind} link {self.target}")
            except AttachError:
                pass  # link types without detach support go away on close
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            S.close_fd(self.fd)
            self.fd = -1
        for fd in self._extra:
            S.close_fd(fd)
        self._extra = []

    @property
    def closed(self) -> bool:
        return self.fd < 0


class PerfEventLink(Link):
    """A program attached to a perf event fd with PERF_EVENT_IOC_SET_BPF (kernels without
    perf BPF links). Closing the perf event detaches; such links cannot be pinned."""

    def __init__(self, perf_fd: int, kind: str, target: str):
        self.fd, self.kind, self.target = perf_fd, kind, target

    def close(self) -> None:
        if self.fd >= 0:
            S.close_fd(self.fd)
            self.fd = -1

    @property
    def closed(self) -> bool:
        return self.fd < 0


class CallbackLink(Link):
    """Detached by calling a function (setsockopt SO_DETACH_BPF, BPF_PROG_DETACH ...)."""

    def __init__(self, kind: str, target: str, on_close: Callable[[], None],
                 pin_reason: Optional[str] = None):
        self.kind, self.target = kind, target
        self._on_close: Optional[Callable[[], None]] = on_close
        self._pin_reason = pin_reason

    def pin(self, path: str) -> None:
        raise NotSupportedError(f"{self.kind} link {self.target}: cannot be pinned"
                                + (f" ({self._pin_reason})" if self._pin_reason else ""))

    def close(self) -> None:
        f, self._on_close = self._on_close, None
        if f is not None:
            f()

    @property
    def closed(self) -> bool:
        return self._on_close is None


class MultiLink(Link):
    """Several attachments made by one call (one perf event per CPU)."""

    def __init__(self, links: list, kind: str, target: str):
        self.links, self.kind, self.target = list(links), kind, target

    def pin(self, path: str) -> None:
        if len(self.links) == 1:
            return self.links[0].pin(path)
        os.makedirs(path, exist_ok=True)
        for i, link in enumerate(self.links):
            link.pin(os.path.join(path, str(i)))

    def close(self) -> None:
        links, self.links = self.links, []
        for link in links:
            link.close()

    @property
    def closed(self) -> bool:
        return not self.links

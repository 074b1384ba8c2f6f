"""The Backend interface: what the kernel and the userspace runtime both implement.

Backends work in raw bytes. The generic layer in pybpfc.collection (Collection, Map, Program)
adds Python containers, key/value decoding and attach-by-section on top, so code written
against it runs unchanged on either backend.

An operation a backend cannot do raises NotSupportedError, unless the user chose
`unsupported="ignore"`, in which case attach calls return a NoopLink.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, Optional

from ..errors import NotSupportedError


class Link(ABC):
    """An attachment. Closing it detaches the program. Usable as a context manager."""

    kind: str = ""
    target: str = ""

    @abstractmethod
    def close(self) -> None: ...

    def detach(self) -> None:
        self.close()

    def pin(self, path: str) -> None:
        raise NotSupportedError(f"{self.kind} link: pinning is not supported")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.kind} {self.target}>"


class NoopLink(Link):
    """Returned instead of raising when the user asked for unsupported="ignore"."""

    def __init__(self, kind: str, target: str, reason: str):
        self.kind, self.target, self.reason = kind, target, reason

    def close(self) -> None:
        pass


@dataclass
class TestRunResult:
    retval: int
    data: bytes          # packet data after the run (data_out)
    ctx: bytes           # context after the run (ctx_out), b"" if none
    duration_ns: int     # average per run, as the backend measured it


class RawMap(ABC):
    """One map in a backend, keys and values as bytes (per-CPU values: all CPUs concatenated,
    each rounded up to 8 bytes, like the kernel's syscall interface)."""

    name: str
    spec: object  # MapSpec

    @abstractmethod
    def lookup(self, key: bytes, flags: int = 0) -> Optional[bytes]: ...

    @abstractmethod
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...

    @abstractmethod
    def delete(self, key: bytes) -> bool: ...

    @abstractmethod
    def next_key(self, key: Optional[bytes]) -> Optional[bytes]: ...

    def lookup_batch(self, batch_size: int = 256) -> Iterator[tuple[bytes, bytes]]:
        """All entries; backends override with a faster path where they have one."""
        k = self.next_key(None)
        while k is not None:
            v = self.lookup(k)
            nk = self.next_key(k)
            if v is not None:
                yield k, v
            k = nk

    def update_batch(self, items: list[tuple[bytes, bytes]], flags: int = 0) -> None:
        for k, v in items:
            self.update(k, v, flags)

    # Queue / stack / bloom filter (keyless maps).
    def push(self, value: bytes, flags: int = 0) -> None:
        raise NotSupportedError(f"map '{self.name}': push is not supported")

    def pop(self) -> Optional[bytes]:
        raise NotSupportedError(f"map '{self.name}': pop is not supported")

    def peek(self) -> Optional[bytes]:
        raise NotSupportedError(f"map '{self.name}': peek is not supported")

    def freeze(self) -> None:
        pass

    def pin(self, path: str) -> None:
        raise NotSupportedError(f"map '{self.name}': pinning is not supported")

    @abstractmethod
    def close(self) -> None: ...


class RawRingBuffer(ABC):
    """Reader of a ring buffer or perf event array map. Records are raw bytes."""

    @abstractmethod
    def poll(self, timeout: Optional[float] = None) -> list[bytes]:
        """Wait up to `timeout` seconds (None: forever, 0: don't wait) and return the records
        available, oldest first (possibly none)."""

    def fileno(self) -> int:
        raise NotSupportedError("this ring buffer has no file descriptor")

    @property
    def lost(self) -> int:
        """Records the producer dropped (perf buffers report this; ring buffers: 0)."""
        return 0

    @abstractmethod
    def close(self) -> None: ...


class RawProgram(ABC):
    name: str
    spec: object  # ProgramSpec

    @abstractmethod
    def test_run(self, data: bytes = b"", ctx: Optional[bytes] = None, repeat: int = 1,
                 data_size_out: Optional[int] = None) -> TestRunResult: ...

    def pin(self, path: str) -> None:
        raise NotSupportedError(f"prog '{self.name}': pinning is not supported")

    @abstractmethod
    def close(self) -> None: ...


class Backend(ABC):
    """Loads specs and attaches programs. One instance may hold many collections."""

    name = "?"

    @abstractmethod
    def create_map(self, spec) -> RawMap:
        """Create a map from a MapSpec (global data sections included, with their `data`)."""

    @abstractmethod
    def load_program(self, spec, maps: dict, btf=None) -> RawProgram:
        """Load a ProgramSpec; `maps` maps every map name the relocations use to its RawMap."""

    @abstractmethod
    def num_possible_cpus(self) -> int: ...

    def open_ringbuf(self, m: RawMap) -> RawRingBuffer:
        raise NotSupportedError(f"map '{m.name}': {self.name} backend has no ring buffers")

    def open_perfbuf(self, m: RawMap, page_count: int = 64) -> RawRingBuffer:
        raise NotSupportedError(f"map '{m.name}': {self.name} backend has no perf buffers")

    # -- attach points: one method per kind; `opts` are the keyword options of that kind.
    def attach_tracepoint(self, prog: RawProgram, category: str, name: str) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': tracepoints are not supported by the {self.name} backend")

    def attach_raw_tracepoint(self, prog: RawProgram, name: str) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': raw tracepoints are not supported by the {self.name} backend")

    def attach_uprobe(self, prog: RawProgram, binary: str, symbol: Optional[str] = None,
                      offset: int = 0, pid: int = -1, retprobe: bool = False, cookie: int = 0) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': uprobes are not supported by the {self.name} backend")

    def attach_kprobe(self, prog: RawProgram, function: str, offset: int = 0,
                      retprobe: bool = False, cookie: int = 0) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': kprobes are not supported by the {self.name} backend")

    def attach_xdp(self, prog: RawProgram, ifname: str, flags: int = 0) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': XDP is not supported by the {self.name} backend")

    def attach_tc(self, prog: RawProgram, ifname: str, direction: str = "ingress") -> Link:
        raise NotSupportedError(f"prog '{prog.name}': tc is not supported by the {self.name} backend")

    def attach_socket_filter(self, prog: RawProgram, sock) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': socket filters are not supported by the {self.name} backend")

    def attach_cgroup(self, prog: RawProgram, path: str, attach_type: Optional[int] = None) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': cgroup programs are not supported by the {self.name} backend")

    def attach_perf_event(self, prog: RawProgram, *, type: int, config: int,
                          sample_period: int = 0, sample_freq: int = 0,
                          pid: int = -1, cpu: int = -1) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': perf events are not supported by the {self.name} backend")

    def attach_fentry(self, prog: RawProgram) -> Link:
        raise NotSupportedError(f"prog '{prog.name}': fentry/fexit is not supported by the {self.name} backend")

    def trace_pipe_lines(self) -> Iterator[str]:
        """bpf_trace_printk output, line by line."""
        raise NotSupportedError(f"{self.name} backend has no trace pipe")

    def close(self) -> None:
        pass

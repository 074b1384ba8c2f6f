"""tracefs: where it is (mounting it when nothing is), tracepoint event ids, trace_pipe.

Tracepoint attach needs the numeric id the kernel gives each event (events/CAT/NAME/id);
bpf_trace_printk output appears in trace_pipe.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
from typing import Iterator, Optional

from ...errors import AttachError, Error, NotSupportedError

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_root: Optional[str] = None


def _mount_tracefs(path: str) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    return libc.mount(b"nodev", path.encode(), b"tracefs", 0, None) == 0


def root(mount: bool = True) -> str:
    """The tracefs directory (it has an `events` subdirectory). Mounts tracefs at
    /sys/kernel/tracing when no candidate has it and `mount` is true (needs root)."""
    global _root
    if _root is not None and os.path.isdir(os.path.join(_root, "events")):
        return _root
    for c in CANDIDATES:
        if os.path.isdir(os.path.join(c, "events")):
            _root = c
            return c
    if mount and os.path.isdir(CANDIDATES[0]) and _mount_tracefs(CANDIDATES[0]):
        if os.path.isdir(os.path.join(CANDIDATES[0], "events")):
            _root = CANDIDATES[0]
            return _root
    raise NotSupportedError("tracefs is not mounted (looked in " + ", ".join(CANDIDATES) +
                            ") and could not be mounted: tracepoints need it")


def _check_part(what: str, s: str) -> None:
    if not s or "/" in s or s in (".", ".."):
        raise AttachError(f"tracepoint {what} {s!r} is not a valid name")


def event_id(category: str, name: str) -> int:
    """The id of tracepoint CATEGORY/NAME (for perf_event_open PERF_TYPE_TRACEPOINT)."""
    _check_part("category", category)
    _check_part("name", name)
    base = root()
    path = os.path.join(base, "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        if not os.path.isdir(os.path.join(base, "events", category)):
            raise AttachError(f"tracepoint {category}/{name}: no tracepoint category '{category}' "
                              f"({os.path.join(base, 'events')})") from None
        raise AttachError(f"tracepoint {category}/{name}: no such tracepoint "
                          f"(see {os.path.join(base, 'events', category)})") from None
    except (OSError, ValueError) as e:
        raise AttachError(f"tracepoint {category}/{name}: cannot read {path}: {e}") from None


def exists(category: str, name: str) -> bool:
    try:
        return os.path.exists(os.path.join(root(), "events", category, name, "id"))
    except NotSupportedError:
        return False


def categories() -> list[str]:
    return sorted(os.listdir(os.path.join(root(), "events")))


def events(category: str) -> list[str]:
    d = os.path.join(root(), "events", category)
    return sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e)))


def event_format(category: str, name: str) -> str:
    """The `format` file of a tracepoint: field offsets of its context."""
    with open(os.path.join(root(), "events", category, name, "format")) as f:
        return f.read()


def trace_pipe_lines(timeout: Optional[float] = None) -> Iterator[str]:
    """Lines of bpf_trace_printk output, as they come, from a tracefs instance of this process
    (so other readers of the global trace_pipe neither block nor steal them; see
    InstanceTracePipe). Only lines printed after this call are seen. With `timeout`, stops after
    that many seconds without a new line."""
    pipe, _ = private_trace_pipe()  # now, not at the first next(): lines printed meanwhile count

    def lines():
        try:
            while True:
                r, _, _ = select.select([pipe.fd], [], [], timeout)
                if not r:
                    return
                yield from pipe.read_lines()
        finally:
            pipe.close()

    return lines()


def open_trace_pipe() -> int:
    """A non-blocking fd of trace_pipe. The kernel lets one reader at a time open it."""
    path = os.path.join(root(), "trace_pipe")
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise Error(f"{path}: another reader has it open (EBUSY); the kernel allows one") from None
        raise Error(f"{path}: cannot open: {e.strerror}") from None


def parse_trace_line(line: str) -> tuple[str, str]:
    """Split a trace_pipe line into (task-pid header, message) for bpf_trace_printk lines:
    '  python3-1234  [001] d..31  56.78: bpf_trace_printk: hello' -> ('python3-1234', 'hello')."""
    head, sep, msg = line.partition(": bpf_trace_printk: ")
    if not sep:
        head, _, msg = line.rpartition(": ")
    task = head.strip().split(" ", 1)[0] if head.strip() else ""
    return task, msg


class TracePipe:
    """Non-blocking reader of the global trace_pipe with a file descriptor for select/epoll
    loops. Prefer private_trace_pipe()."""

    dir = ""

    def __init__(self):
        self.fd = open_trace_pipe()
        self._buf = b""

    def fileno(self) -> int:
        return self.fd

    def read_lines(self) -> list[str]:
        """Every complete line available now (never blocks)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [x.decode(errors="replace") for x in lines]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.dir:
            try:
                os.rmdir(self.dir)
            except OSError:
                pass
            self.dir = ""


INSTANCE_PREFIX = "pybpfc-"


class InstanceTracePipe(TracePipe):
    """bpf_trace_printk lines from a tracefs instance of this reader.

    The global trace_pipe takes one reader at a time (a second open gets EBUSY) and reading
    consumes lines for everyone, so any other tracer on the machine (`cat trace_pipe`, another
    `pybpfc run`, a test) would hide our lines. bpf_trace_printk also fires the
    bpf_trace/bpf_trace_printk event, which an instance records into its own buffer once the
    event is enabled there: the instance's trace_pipe is ours alone. Removed on close;
    instances left by killed processes (their pid is gone) are removed on the next start."""

    _seq = 0

    def __init__(self):
        base = os.path.join(root(), "instances")
        _remove_stale_instances(base)
        InstanceTracePipe._seq += 1  # one process may hold several readers
        self.dir = os.path.join(base, f"{INSTANCE_PREFIX}{os.getpid()}-{InstanceTracePipe._seq}")
        self.fd = -1
        self._buf = b""
        try:
            os.mkdir(self.dir)
        except FileExistsError:
            # left by an earlier process that had our pid and was killed: ours to replace
            os.rmdir(self.dir)
            os.mkdir(self.dir)
        try:
            with open(os.path.join(self.dir, "events", "bpf_trace", "bpf_trace_printk", "enable"), "w") as f:
                f.write("1")
            self.fd = os.open(os.path.join(self.dir, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.close()
            raise


def _remove_stale_instances(base: str) -> None:
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid = name[len(INSTANCE_PREFIX):].split("-", 1)[0]
        if name.startswith(INSTANCE_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass


def private_trace_pipe() -> tuple[TracePipe, Optional[str]]:
    """An InstanceTracePipe, or — where tracefs instances are unavailable — the global pipe
    and the reason."""
    try:
        return InstanceTracePipe(), None
    except (OSError, Error) as e:
        return TracePipe(), f"no tracefs instance of our own ({e}); reading the global trace_pipe"

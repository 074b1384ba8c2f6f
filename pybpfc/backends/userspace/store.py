"""A shared-memory object store (runtime/store.c) seen from Python.

    st = Store.create()                 # memfd; Store.create("/dev/shm/x") for a named file
    other = Store.open(st.path)         # another process (or this one) maps the same store
"""
from __future__ import annotations

import errno as _errno
import os
import threading
import weakref
from typing import Optional

from ...errors import Error, LoadError
from .runtime import ffi, lib


def _err(subject: str, what: str, r: int, exc=LoadError) -> Error:
    e = exc(f"{subject}: {what} failed: {os.strerror(-r)} ({_errno.errorcode.get(-r, -r)})")
    e.errno = -r
    return e


class Store:
    """Process-local handle of a store. `path` opens it from any process of the same user:
    the /dev/shm file, or /proc/<pid>/fd/<n> for a memfd."""

    def __init__(self, handle, path: str):
        self._h = handle
        self._path = path
        self.ncpus = lib().pbs_store_ncpus(handle)
        # Maps, programs and ring buffers of this handle: they hold raw pointers into the
        # mapping (C fast paths, reader threads, JIT code), so close() closes them first and
        # their later use raises "closed" instead of touching unmapped memory.
        self._users: "weakref.WeakSet" = weakref.WeakSet()
        self._users_lock = threading.Lock()

    def adopt(self, user) -> None:
        """Registers an object with a `close()` (and a `_close_rank`: lower closes first)
        that must be closed before the store is unmapped."""
        if self._h is None:
            raise Error("store is closed")
        with self._users_lock:
            self._users.add(user)

    @classmethod
    def create(cls, path: Optional[str] = None, size: int = 0) -> "Store":
        F, L = ffi(), lib()
        if size < 0:
            raise LoadError(f"store {path or '(memfd)'}: size {size} is negative")
        h = L.pbs_create(path.encode() if path else F.NULL, size)
        if h == F.NULL:
            err = F.errno
            what = os.strerror(err)
            if err == _errno.EINVAL and size:
                what = f"size {size} is below the minimum of {L.pbs_min_size()} bytes (0: the default)"
            raise LoadError(f"store {path or '(memfd)'}: cannot create: {what}")
        if path:
            p = path
        else:
            p = f"/proc/{os.getpid()}/fd/{L.pbs_store_fd(h)}"
        return cls(h, p)

    @classmethod
    def open(cls, path: str) -> "Store":
        F, L = ffi(), lib()
        h = L.pbs_open(path.encode(), -1)
        if h == F.NULL:
            err = F.errno
            what = "not a pybpfc store (or another layout version)" if err == _errno.EPROTO else os.strerror(err)
            raise LoadError(f"store {path}: cannot open: {what}")
        return cls(h, path)

    @property
    def handle(self):
        if self._h is None:
            raise Error("store is closed")
        return self._h

    @property
    def path(self) -> str:
        return self._path

    @property
    def fd(self) -> int:
        return lib().pbs_store_fd(self.handle)

    @property
    def generation(self) -> int:
        return lib().pbs_store_generation(self.handle)

    def set_budget(self, insns: int) -> None:
        lib().pbs_store_set_budget(self.handle, insns)

    def map_id(self, name: str) -> Optional[int]:
        """Id of a live map by name (maps other loaders created), or None."""
        F, L = ffi(), lib()
        m = L.pbs_map_by_name(self.handle, name.encode())
        if m == F.NULL:
            return None
        for i in range(1, 257):
            if L.pbs_map(self.handle, i) == m:
                return i
        return None

    def trace_read(self, size: int = 1 << 16) -> bytes:
        """Consumes trace_printk output: the text of every complete line."""
        F, L = ffi(), lib()
        buf = F.new("char[]", size)
        n = L.pbs_trace_read(self.handle, buf, size)
        if n <= 0:
            return b""
        raw, out, i = F.buffer(buf, n)[:], [], 0
        while i + 8 <= n:
            ln = int.from_bytes(raw[i:i + 4], "little")
            out.append(raw[i + 8:i + 8 + ln])
            i += 8 + (ln + 7) // 8 * 8
        return b"".join(out)

    def close(self) -> None:
        if self._h is None:
            return
        with self._users_lock:
            users = sorted(self._users, key=lambda u: getattr(u, "_close_rank", 9))
            self._users = weakref.WeakSet()
        for u in users:  # while the mapping is still there: they may drop references in it
            try:
                u.close()
            except Exception:  # noqa: BLE001 - closing the store must not stop half way
                pass
        h, self._h = self._h, None
        lib().pbs_close(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Userspace maps (RawMap over the store's C map API) and ring/perf buffer readers.

Each element operation is one cffi call into the store with reused buffers: keys and values
pass as bytes without copies, results come back through one preallocated buffer."""
from __future__ import annotations

import errno as _errno
import os
import weakref
from typing import Iterator, Optional

from ... import uapi as U
from ...errors import Error, LoadError, NotSupportedError
from ..base import RawMap, RawRingBuffer
from .runtime import ffi, lib
from .store import _err

PERCPU_TYPES = {U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_LRU_PERCPU_HASH}
KEYLESS_TYPES = {U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK, U.BPF_MAP_TYPE_BLOOM_FILTER}
SUPPORTED_TYPES = {
    U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_LRU_HASH,
    U.BPF_MAP_TYPE_LRU_PERCPU_HASH, U.BPF_MAP_TYPE_LPM_TRIE, U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK,
    U.BPF_MAP_TYPE_RINGBUF, U.BPF_MAP_TYPE_BLOOM_FILTER, U.BPF_MAP_TYPE_ARRAY_OF_MAPS,
    U.BPF_MAP_TYPE_HASH_OF_MAPS,
}
MAP_TYPE_NAMES = {v: k[len("BPF_MAP_TYPE_"):].lower() for k, v in vars(U).items()
                  if k.startswith("BPF_MAP_TYPE_") and isinstance(v, int)}
PAGE = 4096
# types whose entries the store's batch lookup walks
BATCH_TYPES = {U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_LRU_HASH,
               U.BPF_MAP_TYPE_LRU_PERCPU_HASH, U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY,
               U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_LPM_TRIE,
               U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS}


def normalize(spec, ncpus: int):
    """(type, key_size, value_size, max_entries, flags) the store creates for a MapSpec,
    filling in what libbpf fills in (as the kernel backend does)."""
    t, ks, vs, n, fl = spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags
    if spec.data is not None:  # global data section: one-entry array holding the whole section
        t, ks, vs, n = U.BPF_MAP_TYPE_ARRAY, 4, max(len(spec.data), spec.value_size, 1), 1
        if spec.readonly:
            fl |= U.BPF_F_RDONLY_PROG
    elif t == U.BPF_MAP_TYPE_RINGBUF:
        ks, vs, n = 0, 0, max(n, PAGE)
        if n & (n - 1) or n % PAGE:
            raise LoadError(f"map '{spec.name}': ring buffer size {spec.max_entries} must be a "
                            f"power of two and a multiple of the page size ({PAGE})")
    elif t == U.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
        ks, vs = 4, 4
        if n == 0:
            n = ncpus
    elif t in (U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_ARRAY_OF_MAPS):
        ks, vs = 4, 4
    elif t == U.BPF_MAP_TYPE_HASH_OF_MAPS:
        vs = 4
    elif t in KEYLESS_TYPES:
        ks = 0
    if t not in SUPPORTED_TYPES:
        raise NotSupportedError(f"map '{spec.name}': type {MAP_TYPE_NAMES.get(t, t)} is not supported "
                                f"by the userspace runtime")
    return t, ks, vs, n, fl


class UserspaceMap(RawMap):
    _close_rank = 2  # Store.close(): after the programs and readers using the map

    def __init__(self, store, map_id: int, spec, *, owner: bool = True):
        F, L = ffi(), lib()
        self.store, self.id, self.spec, self.name = store, map_id, spec, spec.name
        self._mp = L.pbs_map(store.handle, map_id)
        t, ks, vs, n, _ = normalize(spec, store.ncpus)
        # the C side copies the stored map's sizes in and out of buffers sized from `spec`
        if self._mp == F.NULL:
            raise LoadError(f"map '{spec.name}': no map with id {map_id} in the store")
        have = F.new("uint32_t[5]")
        L.pbs_map_attrs(self._mp, have)
        if (have[0], have[1], have[2]) != (t, ks, vs):
            raise LoadError(f"map '{spec.name}': map {map_id} in the store has type {have[0]}, key size "
                            f"{have[1]}, value size {have[2]}; the definition has {t}, {ks}, {vs}")
        self.type, self.key_size, self.max_entries = t, ks, n
        self.elem_size = vs
        self.value_size = (vs + 7) // 8 * 8 * store.ncpus if t in PERCPU_TYPES else vs
        self._subject = f"map '{self.name}'"
        self._vbuf = F.new("char[]", max(self.value_size, 1))
        self._kbuf = F.new("char[]", max(self.key_size, 1))
        self._owner = owner
        self._closed = False
        self._ops: list = []  # container_ops objects, invalidated by close()
        from . import fast

        self._fast = fast.mod
        self._addr = int(F.cast("uintptr_t", self._mp))
        self._fm = None
        if self._fast is not None:
            self._bind_fast()
        store.adopt(self)

    def _bind_fast(self):
        """The hot element operations as C methods of a per-map fast object: one C call each,
        no Python frame. Anything unusual (other types or sizes) goes to the methods below,
        which raise the proper errors; instance attributes shadow them until close()."""
        fm = self._fast.Map(self._addr, self.key_size, self.value_size, self, self._fail)
        self.lookup, self.update, self.delete = fm.lookup, fm.update, fm.delete
        self._fm = fm

    def container_ops(self, kint, ksigned, vint, vsigned, kenc, venc, vdec, slow):
        """The C container operations of pybpfc.collection.Map (see _usfast.c Ops), or None
        without the fast path. Invalidated by close(): later calls take `slow`."""
        if self._fast is None or self._closed or not hasattr(self._fast, "Ops"):
            return None
        # an integer side whose declared width is not the map's (e.g. a data section) goes
        # through the codec callables
        kint = kint if kint == self.key_size else 0
        vint = vint if vint == self.value_size else 0
        me, subject = weakref.ref(self), self._subject

        def fail(r, what):
            m = me()
            return m._fail(r, what) if m is not None else Error(f"{subject}: {what} failed ({r})")

        ops = self._fast.Ops(self._addr, self.key_size, self.value_size, kint, ksigned, vint, vsigned,
                             kenc, venc, vdec, fail, slow)
        self._ops.append(ops)
        return ops

    @property
    def _m(self):
        if self._closed:
            raise Error(f"{self._subject}: map is closed")
        return self._mp

    # -- helpers
    def _check(self, b: bytes, size: int, what: str):
        if len(b) != size:
            raise LoadError(f"{self._subject}: {what} is {len(b)} bytes, the map's {what} size is {size}")

    def _fail(self, r: int, what: str):
        if r == -_errno.ENOTSUP or r == -_errno.EOPNOTSUPP:
            return NotSupportedError(f"{self._subject}: {what} is not supported for "
                                     f"{MAP_TYPE_NAMES.get(self.type, self.type)} maps")
        return _err(self._subject, what, r)

    # -- RawMap
    def lookup(self, key: bytes, flags: int = 0) -> Optional[bytes]:
        if len(key) != self.key_size:
            self._check(key, self.key_size, "key")
        if self._fast is not None and type(key) is bytes:
            r = self._fast.lookup(self._addr, key, self.value_size)
            if type(r) is int:
                raise self._fail(r, "lookup")
            return r
        r = lib().pbs_map_lookup_copy(self._m, key, self._vbuf)
        if r < 0:
            if r == -_errno.ENOENT:
                return None
            raise self._fail(r, "lookup")
        return ffi().buffer(self._vbuf, self.value_size)[:]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if len(key) != self.key_size:
            self._check(key, self.key_size, "key")
        if len(value) != self.value_size:
            self._check(value, self.value_size, "value")
        if self._fast is not None and type(key) is bytes and type(value) is bytes:
            r = self._fast.update(self._addr, key, value, flags)
        else:
            r = lib().pbs_map_update_user(self._m, bytes(key), bytes(value), flags)
        if r < 0:
            raise self._fail(r, "update")

    def delete(self, key: bytes) -> bool:
        if len(key) != self.key_size:
            self._check(key, self.key_size, "key")
        if self._fast is not None and type(key) is bytes:
            r = self._fast.delete(self._addr, key)
        else:
            r = lib().pbs_map_delete(self._m, bytes(key))
        if r < 0:
            if r == -_errno.ENOENT:
                return False
            raise self._fail(r, "delete")
        return True

    def next_key(self, key: Optional[bytes]) -> Optional[bytes]:
        F = ffi()
        if key is not None and len(key) != self.key_size:
            self._check(key, self.key_size, "key")
        if self._fast is not None and (key is None or type(key) is bytes) and self._m:
            r = self._fast.next_key(self._addr, key, self.key_size)
            if type(r) is int:
                raise self._fail(r, "next key")
            return r
        r = lib().pbs_map_next_key(self._m, F.NULL if key is None else key, self._kbuf)
        if r < 0:
            if r == -_errno.ENOENT:
                return None
            raise self._fail(r, "next key")
        return F.buffer(self._kbuf, self.key_size)[:]

    def items_decoded(self, kint, ksigned, vint, vsigned, kdec, vdec, values_only=False) -> Optional[list]:
        """Every entry decoded in C (ints there, other kinds by kdec/vdec): (keys, values) as
        two lists, or the values list; None when this map type or a missing fast path leaves
        it to lookup_batch()."""
        if self._fast is None or self.type not in BATCH_TYPES or not hasattr(self._fast, "items_decoded") or not self._m:
            return None
        kint = kint if kint == self.key_size else 0
        vint = vint if vint == self.value_size else 0
        r = self._fast.items_decoded(self._addr, self.key_size, self.value_size, kint, ksigned, vint, vsigned,
                                     kdec, vdec, values_only)
        if type(r) is int:
            raise self._fail(r, "lookup batch")
        return r

    def lookup_batch(self, batch_size: int = 1024) -> Iterator[tuple[bytes, bytes]]:
        if self.type not in BATCH_TYPES:
            yield from super().lookup_batch(batch_size)
            return
        if self._fast is not None and self._m:
            r = self._fast.items(self._addr, self.key_size, self.value_size)
            if type(r) is int:
                raise self._fail(r, "lookup batch")
            yield from r
            return
        F, L = ffi(), lib()
        ks, vs = self.key_size, self.value_size
        keys, vals = F.new("char[]", ks * batch_size), F.new("char[]", vs * batch_size)
        cursor = F.new("uint64_t *", 0)
        while True:
            n = L.pbs_map_lookup_batch(self._m, cursor, keys, vals, batch_size)
            if n < 0:
                raise self._fail(n, "lookup batch")
            if n == 0:
                return
            kb, vb = F.buffer(keys, ks * n)[:], F.buffer(vals, vs * n)[:]
            yield from zip([kb[i:i + ks] for i in range(0, ks * n, ks)],
                           [vb[i:i + vs] for i in range(0, vs * n, vs)])

    def update_batch(self, items: list[tuple[bytes, bytes]], flags: int = 0) -> None:
        if not items:
            return
        fast = getattr(self._fast, "update_batch", None)
        if fast is not None and type(items) is list and not self._closed:
            # checks every pair, then writes them all in C; None: not all pairs of bytes of
            # the right sizes, the code below says which one
            r = fast(self._addr, items, self.key_size, self.value_size, flags)
            if r is not None:
                if r < 0:
                    raise self._fail(r, "update batch")
                return
        ks, vs = zip(*items)
        for what, parts, size in (("key", ks, self.key_size), ("value", vs, self.value_size)):
            if set(map(len, parts)) != {size}:
                bad = next(p for p in parts if len(p) != size)
                self._check(bad, size, what)
        r = lib().pbs_map_update_batch(self._m, b"".join(ks), b"".join(vs), len(items), flags)
        if r < 0:
            raise self._fail(r, "update batch")

    def push(self, value: bytes, flags: int = 0) -> None:
        if self.type not in KEYLESS_TYPES:
            return super().push(value, flags)
        self._check(value, self.value_size, "value")
        r = lib().pbs_map_push(self._m, value, flags)
        if r < 0:
            raise self._fail(r, "push")

    def _take(self, pop: bool) -> Optional[bytes]:
        if self.type not in (U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK):
            return super().pop() if pop else super().peek()
        L = lib()
        r = (L.pbs_map_pop if pop else L.pbs_map_peek)(self._m, self._vbuf)
        if r == -_errno.ENOENT:
            return None
        if r < 0:
            raise self._fail(r, "pop" if pop else "peek")
        return ffi().buffer(self._vbuf, self.value_size)[:]

    def pop(self) -> Optional[bytes]:
        return self._take(True)

    def peek(self) -> Optional[bytes]:
        return self._take(False)

    def contains_bloom(self, value: bytes) -> bool:
        """Bloom filters: False if `value` was certainly never pushed."""
        if self.type != U.BPF_MAP_TYPE_BLOOM_FILTER:
            raise LoadError(f"{self._subject}: not a bloom filter")
        self._check(value, self.value_size, "value")
        return lib().pbs_map_peek(self._m, ffi().from_buffer("char[]", bytearray(value))) == 0

    def freeze(self) -> None:
        """Like BPF_MAP_FREEZE: later user-space updates fail (EPERM)."""
        lib().pbs_map_freeze(self._m)

    def fd_bytes(self) -> bytes:
        return self.id.to_bytes(4, "little")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fast = None
        for ops in self._ops:
            ops.invalidate()
        self._ops = []
        if "lookup" in self.__dict__:  # the fast closures: back to the checked methods
            del self.lookup, self.update, self.delete
        if self._fm is not None:
            # callers may still hold fm.lookup & co: no map address and sizes no key or value
            # has, so every call takes the checked methods ("map is closed"), never the store
            self._fm.__init__(0, -1, -1, self, self._fail)
            self._fm = None
        if self._owner and self.store._h is not None:
            lib().pbs_map_put(self.store.handle, self.id)

    def __repr__(self):
        return f"<UserspaceMap {self.name!r} id={self.id} type={MAP_TYPE_NAMES.get(self.type, self.type)}>"


def _records(raw: bytes) -> list[bytes]:
    out, i, n = [], 0, len(raw)
    while i + 8 <= n:
        ln = int.from_bytes(raw[i:i + 4], "little")
        out.append(raw[i + 8:i + 8 + ln])
        i += 8 + (ln + 7) // 8 * 8
    return out


class UserspaceRingBuffer(RawRingBuffer):
    """Reader of a ring buffer (cpu -1) or of all CPUs of a perf event array (cpu -2). poll()
    sleeps on a futex in the store, so producers in any process wake it. fileno() gives an
    eventfd for select/epoll: a helper thread waits on the futex and signals the eventfd
    whenever records were committed; poll() clears it."""

    _close_rank = 0  # Store.close(): the reader thread stops before anything is unmapped

    def __init__(self, m: UserspaceMap, perf: bool):
        self.map, self._cpu = m, (-2 if perf else -1)
        self._size = 1 << 20
        self._buf = ffi().new("char[]", self._size)
        self._efd = None
        self._thread = None
        self._closed = False
        m._m  # a closed map raises here
        m.store.adopt(self)

    def fileno(self) -> int:
        if self._efd is None:
            import threading

            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._thread = threading.Thread(target=self._notify, name=f"pybpfc-rb-{self.map.name}", daemon=True)
            self._thread.start()
        return self._efd

    def _notify(self):
        L, m = lib(), self.map._m
        seq = L.pbs_ringbuf_seq(m)
        if L.pbs_ringbuf_wait(m, 0) > 0:  # records already waiting
            os.eventfd_write(self._efd, 1)
        while not self._closed:
            if L.pbs_ringbuf_wait_seq(m, seq, 100) > 0 and not self._closed:
                seq = L.pbs_ringbuf_seq(m)
                os.eventfd_write(self._efd, 1)

    def _drain_efd(self):
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass

    def poll(self, timeout: Optional[float] = None) -> list[bytes]:
        F, L = ffi(), lib()
        m = self.map._m
        out = self._read()
        if out or timeout == 0:
            return out
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        if L.pbs_ringbuf_wait(m, ms) > 0:
            out = self._read()
        return out

    def _read(self) -> list[bytes]:
        F, L = ffi(), lib()
        if self._efd is not None:
            self._drain_efd()
        out = []
        while True:
            n = L.pbs_ringbuf_read(self.map._m, self._cpu, self._buf, self._size)
            if n <= 0:
                return out
            out.extend(_records(F.buffer(self._buf, n)[:]))
            if n < self._size // 2:
                return out

    @property
    def lost(self) -> int:
        return lib().pbs_ringbuf_lost(self.map._m) if self._cpu == -2 else 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._thread.join()  # wakes within its 100 ms futex timeout
        if self._efd is not None:
            os.close(self._efd)
            self._efd = None

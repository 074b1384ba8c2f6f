"""Kernel maps: creation from a MapSpec (every type pybpfc's language offers), pinning, and
RawMap over bpf(2) with reusable buffers so each element operation is one syscall."""
from __future__ import annotations

import ctypes
import errno as _errno
import mmap
import os
import threading
import weakref
from ctypes import addressof
from typing import Iterator, Optional

from ... import uapi as U
from ...errors import LoadError, NotSupportedError
from ..base import RawMap
from . import syscall as sc
from .fast import mod as _fast

LIBBPF_PIN_BY_NAME = 1
DEFAULT_PIN_ROOT = "/sys/fs/bpf"
ENOTSUPP = 524  # kernel-internal "operation not supported", seen by user space as-is

PERCPU_TYPES = {U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY,
                U.BPF_MAP_TYPE_LRU_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE}
KEYLESS_TYPES = {U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK, U.BPF_MAP_TYPE_BLOOM_FILTER}
FD_VALUE_TYPES = {U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_PERF_EVENT_ARRAY,
                  U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS,
                  U.BPF_MAP_TYPE_CGROUP_ARRAY}
MAP_IN_MAP_TYPES = {U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS}

MAP_TYPE_NAMES = {v: k[len("BPF_MAP_TYPE_"):].lower() for k, v in vars(U).items()
                  if k.startswith("BPF_MAP_TYPE_") and isinstance(v, int)}


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def normalize(spec, ncpu: int):
    """(type, key_size, value_size, max_entries, flags, map_extra) as the kernel wants them,
    filling in what libbpf fills in."""
    t, ks, vs, n, fl = spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags
    if spec.data is not None:  # global data section: one-entry array holding the whole section
        t, ks, vs, n = U.BPF_MAP_TYPE_ARRAY, 4, max(len(spec.data), spec.value_size, 1), 1
        if spec.readonly:
            fl |= U.BPF_F_RDONLY_PROG
    elif t == U.BPF_MAP_TYPE_RINGBUF:
        ks, vs = 0, 0
        ps = _page_size()
        n = max(n, ps)
        if n & (n - 1) or n % ps:
            raise LoadError(f"map '{spec.name}': ring buffer size {spec.max_entries} must be a "
                            f"power of two and a multiple of the page size ({ps})")
    elif t == U.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
        ks, vs = 4, 4
        if n == 0:
            n = ncpu
    elif t in (U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_CGROUP_ARRAY):
        ks, vs = 4, 4
    elif t == U.BPF_MAP_TYPE_HASH_OF_MAPS:
        vs = 4
    elif t in KEYLESS_TYPES:
        ks = 0
    elif t == U.BPF_MAP_TYPE_LPM_TRIE:
        fl |= U.BPF_F_NO_PREALLOC
    elif t == U.BPF_MAP_TYPE_STACK_TRACE:
        ks = 4
    return t, ks, vs, n, fl, spec.map_extra


class KernelMap(RawMap):
    """RawMap over a map fd. Per-CPU values are all CPUs concatenated, 8-byte strides."""

    def __init__(self, fd: int, spec, key_size: int, value_size: int, map_type: int,
                 max_entries: int, ncpu: int, backend=None):
        self.fd, self.spec, self.name = fd, spec, spec.name
        self.type, self.key_size, self.max_entries = map_type, key_size, max_entries
        self.elem_size = value_size
        if map_type in PERCPU_TYPES:
            self.value_size = (value_size + 7) // 8 * 8 * ncpu
        else:
            self.value_size = value_size
        self._subject = f"map '{self.name}'"
        self._backend = backend
        # Reused buffers and attr: one element operation = one syscall, no allocation.
        self._kbuf = ctypes.create_string_buffer(max(key_size, 1))
        self._k2buf = ctypes.create_string_buffer(max(key_size, 1))
        self._vbuf = ctypes.create_string_buffer(max(self.value_size, 1))
        self._attr = sc.MapElemAttr(map_fd=fd)
        self._kaddr, self._k2addr = addressof(self._kbuf), addressof(self._k2buf)
        self._vaddr = addressof(self._vbuf)
        self._lock = threading.Lock()
        self._batch_ok: Optional[bool] = None
        self.mmapable = False  # set by create_map when the map has BPF_F_MMAPABLE
        self._mem = self._mm = None
        self._ops: list = []  # container_ops objects, invalidated by close()

    # -- helpers
    def _check_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise LoadError(f"{self._subject}: key is {len(key)} bytes, the map's key size is {self.key_size}")

    def _check_value(self, value: bytes) -> None:
        if len(value) != self.value_size:
            raise LoadError(f"{self._subject}: value is {len(value)} bytes, the map's value size is {self.value_size}")

    def _err(self, r: int, cmd: int, what: str):
        if -r in (_errno.EOPNOTSUPP, ENOTSUPP):
            return NotSupportedError(f"{self._subject}: {what} is not supported for "
                                     f"{MAP_TYPE_NAMES.get(self.type, self.type)} maps by this kernel")
        return sc.make_error(-r, cmd, self._subject, what=what)

    def container_ops(self, kint, ksigned, vint, vsigned, kenc, venc, vdec, slow):
        """The C container operations of pybpfc.collection.Map (see _kfast.c Ops), or None
        without the fast path. Invalidated by close(): later calls take `slow`."""
        if _fast is None or self.fd < 0 or not hasattr(_fast, "Ops"):
            return None
        # an integer side whose declared width is not the map's (e.g. a data section) goes
        # through the codec callables
        kint = kint if kint == self.key_size else 0
        vint = vint if vint == self.value_size else 0
        me, cmds = weakref.ref(self), {"lookup": U.BPF_MAP_LOOKUP_ELEM, "update": U.BPF_MAP_UPDATE_ELEM,
                                       "delete": U.BPF_MAP_DELETE_ELEM}
        subject = self._subject

        def fail(r, what):
            m = me()
            if m is None:
                return sc.make_error(-r, cmds[what], subject, what=what)
            return m._err(r, cmds[what], what)

        ops = _fast.Ops(self.fd, self.key_size, self.value_size, kint, ksigned, vint, vsigned,
                        kenc, venc, vdec, fail, slow)
        self._ops.append(ops)
        return ops

    # -- RawMap
    def lookup(self, key: bytes, flags: int = 0) -> Optional[bytes]:
        if len(key) != self.key_size:
            self._check_key(key)
        if _fast is not None:
            r = _fast.lookup(self.fd, bytes(key), self.value_size, flags, U.BPF_MAP_LOOKUP_ELEM)
            if r.__class__ is int:
                raise self._err(r, U.BPF_MAP_LOOKUP_ELEM, "lookup")
            return r
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            ctypes.memmove(self._kaddr, key, self.key_size)
            a.key, a.value, a.flags = self._kaddr, self._vaddr, flags
            r = sc.sys_bpf(U.BPF_MAP_LOOKUP_ELEM, a)
            if r < 0:
                if r == -_errno.ENOENT:
                    return None
                raise self._err(r, U.BPF_MAP_LOOKUP_ELEM, "lookup")
            return self._vbuf.raw[:self.value_size]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if len(key) != self.key_size:
            self._check_key(key)
        if len(value) != self.value_size:
            self._check_value(value)
        if _fast is not None:
            r = _fast.update(self.fd, bytes(key), bytes(value), flags)
            if r < 0:
                raise self._err(r, U.BPF_MAP_UPDATE_ELEM, "update")
            return
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            ctypes.memmove(self._kaddr, key, self.key_size)
            ctypes.memmove(self._vaddr, value, self.value_size)
            a.key, a.value, a.flags = self._kaddr, self._vaddr, flags
            r = sc.sys_bpf(U.BPF_MAP_UPDATE_ELEM, a)
            if r < 0:
                raise self._err(r, U.BPF_MAP_UPDATE_ELEM, "update")

    def delete(self, key: bytes) -> bool:
        if len(key) != self.key_size:
            self._check_key(key)
        if _fast is not None:
            r = _fast.delete(self.fd, bytes(key))
            if r < 0:
                if r == -_errno.ENOENT:
                    return False
                raise self._err(r, U.BPF_MAP_DELETE_ELEM, "delete")
            return True
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            ctypes.memmove(self._kaddr, key, self.key_size)
            a.key, a.value, a.flags = self._kaddr, 0, 0
            r = sc.sys_bpf(U.BPF_MAP_DELETE_ELEM, a)
            if r < 0:
                if r == -_errno.ENOENT:
                    return False
                raise self._err(r, U.BPF_MAP_DELETE_ELEM, "delete")
            return True

    def next_key(self, key: Optional[bytes]) -> Optional[bytes]:
        if _fast is not None:
            if key is not None and len(key) != self.key_size:
                self._check_key(key)
            r = _fast.next_key(self.fd, None if key is None else bytes(key), self.key_size)
            if r.__class__ is int:
                raise self._err(r, U.BPF_MAP_GET_NEXT_KEY, "get next key")
            return r
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            if key is None:
                a.key = 0
            else:
                if len(key) != self.key_size:
                    self._check_key(key)
                ctypes.memmove(self._kaddr, key, self.key_size)
                a.key = self._kaddr
            a.value, a.flags = self._k2addr, 0
            r = sc.sys_bpf(U.BPF_MAP_GET_NEXT_KEY, a)
            if r < 0:
                if r == -_errno.ENOENT:
                    return None
                raise self._err(r, U.BPF_MAP_GET_NEXT_KEY, "get next key")
            return self._k2buf.raw[:self.key_size]

    def lookup_batch(self, batch_size: int = 256) -> Iterator[tuple[bytes, bytes]]:
        """All entries, BPF_MAP_LOOKUP_BATCH where the kernel has it for this map type
        (probed on first use), else next_key + lookup."""
        if self._batch_ok is False or self.type in KEYLESS_TYPES or self.key_size == 0:
            yield from super().lookup_batch(batch_size)
            return
        ks, vs = self.key_size, self.value_size
        keys = ctypes.create_string_buffer(ks * batch_size)
        vals = ctypes.create_string_buffer(max(vs, 1) * batch_size)
        # The batch cursor is opaque: hash maps use a 4-byte bucket index, arrays a key.
        tok_size = max(ks, 8)
        in_b = ctypes.create_string_buffer(tok_size)
        out_b = ctypes.create_string_buffer(tok_size)
        first = True
        while True:
            r, n = sc.map_batch(U.BPF_MAP_LOOKUP_BATCH, self.fd, None if first else in_b, out_b,
                                keys, vals, batch_size)
            if r < 0 and r != -_errno.ENOENT:
                if first and -r in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP, _errno.ENOSYS):
                    self._batch_ok = False
                    yield from super().lookup_batch(batch_size)
                    return
                if -r == _errno.ENOSPC and n == 0:  # one bucket holds more than batch_size
                    batch_size *= 2
                    keys = ctypes.create_string_buffer(ks * batch_size)
                    vals = ctypes.create_string_buffer(max(vs, 1) * batch_size)
                    continue
                raise self._err(r, U.BPF_MAP_LOOKUP_BATCH, "batch lookup")
            self._batch_ok = True
            first = False
            kr, vr = keys.raw, vals.raw
            for i in range(n):
                yield kr[i * ks:(i + 1) * ks], vr[i * vs:(i + 1) * vs]
            if r == -_errno.ENOENT:
                return
            ctypes.memmove(in_b, out_b, tok_size)

    def update_batch(self, items: list[tuple[bytes, bytes]], flags: int = 0) -> None:
        if not items:
            return
        if self._batch_ok is False or self.type in KEYLESS_TYPES:
            return super().update_batch(items, flags)
        ks, vs = self.key_size, self.value_size
        for k, v in items:
            if len(k) != ks:
                self._check_key(k)
            if len(v) != vs:
                self._check_value(v)
        kb = b"".join(k for k, _ in items)
        vb = b"".join(v for _, v in items)
        keys = ctypes.create_string_buffer(kb, len(kb))
        vals = ctypes.create_string_buffer(vb, len(vb))
        r, n = sc.map_batch(U.BPF_MAP_UPDATE_BATCH, self.fd, None, None, keys, vals, len(items),
                            elem_flags=flags)
        if r < 0:
            if n == 0 and -r in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP, _errno.ENOSYS) and flags == 0:
                return super().update_batch(items, flags)
            raise self._err(r, U.BPF_MAP_UPDATE_BATCH, f"batch update (after {n} of {len(items)})")

    def delete_batch(self, keys: list) -> int:
        """Delete `keys` (absent ones are skipped); BPF_MAP_DELETE_BATCH where the kernel has it."""
        if not keys:
            return 0
        ks = self.key_size
        for k in keys:
            if len(k) != ks:
                self._check_key(k)
        if self._batch_ok is not False and self.type not in KEYLESS_TYPES:
            kb = b"".join(keys)
            buf = ctypes.create_string_buffer(kb, len(kb))
            r, n = sc.map_batch(U.BPF_MAP_DELETE_BATCH, self.fd, None, None, buf, None, len(keys))
            if r >= 0:
                return n
            if r == -_errno.ENOENT:  # stopped at a key that is gone: the rest one by one
                return n + sum(self.delete(k) for k in keys[n + 1:])
            if not (n == 0 and -r in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP, _errno.ENOSYS)):
                raise self._err(r, U.BPF_MAP_DELETE_BATCH, f"batch delete (after {n} of {len(keys)})")
        return sum(self.delete(k) for k in keys)

    def push(self, value: bytes, flags: int = 0) -> None:
        if self.type not in KEYLESS_TYPES:
            return super().push(value, flags)
        if len(value) != self.value_size:
            self._check_value(value)
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            ctypes.memmove(self._vaddr, value, self.value_size)
            a.key, a.value, a.flags = 0, self._vaddr, flags
            r = sc.sys_bpf(U.BPF_MAP_UPDATE_ELEM, a)
            if r < 0:
                raise self._err(r, U.BPF_MAP_UPDATE_ELEM, "push")

    def _pop_peek(self, cmd: int, what: str) -> Optional[bytes]:
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            a.key, a.value, a.flags = 0, self._vaddr, 0
            r = sc.sys_bpf(cmd, a)
            if r < 0:
                if r == -_errno.ENOENT:
                    return None
                raise self._err(r, cmd, what)
            return self._vbuf.raw[:self.value_size]

    def pop(self) -> Optional[bytes]:
        if self.type not in (U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK):
            return super().pop()
        return self._pop_peek(U.BPF_MAP_LOOKUP_AND_DELETE_ELEM, "pop")

    def peek(self) -> Optional[bytes]:
        if self.type not in (U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK):
            return super().peek()
        return self._pop_peek(U.BPF_MAP_LOOKUP_ELEM, "peek")

    def contains_bloom(self, value: bytes) -> bool:
        """Bloom filters: True if `value` may be in the set (lookup with the value as key)."""
        return self._pop_peek_value(value)

    def _pop_peek_value(self, value: bytes) -> bool:
        with self._lock:  # the reused buffers are shared by all threads
            a = self._attr
            ctypes.memmove(self._vaddr, value, self.value_size)
            a.key, a.value, a.flags = 0, self._vaddr, 0
            r = sc.sys_bpf(U.BPF_MAP_LOOKUP_ELEM, a)
            if r == -_errno.ENOENT:
                return False
            if r < 0:
                raise self._err(r, U.BPF_MAP_LOOKUP_ELEM, "lookup")
            return True

    def memory(self) -> Optional[memoryview]:
        """The values of a BPF_F_MMAPABLE array mapped into this process (writable unless the
        map is frozen), or None for other maps."""
        if self._mem is None and self.mmapable and self.fd >= 0:
            size = -(-((self.value_size + 7) // 8 * 8 * self.max_entries) // mmap.PAGESIZE) * mmap.PAGESIZE
            try:
                mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError:
                try:  # frozen (.rodata): read-only mapping only
                    mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
                except OSError:
                    self.mmapable = False
                    return None
            self._mm = mm
            self._mem = memoryview(mm)[:self.value_size * self.max_entries]
        return self._mem

    def freeze(self) -> None:
        sc.map_freeze(self.fd, self._subject)

    def pin(self, path: str) -> None:
        sc.obj_pin(self.fd, path, self._subject)

    def fd_bytes(self) -> bytes:
        """This map's fd as a 4-byte value (for array/hash-of-maps contents)."""
        return self.fd.to_bytes(4, "little")

    def info(self) -> sc.MapInfo:
        return sc.map_info(self.fd, self._subject)

    def close(self) -> None:
        if self._mem is not None:
            try:
                self._mem.release()
                self._mm.close()
            except (BufferError, ValueError):
                pass  # a caller still holds a view: the mapping goes with the last reference
            self._mem = self._mm = None
        for ops in self._ops:
            ops.invalidate()
        self._ops = []
        if self.fd >= 0:
            sc.close_fd(self.fd)
            self.fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"<KernelMap {self.name!r} fd={self.fd} type={MAP_TYPE_NAMES.get(self.type, self.type)}>"


def _pin_compatible(info: sc.MapInfo, t, ks, vs, n, fl) -> Optional[str]:
    for what, have, want in (("type", info.type, t), ("key size", info.key_size, ks),
                             ("value size", info.value_size, vs),
                             ("max entries", info.max_entries, n), ("flags", info.map_flags, fl)):
        if have != want:
            return f"{what} {have} != {want}"
    return None


_mmapable_ok = True  # cleared once the kernel refuses BPF_F_MMAPABLE on an array


def create_map(spec, ncpu: int, btf_fd: int = -1, pin_root: str = DEFAULT_PIN_ROOT,
               backend=None) -> KernelMap:
    """Create (or reuse a pinned) kernel map for `spec`, including its initial data."""
    global _mmapable_ok
    subject = f"map '{spec.name}'"
    t, ks, vs, n, fl, extra = normalize(spec, ncpu)
    if spec.data is not None and len(spec.data) > vs:
        raise LoadError(f"{subject}: initial data is {len(spec.data)} bytes, larger than the value size {vs}")

    pin_path = None
    if spec.pinning == LIBBPF_PIN_BY_NAME:
        pin_path = os.path.join(pin_root, spec.name)
        if os.path.exists(pin_path):
            fd = sc.obj_get(pin_path, subject=subject)
            info = sc.map_info(fd, subject)
            why = _pin_compatible(info, t, ks, vs, n, fl)
            if why:
                sc.close_fd(fd)
                raise LoadError(f"{subject}: pinned map at {pin_path} is incompatible ({why})")
            m = KernelMap(fd, spec, ks, vs, t, n, ncpu, backend)
            m.mmapable = t == U.BPF_MAP_TYPE_ARRAY and bool(info.map_flags & U.BPF_F_MMAPABLE)
            return m
    elif spec.pinning:
        raise LoadError(f"{subject}: unsupported pinning mode {spec.pinning} (only 1, by name)")

    inner_fd = 0
    if t in MAP_IN_MAP_TYPES:
        if spec.inner_map is None:
            raise LoadError(f"{subject}: a map of maps needs an inner map definition")
        inner = create_map(spec.inner_map, ncpu, btf_fd, pin_root, backend)
        inner_fd = inner.fd
    try:
        kw = dict(flags=fl, name=spec.name, inner_map_fd=inner_fd, numa_node=spec.numa_node,
                  map_extra=extra, subject=subject)
        mmapable = spec.data is not None and not (fl & U.BPF_F_MMAPABLE) and _mmapable_ok
        use_btf = btf_fd >= 0 and (spec.btf_key_type_id or spec.btf_value_type_id)
        fd = None
        for with_mmap, with_btf in ((mmapable, use_btf), (False, use_btf), (False, False)):
            extra_kw = dict(kw)
            if with_mmap:
                extra_kw["flags"] = fl | U.BPF_F_MMAPABLE
            if with_btf:
                extra_kw.update(btf_fd=btf_fd, btf_key_type_id=spec.btf_key_type_id,
                                btf_value_type_id=spec.btf_value_type_id)
            try:
                fd = sc.map_create(t, ks, vs, n, **extra_kw)
                break
            except LoadError as e:
                if getattr(e, "errno", 0) == _errno.EPERM:
                    raise LoadError(f"{subject}: map create failed: Operation not permitted "
                                    f"(needs root or CAP_BPF)") from None
                if with_mmap:
                    _mmapable_ok = False
                    continue
                if with_btf:
                    continue  # the kernel rejected the BTF types; libbpf retries without too
                if getattr(e, "errno", 0) in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP):
                    from .probes import map_type

                    ok, why = map_type(t)
                    if not ok:
                        raise NotSupportedError(f"{subject}: {MAP_TYPE_NAMES.get(t, t)} maps are not "
                                                f"supported here: {why}") from None
                raise
    finally:
        if inner_fd:
            inner.close()
    m = KernelMap(fd, spec, ks, vs, t, n, ncpu, backend)
    m.mmapable = t == U.BPF_MAP_TYPE_ARRAY and bool((extra_kw["flags"]) & U.BPF_F_MMAPABLE)
    try:
        if spec.data is not None:
            m.update(b"\0\0\0\0", bytes(spec.data).ljust(vs, b"\0"))
            if spec.readonly:
                m.freeze()
        if pin_path:
            m.pin(pin_path)
    except BaseException:
        m.close()
        raise
    return m

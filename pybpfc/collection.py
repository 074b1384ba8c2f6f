"""The generic loaded-object layer over any Backend: Collection, Map, Program, Globals.

Maps look like Python containers whose keys and values are decoded into the types the
program declared; programs attach by their section or by explicit calls. Nothing here knows
which backend it runs on.
"""
from __future__ import annotations

import gc
import inspect
import struct as _struct
import time
import weakref
from itertools import chain
from types import SimpleNamespace
from typing import Callable, Iterator, Optional

from . import uapi as U
from .backends.base import Backend, Link, NoopLink, RawMap, RawProgram, TestRunResult
from .errors import AttachError, Error, LoadError, NotSupportedError
from .lang.types import Array, IntType, Str, Struct, bool_

PERCPU_TYPES = {U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY,
                U.BPF_MAP_TYPE_LRU_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE}
KEYLESS_TYPES = {U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK, U.BPF_MAP_TYPE_BLOOM_FILTER}
ARRAY_TYPES = {U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_PROG_ARRAY,
               U.BPF_MAP_TYPE_PERF_EVENT_ARRAY}


_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class _Codec:
    """Encodes/decodes one side (key or value) of a map: a pybpfc type, or raw bytes.

    `int_width`/`int_signed` describe a plain integer side (0: not one) so a backend's C fast
    path can pack and unpack it itself; `encode`/`decode` are chosen once, per kind."""

    def __init__(self, t, size: int, what: str):
        self.t, self.size, self.what = t, size, what
        self.int_width, self.int_signed, self.code = 0, False, None
        if t is not None and isinstance(t, type) and issubclass(t, IntType) and not issubclass(t, bool_):
            # Integers are most keys and values: a precompiled struct skips the generic path.
            self.int_width, self.int_signed, self.code = t._size, bool(t._signed), t._fmt[1:]
            s = _struct.Struct(t._fmt)
            self._ipack, self.encode = s.pack, self._encode_int
            self.decode = lambda b, _u=s.unpack_from: _u(b)[0]
        elif t is None and size in _INT_CODES:
            # untyped 1/2/4/8-byte sides read as unsigned ints and take ints or bytes
            self.int_width, self.code = size, _INT_CODES[size]
            self.decode = lambda b, _u=_struct.Struct("<" + self.code).unpack_from: _u(b)[0]

    def _encode_int(self, v) -> bytes:
        try:
            return self._ipack(v)
        except (_struct.error, TypeError):
            return self._encode_generic(v)

    def encode(self, v) -> bytes:
        return self._encode_generic(v)

    def _encode_generic(self, v) -> bytes:
        try:
            if self.t is None:
                if isinstance(v, int):
                    return v.to_bytes(self.size, "little", signed=v < 0)
                b = bytes(v)
                if len(b) != self.size:
                    raise Error(f"{self.what}: expected {self.size} bytes, got {len(b)}")
                return b
            if isinstance(v, (bytes, bytearray, memoryview)) and not issubclass(self.t, Str) and len(v) == self.size:
                return bytes(v)  # already encoded
            return self.t._pack(v)
        except (TypeError, ValueError, OverflowError, AttributeError, _struct.error) as e:
            tname = getattr(self.t, "__name__", f"{self.size} bytes")
            raise Error(f"{self.what}: cannot encode {v!r} as {tname}: {e}") from None

    def decode(self, b: bytes):
        if self.t is None:
            return bytes(b)
        return self.t._unpack(b)


def _value_codecs(name: str, codec: _Codec, percpu: bool, ncpu: int, stride: int):
    """(encode, decode) of a map's whole value: per-CPU maps take/give one entry per CPU,
    maps and programs (prog arrays, maps of maps) store the backend's handle. Closures, not
    Map methods, so a C fast path can hold them without a reference cycle to the Map."""
    enc1, dec1, size = codec.encode, codec.decode, codec.size

    def handle(v) -> bytes:
        fd_bytes = getattr(v.raw, "fd_bytes", None)
        if fd_bytes is None:
            raise NotSupportedError(f"map '{name}': this backend cannot store '{v.name}' in a map")
        return fd_bytes()

    if not percpu:
        def encode(v) -> bytes:
            if isinstance(v, (Map, Program)):
                return handle(v)
            return enc1(v)

        return encode, dec1

    row = None
    if codec.code is not None:
        # all CPUs' values in one (un)pack: each is `size` bytes padded to the 8-byte stride
        pad = f"{stride - size}x" if stride > size else ""
        row = _struct.Struct("<" + (codec.code + pad) * ncpu)

    def encode(v) -> bytes:
        if isinstance(v, (Map, Program)):
            return handle(v)
        vals = list(v) if isinstance(v, (list, tuple)) else [v] * ncpu
        if len(vals) != ncpu:
            raise Error(f"map '{name}': per-CPU value needs {ncpu} entries, got {len(vals)}")
        if row is not None:
            try:
                return row.pack(*vals)
            except (_struct.error, TypeError):
                pass  # not plain ints in range: the element codec wraps or reports them
        return b"".join(enc1(x).ljust(stride, b"\0") for x in vals)

    if row is not None:
        unpack = row.unpack_from

        def decode(b):
            return list(unpack(b))
    else:
        def decode(b):
            return [dec1(b[i * stride: i * stride + size]) for i in range(ncpu)]

    return encode, decode


class Map:
    """A loaded map as a Python container.

    m[k], m[k] = v, del m[k], k in m, len(m), iter(m), m.items(), m.values(), m.clear(),
    m.get(k, default); per-CPU maps give a list (one value per CPU) for each key, and
    `m.sum(k)` adds them up. Queue/stack maps have push/pop/peek.

    When the backend offers `container_ops` (its C fast path), m[k], m[k] = v, del m[k],
    k in m and m.get are that object's C methods, installed on a per-map subclass: one C
    call per operation, integers packed in C, other kinds through the codecs below; the
    Python methods of this class remain the reference behaviour and the fallback.
    """

    def __init__(self, raw: RawMap, spec, backend: Backend):
        self.raw, self.spec, self._backend = raw, spec, backend
        self.name = spec.name
        self.percpu = spec.type in PERCPU_TYPES
        self._ncpu = backend.num_possible_cpus() if self.percpu else 1
        self._stride = (spec.value_size + 7) // 8 * 8
        self.key = _Codec(spec.key_type, spec.key_size, f"map '{self.name}': key")
        self.value = _Codec(spec.value_type, spec.value_size, f"map '{self.name}': value")
        self._enc_value, self._dec_value = _value_codecs(self.name, self.value, self.percpu,
                                                         self._ncpu, self._stride)
        self._bind_fast()

    def _bind_fast(self):
        make = getattr(self.raw, "container_ops", None)
        if make is None or self.spec.type in KEYLESS_TYPES or type(self) is not Map:
            return  # (a user's subclass of Map keeps its own methods)
        me = weakref.ref(self)  # the ops live on our class: no strong cycle back to us

        def slow(fn):
            return lambda *a, **kw: fn(me(), *a, **kw)

        k, v = self.key, self.value
        vint = 0 if self.percpu else v.int_width
        ops = make(k.int_width, k.int_signed, vint, v.int_signed, k.encode, self._enc_value, self._dec_value,
                   (slow(Map.__getitem__), slow(Map.get), slow(Map.__setitem__), slow(Map.__delitem__),
                    slow(Map.__contains__)))
        if ops is None:
            return
        # Special methods are looked up on the type, so a per-map subclass carries them; a
        # builtin method is not a descriptor, so it is called with the key alone.
        self.__class__ = type("Map", (Map,), {
            "__module__": Map.__module__, "__qualname__": "Map", "_ops": ops,
            "__getitem__": ops.getitem, "__setitem__": ops.setitem, "__delitem__": ops.delitem,
            "__contains__": ops.contains, "get": ops.get})

    # -- container protocol
    def __getitem__(self, k):
        v = self.raw.lookup(self.key.encode(k))
        if v is None:
            raise KeyError(k)
        return self._dec_value(v)

    def get(self, k, default=None):
        v = self.raw.lookup(self.key.encode(k))
        return default if v is None else self._dec_value(v)

    def __setitem__(self, k, v):
        self.raw.update(self.key.encode(k), self._enc_value(v), 0)

    def update(self, k, v, flags: int = 0):
        self.raw.update(self.key.encode(k), self._enc_value(v), flags)

    def __delitem__(self, k):
        if not self.raw.delete(self.key.encode(k)):
            raise KeyError(k)

    def __contains__(self, k):
        if self.spec.type == U.BPF_MAP_TYPE_BLOOM_FILTER:
            # A bloom filter answers "maybe present" for a value (it has no keys).
            check = getattr(self.raw, "contains_bloom", None)
            if check is None:
                raise NotSupportedError(f"map '{self.name}': bloom filter lookups are not supported by this backend")
            return check(self.value.encode(k))
        return self.raw.lookup(self.key.encode(k)) is not None

    def _keyed(self, what: str):
        if self.spec.type in KEYLESS_TYPES:
            raise Error(f"map '{self.name}': {what}: queue, stack and bloom filter maps have no keys "
                        f"(use push/pop/peek, or `value in map` for bloom filters)")

    def keys(self) -> Iterator:
        self._keyed("keys")
        k = self.raw.next_key(None)
        while k is not None:
            nk = self.raw.next_key(k)
            yield self.key.decode(k)
            k = nk

    __iter__ = keys

    def items(self) -> Iterator:
        # chain() hands out the decoded entries at C speed; the generator below still runs
        # only when iteration starts, as a plain generator method would.
        return chain.from_iterable(self._batches(False))

    def values(self) -> Iterator:
        return chain.from_iterable(self._batches(True))

    def _batches(self, values_only: bool):
        self._keyed("values" if values_only else "items")
        kd, vd = self.key.decode, self._dec_value
        fast = getattr(self.raw, "items_decoded", None)
        if fast is not None:
            # the backend decodes every entry in one call (ints natively, the rest by our codecs)
            k, v = self.key, self.value
            got = fast(k.int_width, k.int_signed, 0 if self.percpu else v.int_width, v.int_signed, kd, vd,
                       values_only)
            if got is not None:
                yield got if values_only else zip(*got)
                return
        if values_only:
            yield (vd(v) for _, v in self.raw.lookup_batch())
        else:
            yield ((kd(k), vd(v)) for k, v in self.raw.lookup_batch())

    def __len__(self):
        self._keyed("len")
        if self.spec.type in ARRAY_TYPES:
            return self.spec.max_entries
        return sum(1 for _ in self.raw.lookup_batch())

    def clear(self):
        if self.spec.type in ARRAY_TYPES:
            zero = self._enc_value(0 if self.spec.value_type is None or issubclass(self.spec.value_type, IntType)
                                   else self.spec.value_type())
            self.raw.update_batch([(self.key.encode(i), zero) for i in range(self.spec.max_entries)])
            return
        keys = []
        k = self.raw.next_key(None)
        while k is not None:
            keys.append(k)
            k = self.raw.next_key(k)
        delete_batch = getattr(self.raw, "delete_batch", None)
        if delete_batch is not None:
            delete_batch(keys)
        else:
            for k in keys:
                self.raw.delete(k)

    def sum(self, k):
        """Per-CPU maps: the values of all CPUs added up (ints only)."""
        v = self[k]
        return sum(v) if self.percpu else v

    # -- keyless maps
    def push(self, v, flags: int = 0):
        self.raw.push(self.value.encode(v), flags)

    def pop(self):
        b = self.raw.pop()
        return None if b is None else self.value.decode(b)

    def peek(self):
        b = self.raw.peek()
        return None if b is None else self.value.decode(b)

    def pin(self, path: str):
        self.raw.pin(path)

    # -- histograms (log2 buckets: key = bucket index, value = count)
    def histogram(self) -> list[int]:
        counts: dict[int, int] = {}
        for k, v in self.items():
            idx = k if isinstance(k, int) else int.from_bytes(self.key.encode(k), "little")
            counts[idx] = counts.get(idx, 0) + (sum(v) if isinstance(v, list) else int(v))
        n = max(counts) + 1 if counts else 0
        return [counts.get(i, 0) for i in range(n)]

    def format_log2_hist(self, val_type: str = "value") -> str:
        from .histogram import format_log2_hist

        return format_log2_hist(self.histogram(), val_type)

    def print_log2_hist(self, val_type: str = "value"):
        print(self.format_log2_hist(val_type))

    def __repr__(self):
        return f"<Map {self.name!r} type={self.spec.type}>"


class EventDecoder:
    """Decodes events of one type. `many()` decodes n fixed-size records laid out every
    `stride` bytes after a `hdr`-byte header with one struct.iter_unpack and a generated
    constructor, which is what lets a reader deliver millions of Structs per second; types it
    cannot express as one struct format (nested structs, arrays of structs) use `_unpack`."""

    def __init__(self, t):
        self.t = t
        self.size = t._size if t is not None else 0
        # (names, kinds, offsets, sizes) when every field is an integer, bool or Str
        self.native_fields: Optional[tuple] = None
        self._fmts: dict = {}
        self._make = None
        self._fmt_body = None
        if t is not None and isinstance(t, type) and issubclass(t, Struct):
            self._compile(t)

    def _compile(self, t):
        body, cur, assigns, idx = "", 0, [], 0
        native = []  # (name, struct letter or "?"/"s", offset, size) for backends that decode natively
        for name, ft, off in t._fields_:
            if issubclass(ft, bool_):
                native.append((name, "?", off, 1))
            elif issubclass(ft, IntType):
                native.append((name, ft._fmt[1:], off, ft._size))
            elif issubclass(ft, Str):
                native.append((name, "s", off, ft._size))
            else:
                native = None
                break
        if native is not None and name_ok(t):
            self.native_fields = (tuple(f[0] for f in native), "".join(f[1] for f in native).encode(),
                                  tuple(f[2] for f in native), tuple(f[3] for f in native))
        for name, ft, off in t._fields_:
            if off < cur:
                return
            body += f"{off - cur}x" if off > cur else ""
            if issubclass(ft, bool_):
                body += "?"
                assigns.append(f"o.{name} = v[{idx}]")
                idx += 1
            elif issubclass(ft, IntType):
                body += ft._fmt[1:]
                assigns.append(f"o.{name} = v[{idx}]")
                idx += 1
            elif issubclass(ft, Str):
                body += f"{ft._len}s"
                assigns.append(f"o.{name} = v[{idx}].split(b'\\0', 1)[0]")
                idx += 1
            elif issubclass(ft, Array) and issubclass(ft._elem, IntType) and not issubclass(ft._elem, bool_):
                body += f"{ft._len}{ft._elem._fmt[1:]}"
                assigns.append(f"o.{name} = list(v[{idx}:{idx + ft._len}])")
                idx += ft._len
            else:
                return
            cur = off + ft._size
        if not name_ok(t):
            return
        src = "def make(v, new=new, cls=cls):\n    o = new(cls)\n"
        if all(a.endswith(f"= v[{i}]") for i, a in enumerate(assigns)) and len(assigns) == idx:
            # plain scalars: one tuple unpack is faster than indexing field by field
            src += f"    {', '.join(a.split(' = ')[0] for a in assigns)}, = v\n    return o\n"
        else:
            src += "".join(f"    {a}\n" for a in assigns) + "    return o\n"
        ns = {"new": object.__new__, "cls": t}
        exec(src, ns)  # noqa: S102 - generated from the type's own field list
        self._make, self._fmt_body = ns["make"], (body, cur)

    def one(self, b: bytes):
        t = self.t
        if t is None:
            return bytes(b)
        if len(b) < t._size:
            raise Error(f"event of {len(b)} bytes is shorter than {t.__name__} ({t._size})")
        return t._unpack(b)

    def many(self, mv, n: int, stride: int, hdr: int) -> list:
        if self._make is None or self.t is None:
            return [self.one(mv[i * stride + hdr:i * stride + hdr + self.size].tobytes())
                    for i in range(n)]
        S = self.row_struct(stride, hdr)
        # The new objects hold only ints/bytes (no cycles); letting the cyclic GC rescan the
        # growing heap every few hundred allocations would triple the cost of a large batch.
        reenable = gc.isenabled()
        gc.disable()
        try:
            return list(map(self._make, S.iter_unpack(mv)))
        finally:
            if reenable:
                gc.enable()


    def row_struct(self, stride: int, hdr: int) -> _struct.Struct:
        """struct.Struct of one record: `hdr` bytes skipped, the fields, padding to `stride`."""
        S = self._fmts.get((stride, hdr))
        if S is None:
            body, end = self._fmt_body
            S = self._fmts[(stride, hdr)] = _struct.Struct(f"<{hdr}x{body}{stride - hdr - end}x")
        return S


def name_ok(t) -> bool:
    return all(n.isidentifier() for n, _, _ in t._fields_)


class RingBuffer:
    """Events from a RingBuf or PerfEventArray map, decoded into the declared event type."""

    def __init__(self, raw, event_type, name: str):
        self.raw, self.event_type, self.name = raw, event_type, name
        self._decoder = EventDecoder(event_type)
        self._fast = getattr(raw, "poll_decoded", None) if event_type is not None else None
        self._error = None

    def _decode(self, b: bytes):
        try:
            return self._decoder.one(b)
        except Error as e:
            raise Error(f"map '{self.name}': {e}") from None

    def poll(self, timeout: Optional[float] = None) -> list:
        """Events available now, or within `timeout` seconds (None: wait for at least one)."""
        if self._fast is not None:
            try:
                return self._fast(timeout, self._decoder)
            except Error as e:
                raise Error(f"map '{self.name}': {e}") from None
        if self._error is not None:
            e, self._error = self._error, None
            raise e
        out = []
        for b in self.raw.poll(timeout):
            try:
                out.append(self._decode(b))
            except Error as e:
                # keep the events around it; the first bad one is reported by the next poll
                if self._error is None:
                    self._error = e
        if not out and self._error is not None:
            e, self._error = self._error, None
            raise e
        return out

    def __iter__(self):
        while True:
            for e in self.poll(None):
                yield e

    def consume(self, callback: Callable, timeout: Optional[float] = None, duration: Optional[float] = None):
        """Call `callback(event)` for each event until `duration` seconds have passed (or forever)."""
        end = None if duration is None else time.monotonic() + duration
        while end is None or time.monotonic() < end:
            t = timeout if end is None else max(0.0, min(timeout or 0.1, end - time.monotonic()))
            for e in self.poll(t):
                callback(e)

    @property
    def lost(self) -> int:
        return self.raw.lost

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self):
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NotLoaded(RawProgram):
    """Stands for a program the backend cannot load, kept with unsupported="ignore"."""

    def __init__(self, spec, reason: str):
        self.spec, self.name, self.reason = spec, spec.name, reason

    def test_run(self, data: bytes = b"", ctx: Optional[bytes] = None, repeat: int = 1,
                 data_size_out: Optional[int] = None) -> TestRunResult:
        raise NotSupportedError(self.reason)

    def close(self) -> None:
        pass


class Program:
    def __init__(self, raw: RawProgram, spec, collection: "Collection"):
        self.raw, self.spec, self._coll = raw, spec, collection
        self.name = spec.name

    def test_run(self, data: bytes = b"", ctx: Optional[bytes] = None, repeat: int = 1,
                 data_size_out: Optional[int] = None) -> TestRunResult:
        return self.raw.test_run(data, ctx, repeat, data_size_out)

    def _attach(self, method: str, kind: str, target: str, *args, **kw) -> Link:
        b = self._coll.backend
        try:
            if isinstance(self.raw, NotLoaded):
                raise NotSupportedError(self.raw.reason)
            link = getattr(b, method)(self.raw, *args, **kw)
        except NotSupportedError as e:
            if self._coll.unsupported == "ignore":
                link = NoopLink(kind, target, str(e))
            else:
                raise
        self._coll._links.append(link)
        return link

    def attach_tracepoint(self, tracepoint: Optional[str] = None) -> Link:
        tp = tracepoint or self.spec.attach_to
        if "/" not in tp:
            raise Error(f"prog '{self.name}': tracepoint must be 'category/name', got {tp!r}")
        cat, name = tp.split("/", 1)
        return self._attach("attach_tracepoint", "tracepoint", tp, cat, name)

    def attach_raw_tracepoint(self, name: Optional[str] = None) -> Link:
        name = name or self.spec.attach_to
        return self._attach("attach_raw_tracepoint", "raw_tracepoint", name, name)

    def attach_uprobe(self, binary: Optional[str] = None, symbol: Optional[str] = None, offset: int = 0,
                      pid: int = -1, retprobe: Optional[bool] = None, cookie: int = 0) -> Link:
        if binary is None:
            binary, _, sym = self.spec.attach_to.partition(":")
            symbol = symbol or sym or None
            if "+" in (symbol or ""):
                symbol, off = symbol.split("+", 1)
                offset = int(off, 0)
        if retprobe is None:
            retprobe = self.spec.kind == "uretprobe"
        return self._attach("attach_uprobe", "uretprobe" if retprobe else "uprobe", f"{binary}:{symbol or hex(offset)}",
                            binary, symbol, offset=offset, pid=pid, retprobe=retprobe, cookie=cookie)

    def attach_uretprobe(self, binary: Optional[str] = None, symbol: Optional[str] = None, offset: int = 0,
                         pid: int = -1, cookie: int = 0) -> Link:
        return self.attach_uprobe(binary, symbol, offset, pid, retprobe=True, cookie=cookie)

    def attach_kprobe(self, function: Optional[str] = None, offset: int = 0, retprobe: Optional[bool] = None) -> Link:
        function = function or self.spec.attach_to
        if retprobe is None:
            retprobe = self.spec.kind == "kretprobe"
        return self._attach("attach_kprobe", "kprobe", function, function, offset=offset, retprobe=retprobe)

    def attach_xdp(self, ifname: str, flags: int = 0) -> Link:
        return self._attach("attach_xdp", "xdp", ifname, ifname, flags)

    def attach_tc(self, ifname: str, direction: Optional[str] = None) -> Link:
        direction = direction or self._tc_direction()
        return self._attach("attach_tc", "tc", f"{ifname}/{direction}", ifname, direction)

    def attach_socket_filter(self, sock) -> Link:
        return self._attach("attach_socket_filter", "socket_filter", str(sock), sock)

    def attach_cgroup(self, path: str, attach_type: Optional[int] = None) -> Link:
        return self._attach("attach_cgroup", "cgroup", path, path, attach_type)

    def attach_perf_event(self, **kw) -> Link:
        return self._attach("attach_perf_event", "perf_event", str(kw), **kw)

    def attach_fentry(self) -> Link:
        return self._attach("attach_fentry", self.spec.kind, self.spec.attach_to)

    def _tc_direction(self) -> str:
        # "tc/egress" and "tcx/egress" parse to an empty target: the attach type says it.
        if self.spec.attach_to in ("ingress", "egress"):
            return self.spec.attach_to
        return "egress" if self.spec.expected_attach_type == U.BPF_TCX_EGRESS else "ingress"

    # Options attach()/attach_all() understand, by the kind that uses them.
    ATTACH_OPTIONS = {"ifname": "xdp, tc", "flags": "xdp", "cgroup": "cgroup", "sock": "socket_filter",
                      "pid": "uprobe, uretprobe"}

    def attach(self, **opts) -> Link:
        """Attach by the program's section (what attach_all does for each program). Kinds
        that need a target the section cannot carry take it from `opts`: `ifname` (xdp, tc),
        `flags` (xdp), `cgroup` (cgroup programs), `sock` (socket filters), `pid` (uprobes)."""
        unknown = set(opts) - set(self.ATTACH_OPTIONS)
        if unknown:
            raise Error(f"prog '{self.name}': unknown attach option(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(self.ATTACH_OPTIONS)})")
        k = self.spec.kind
        if k == "tracepoint":
            return self.attach_tracepoint()
        if k == "raw_tracepoint":
            return self.attach_raw_tracepoint()
        if k in ("uprobe", "uretprobe"):
            return self.attach_uprobe(pid=opts.get("pid", -1))
        if k in ("kprobe", "kretprobe"):
            return self.attach_kprobe()
        if k in ("fentry", "fexit", "fmod_ret", "tp_btf", "lsm"):
            return self.attach_fentry()
        if k == "xdp" and "ifname" in opts:
            return self.attach_xdp(opts["ifname"], opts.get("flags", 0))
        if k in ("tc", "tcx") and "ifname" in opts:
            return self.attach_tc(opts["ifname"])
        if k == "cgroup" and "cgroup" in opts:
            return self.attach_cgroup(opts["cgroup"])
        if k == "socket_filter" and "sock" in opts:
            return self.attach_socket_filter(opts["sock"])
        need = {"xdp": "ifname=", "tc": "ifname=", "tcx": "ifname=", "cgroup": "cgroup=", "socket_filter": "sock="}
        if k in need:
            raise AttachError(f"prog '{self.name}': section '{self.spec.section}' does not say where to attach; "
                              f"pass {need[k]} to attach()/attach_all() or call attach_{k if k != 'tcx' else 'tc'}()")
        raise NotSupportedError(f"prog '{self.name}': section '{self.spec.section}' ({k}) has no automatic attach; "
                                f"use the attach method of its kind")

    def pin(self, path: str):
        self.raw.pin(path)

    def __repr__(self):
        return f"<Program {self.name!r} {self.spec.section}>"


class Globals:
    """`obj.globals.NAME` reads and writes a global variable in .data/.bss/.rodata."""

    def __init__(self, coll: "Collection"):
        object.__setattr__(self, "_coll", coll)
        index = {}
        for m in coll.spec.maps.values():
            for var, (off, size, t) in m.variables.items():
                index[var] = (m.name, off, size, t)
        object.__setattr__(self, "_index", index)

    def _where(self, name):
        try:
            return self._index[name]
        except KeyError:
            raise AttributeError(f"no global variable {name!r}") from None

    @staticmethod
    def _memory(raw):
        # A backend that maps the section into our memory lets a variable be read or written
        # alone; otherwise the whole section is read and written back (racing with programs
        # that write other variables meanwhile).
        mem = getattr(raw, "memory", None)
        return mem() if mem is not None else None

    def __getattr__(self, name):
        mname, off, size, t = self._where(name)
        raw = self._coll._maps[mname].raw
        mem = self._memory(raw)
        b = bytes(mem[off:off + size]) if mem is not None else raw.lookup(b"\0\0\0\0")[off:off + size]
        return t._unpack(b) if t is not None else bytes(b)

    def __setattr__(self, name, value):
        mname, off, size, t = self._where(name)
        m = self._coll._maps[mname]
        if m.spec.readonly:
            raise Error(f"map '{mname}': {name} is a constant; set it with consts= at load time")
        try:
            b = t._pack(value) if t is not None else bytes(value)
        except (TypeError, ValueError, OverflowError, AttributeError, _struct.error) as e:
            raise Error(f"map '{mname}': cannot set {name} to {value!r}: {e}") from None
        if len(b) != size:
            raise Error(f"map '{mname}': {name} is {size} bytes, the value given is {len(b)}")
        mem = self._memory(m.raw)
        if mem is not None and not mem.readonly:
            mem[off:off + size] = b
            return
        data = bytearray(m.raw.lookup(b"\0\0\0\0"))
        data[off:off + size] = b
        m.raw.update(b"\0\0\0\0", bytes(data), 0)

    def __dir__(self):
        return list(self._index)


def _accepts(fn, param: str) -> bool:
    try:
        return param in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Collection:
    """A loaded object: `.programs.NAME`, `.maps.NAME`, `.globals.NAME`, attach_all()."""

    def __init__(self, spec, backend: Backend, unsupported: str = "error", owns_backend: bool = False):
        self.spec, self.backend, self.unsupported = spec, backend, unsupported
        self._owns_backend = owns_backend  # created for this collection: closed with it
        self._maps: dict[str, Map] = {}
        self._progs: dict[str, Program] = {}
        self._links: list[Link] = []
        self._readers: list = []
        try:
            with_btf = spec.btf is not None and _accepts(backend.create_map, "btf")
            for name, ms in spec.maps.items():
                raw = backend.create_map(ms, btf=spec.btf) if with_btf else backend.create_map(ms)
                self._maps[name] = Map(raw, ms, backend)
            raw_maps = {n: m.raw for n, m in self._maps.items()}
            for name, ps in spec.programs.items():
                try:
                    raw = backend.load_program(ps, raw_maps, spec.btf)
                except NotSupportedError as e:
                    if unsupported != "ignore":
                        raise
                    raw = NotLoaded(ps, str(e))  # attaches as a NoopLink, test_run says why
                self._progs[name] = Program(raw, ps, self)
            self._init_prog_arrays()
        except BaseException:
            self.close()
            raise
        self.maps = SimpleNamespace(**self._maps)
        self.programs = SimpleNamespace(**self._progs)
        self.globals = Globals(self)

    def _init_prog_arrays(self):
        # libbpf-style static initialisation of prog arrays and maps of maps (contents given
        # as program or map names).
        for m in self._maps.values():
            of_maps = m.spec.type in (U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS)
            for k, v in m.spec.contents:
                if isinstance(k, int):
                    k = k.to_bytes(m.spec.key_size or 4, "little")
                if isinstance(v, str):
                    table = self._maps if of_maps else self._progs
                    if v not in table:
                        raise LoadError(f"map '{m.name}': initial value names unknown "
                                        f"{'map' if of_maps else 'program'} '{v}'")
                    if not hasattr(table[v].raw, "fd_bytes"):
                        raise NotSupportedError(f"map '{m.name}': the {self.backend.name} backend "
                                                f"cannot store '{v}' in a map")
                    m.raw.update(k, table[v].raw.fd_bytes(), 0)  # type: ignore[attr-defined]
                else:
                    m.raw.update(k, v, 0)

    def map(self, name: str) -> Map:
        try:
            return self._maps[name]
        except KeyError:
            raise Error(f"map '{name}': no such map (have: {', '.join(self._maps) or 'none'})") from None

    def program(self, name: str) -> Program:
        try:
            return self._progs[name]
        except KeyError:
            raise Error(f"prog '{name}': no such program (have: {', '.join(self._progs) or 'none'})") from None

    def ringbuf(self, name: str, event_type=None, page_count: int = 64, raw: bool = False) -> RingBuffer:
        """A reader of ring buffer (or perf event array) map `name`; events decode into
        `event_type` (default: the type the program declared; raw=True or no declared type:
        bytes). `page_count` sizes each per-CPU ring of a perf buffer."""
        m = self.map(name)
        if m.spec.type == U.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            rawbuf = self.backend.open_perfbuf(m.raw, page_count)
        elif m.spec.type == U.BPF_MAP_TYPE_RINGBUF:
            rawbuf = self.backend.open_ringbuf(m.raw)
        else:
            raise Error(f"map '{name}': not a ring buffer or perf event array")
        rb = RingBuffer(rawbuf, None if raw else (event_type or m.spec.event_type), name)
        self._readers.append(rb)
        return rb

    perfbuf = ringbuf

    def attach_all(self, **opts) -> list[Link]:
        """Attach every program whose section says where (tracepoints, probes, ...)."""
        links = []
        for p in self._progs.values():
            try:
                links.append(p.attach(**opts))
            except NotSupportedError:
                if self.unsupported != "ignore":
                    raise
        return links

    @property
    def links(self) -> list[Link]:
        return list(self._links)

    def close(self):
        for r in self._readers:
            try:
                r.close()
            except Exception:
                pass
        for link in reversed(self._links):
            try:
                link.close()
            except Exception:
                pass
        for p in self._progs.values():
            p.raw.close()
        for m in self._maps.values():
            m.raw.close()
        self._readers, self._links, self._progs, self._maps = [], [], {}, {}
        if self._owns_backend:
            self._owns_backend = False
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

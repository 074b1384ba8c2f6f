"""Value types shared by BPF programs and user space.

The same classes describe layout to the compiler and decode/encode map keys, map values
and events in user space. Every type has class attributes `_size`, `_align` and the
classmethods `_pack(value) -> bytes` and `_unpack(data) -> value`.

- Integers (`u8 ... i64`, `bool_`) are `int` subclasses: `u32(x)` wraps like C.
- `Struct` subclasses declare fields with annotations; layout follows C.
- `Array[T, N]` decodes to a list; `Str[N]` decodes to bytes up to the first NUL.
"""
from __future__ import annotations

import struct as _struct
from typing import Any, ClassVar


class IntType(int):
    """Base of the fixed-width integer types."""

    _size: ClassVar[int] = 8
    _align: ClassVar[int] = 8
    _signed: ClassVar[bool] = False
    _fmt: ClassVar[str] = "<Q"

    def __new__(cls, value: Any = 0):
        return super().__new__(cls, cls._wrap(int(value)))

    @classmethod
    def _wrap(cls, v: int) -> int:
        bits = cls._size * 8
        v &= (1 << bits) - 1
        if cls._signed and v >> (bits - 1):
            v -= 1 << bits
        return v

    @classmethod
    def _min(cls) -> int:
        return -(1 << (cls._size * 8 - 1)) if cls._signed else 0

    @classmethod
    def _max(cls) -> int:
        return (1 << (cls._size * 8 - (1 if cls._signed else 0))) - 1

    @classmethod
    def _pack(cls, value) -> bytes:
        return _struct.pack(cls._fmt, cls._wrap(int(value)))

    @classmethod
    def _unpack(cls, data: bytes) -> int:
        return _struct.unpack(cls._fmt, bytes(data[: cls._size]))[0]

    def __repr__(self):
        return f"{type(self).__name__}({int(self)})"


def _int_type(name: str, size: int, signed: bool):
    fmt = "<" + {1: "b", 2: "h", 4: "i", 8: "q"}[size]
    if not signed:
        fmt = fmt.upper()
    return type(name, (IntType,), {"_size": size, "_align": size, "_signed": signed, "_fmt": fmt})


u8 = _int_type("u8", 1, False)
u16 = _int_type("u16", 2, False)
u32 = _int_type("u32", 4, False)
u64 = _int_type("u64", 8, False)
i8 = _int_type("i8", 1, True)
i16 = _int_type("i16", 2, True)
i32 = _int_type("i32", 4, True)
i64 = _int_type("i64", 8, True)


class bool_(IntType):
    """`bool` in a struct or map: one byte, 0 or 1 (plain `bool` annotations map to this)."""

    _size = 1
    _align = 1
    _fmt = "<B"

    @classmethod
    def _unpack(cls, data: bytes) -> bool:  # type: ignore[override]
        return bool(data[0])


INT_TYPES = {t.__name__: t for t in (u8, u16, u32, u64, i8, i16, i32, i64)}


def resolve_type(t):
    """Map Python spellings to pybpfc types: `bool` -> bool_, `int` -> i64."""
    if t is bool:
        return bool_
    if t is int:
        return i64
    return t


def _round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class _ArrayMeta(type):
    _cache: dict = {}

    def __getitem__(cls, params):
        if cls is Str:
            (n,) = params if isinstance(params, tuple) else (params,)
            key = (Str, n)
            if key not in _ArrayMeta._cache:
                _ArrayMeta._cache[key] = type(f"Str[{n}]", (Str,), {"_len": n, "_size": n, "_align": 1})
            return _ArrayMeta._cache[key]
        elem, n = params
        elem = resolve_type(elem)
        key = (Array, elem, n)
        if key not in _ArrayMeta._cache:
            _ArrayMeta._cache[key] = type(
                f"Array[{elem.__name__}, {n}]",
                (Array,),
                {"_elem": elem, "_len": n, "_size": elem._size * n, "_align": elem._align},
            )
        return _ArrayMeta._cache[key]


class Array(metaclass=_ArrayMeta):
    """`Array[T, N]`: N elements of T. Decodes to a list."""

    _elem: ClassVar[Any] = None
    _len: ClassVar[int] = 0
    _size: ClassVar[int] = 0
    _align: ClassVar[int] = 1

    @classmethod
    def _pack(cls, value) -> bytes:
        value = list(value)
        if len(value) > cls._len:
            raise ValueError(f"{cls.__name__}: {len(value)} elements, at most {cls._len}")
        value += [0 if issubclass(cls._elem, IntType) else cls._elem()] * (cls._len - len(value))
        return b"".join(cls._elem._pack(v) for v in value)

    @classmethod
    def _unpack(cls, data: bytes) -> list:
        s = cls._elem._size
        return [cls._elem._unpack(data[i * s : (i + 1) * s]) for i in range(cls._len)]


class Str(metaclass=_ArrayMeta):
    """`Str[N]`: a NUL-padded C string of N bytes. Decodes to bytes up to the first NUL."""

    _len: ClassVar[int] = 0
    _size: ClassVar[int] = 0
    _align: ClassVar[int] = 1

    @classmethod
    def _pack(cls, value) -> bytes:
        if isinstance(value, str):
            value = value.encode()
        value = bytes(value)
        if len(value) > cls._len:
            raise ValueError(f"{cls.__name__}: {len(value)} bytes, at most {cls._len}")
        return value.ljust(cls._len, b"\0")

    @classmethod
    def _unpack(cls, data: bytes) -> bytes:
        data = bytes(data[: cls._len])
        i = data.find(b"\0")
        return data if i < 0 else data[:i]


class Struct:
    """Base of user structs. Fields come from class annotations, laid out like C.

    >>> class Event(Struct):
    ...     pid: u32
    ...     ts: u64
    >>> Event._size, Event._fields_
    (16, [('pid', u32, 0), ('ts', u64, 8)])
    """

    _fields_: ClassVar[list] = []
    _size: ClassVar[int] = 0
    _align: ClassVar[int] = 1

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        ann = cls.__dict__.get("__annotations__", {})
        if ann or "_fields_" not in cls.__dict__:
            cls._layout(list(ann.items()))

    @classmethod
    def _layout(cls, items, offsets=None, size=None):
        """Compute C layout; `offsets`/`size` override it (BTF gives them for decoded types)."""
        import sys

        mod = sys.modules.get(cls.__module__)
        fields, off, align = [], 0, 1
        for i, (name, t) in enumerate(items):
            if isinstance(t, str):  # `from __future__ import annotations`
                t = eval(t, vars(mod) if mod else {}, {})  # noqa: S307 - the user's own module
            t = resolve_type(t)
            if not hasattr(t, "_size"):
                raise TypeError(f"{cls.__name__}.{name}: {t!r} is not a pybpfc type")
            off = offsets[i] if offsets else _round_up(off, t._align)
            fields.append((name, t, off))
            off += t._size
            align = max(align, t._align)
        cls._fields_ = fields
        cls._align = align
        cls._size = size if size is not None else _round_up(off, align)

    def __init__(self, **kw):
        for name, t, _ in self._fields_:
            if name in kw:
                setattr(self, name, kw.pop(name))
            elif issubclass(t, IntType):
                setattr(self, name, 0)
            elif issubclass(t, Str):
                setattr(self, name, b"")
            elif issubclass(t, Array):
                setattr(self, name, t._unpack(bytes(t._size)))
            else:
                setattr(self, name, t())
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown field(s) {', '.join(kw)}")

    @classmethod
    def _pack(cls, value) -> bytes:
        buf = bytearray(cls._size)
        for name, t, off in cls._fields_:
            v = getattr(value, name) if not isinstance(value, dict) else value.get(name, 0)
            buf[off : off + t._size] = t._pack(v)
        return bytes(buf)

    @classmethod
    def _unpack(cls, data: bytes):
        obj = cls.__new__(cls)
        for name, t, off in cls._fields_:
            setattr(obj, name, t._unpack(data[off : off + t._size]))
        return obj

    def to_bytes(self) -> bytes:
        return self._pack(self)

    @classmethod
    def from_bytes(cls, data: bytes):
        if len(data) < cls._size:
            raise ValueError(f"{cls.__name__}: need {cls._size} bytes, got {len(data)}")
        return cls._unpack(data)

    def _asdict(self) -> dict:
        out = {}
        for name, _, _ in self._fields_:
            v = getattr(self, name)
            out[name] = v._asdict() if isinstance(v, Struct) else v
        return out

    def __eq__(self, other):
        if not isinstance(other, Struct):
            return NotImplemented
        return [f[0] for f in self._fields_] == [f[0] for f in other._fields_] and all(
            getattr(self, n) == getattr(other, n) for n, _, _ in self._fields_
        )

    def __hash__(self):
        return hash(self._pack(self))

    def __lt__(self, other):
        return self._pack(self) < other._pack(other)

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n, _, _ in self._fields_)
        return f"{type(self).__name__}({inner})"


def make_struct(name: str, fields, size=None, offsets=None):
    """Build a Struct subclass at run time (used when decoding types from BTF)."""
    cls = type(name, (Struct,), {"_fields_": []})
    cls._layout(list(fields), offsets=offsets, size=size)
    return cls


def sizeof(t) -> int:
    return resolve_type(t)._size


def pack(t, value) -> bytes:
    return resolve_type(t)._pack(value)


def unpack(t, data: bytes):
    return resolve_type(t)._unpack(data)

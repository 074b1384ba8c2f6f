from pybpfc import Array, Str, Struct, u8, u16, u32, u64, i32
from pybpfc.lang.types import make_struct


class Inner(Struct):
    a: u8
    b: u32


class Event(Struct):
    pid: u32
    ts: u64
    comm: Str[16]
    inner: Inner
    vals: Array[u16, 3]


def test_layout_follows_c():
    assert Inner._size == 8 and [f[2] for f in Inner._fields_] == [0, 4]
    assert [(n, o) for n, _, o in Event._fields_] == [("pid", 0), ("ts", 8), ("comm", 16), ("inner", 32), ("vals", 40)]
    assert Event._size == 48 and Event._align == 8


def test_roundtrip():
    e = Event(pid=7, ts=1 << 40, comm=b"bash", inner=Inner(a=1, b=2), vals=[1, 2, 3])
    b = e.to_bytes()
    assert len(b) == 48
    d = Event.from_bytes(b)
    assert d == e and d.comm == b"bash" and d.inner.b == 2 and d.vals == [1, 2, 3]


def test_int_wraps_like_c():
    assert u32(-1) == 0xFFFFFFFF
    assert i32(0x80000000) == -(1 << 31)
    assert u8(256) == 0


def test_make_struct_with_btf_offsets():
    S = make_struct("S", [("x", u32), ("y", u64)], offsets=[0, 8], size=16)
    assert S.from_bytes(bytes(range(16))).x == 0x03020100

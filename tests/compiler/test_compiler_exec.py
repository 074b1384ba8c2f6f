"""Language features checked by running compiled programs in the kernel (BPF_PROG_TEST_RUN)."""
from __future__ import annotations

import pytest

from compiler_helpers import needs_kernel, run_xdp

pytestmark = needs_kernel

# (body returning a value, expected return value) -- each compiled into an XDP program
CASES = [
    ("return 2 + 3 * 4", 14),
    ("x: u8 = 250\nx += 10\nreturn x", 4),                       # fixed width wraps
    ("a: i32 = -7\nreturn a // 2 + 100", 96),                     # floor division: -4
    ("a: i32 = -7\nreturn a % 3", 2),                             # Python modulo sign
    ("a: i32 = 7\nb: i32 = -2\nreturn a // b + 100", 96),          # -4
    ("a: i32 = 7\nb: i32 = -2\nreturn a % b + 100", 99),           # -1
    ("a: i64 = -8\nb: i64 = -3\nreturn a // b * 10 + a % b + 100", 118),  # 2, -2
    ("a: u32 = 17\nb: u32 = 5\nreturn a // b * 10 + a % b", 32),
    ("x: u32 = 0xF0\nreturn (x >> 4) | (1 << 8)", 0x10F),
    ("x: i32 = -16\nreturn (x >> 2) + 100", 96),                   # arithmetic shift
    ("x: u64 = 1\nreturn 1 if ~x == 0xFFFFFFFFFFFFFFFE else 0", 1),
    ("return min(7, 3, 9) * 10 + max(1, 4)", 34),
    ("a: u8 = 200\nb: i8 = -1\nc: u64 = 5\nd: i64 = -3\nreturn (min(a, b) + 10) * 100 + max(c, d) + min(c, d)", 902),
    ("a: i32 = -5\nreturn abs(a)", 5),
    ("a = 3\nb = 4\na, b = b, a\nreturn a * 10 + b", 43),
    ("x = 5\nreturn 1 if 3 < x <= 5 else 0", 1),
    ("x = 5\nreturn 1 if x > 2 and not x == 4 or x == 0 else 0", 1),
    ("x: u8 = 200\ny: i8 = -1\nreturn 1 if x > y else 0", 1),       # compared by value, as in Python
    ("x: u64 = 5\ny: i64 = -1\nreturn (x > y) + (y < x) * 2 + (x == y) * 4", 3),
    ("s = 0\nfor i in range(10):\n    s += i\nreturn s", 45),
    ("s = 0\nfor i in range(10, 0, -2):\n    s += i\nreturn s", 30),
    ("s = 0\nfor i in range(100):\n    if i == 7:\n        break\n    if i % 2 == 0:\n        continue\n    s += i\nreturn s", 9),
    ("n = 0\ni = 1\nwhile i < 1000:\n    i *= 2\n    n += 1\nreturn n", 10),
    ("x = 0\nif x:\n    return 1\nelif x == 0:\n    return 2\nelse:\n    return 3", 2),
    ("assert 2 + 2 == 4\nreturn u8(0x1234)", 0x34),
    ("return i64(u8(255)) + i64(i8(-1)) + 10", 264),
    ("return True + True", 2),
    ("return 2 ** 10", 1024),
    ("x: u32 = 7\nreturn x // -2 + 10", 6),                       # Python: -4
    ("return ord(\"a\") + ord(b\"b\")", 195),
]


@pytest.mark.parametrize("body,expected", CASES, ids=[c[0].replace("\n", "; ")[:50] for c in CASES])
def test_expression_results(tmp_path, body, expected):
    ret, _ = run_xdp(tmp_path, body)
    assert ret == expected


def test_packet_structs_and_arrays(tmp_path):
    prelude = """
class Hdr(Struct):
    a: u8
    b: u8
    c: u16
    d: u32
    arr: Array[u8, 4]
"""
    body = """
h = ctx.packet(Hdr, 4)
if h is None:
    return 0
return h.a + h.b * 256 + h.d + h.arr[3] + len(h.arr)
"""
    data = bytes(range(64))
    ret, _ = run_xdp(tmp_path, body, data, prelude)
    d = int.from_bytes(data[8:12], "little")
    assert ret == (data[4] + data[5] * 256 + d + data[15] + 4) & 0xFFFFFFFF


def test_packet_too_short_gives_none(tmp_path):
    prelude = "class Big(Struct):\n    x: Array[u8, 60]\n"
    body = "b = ctx.packet(Big, 10)\nif b is None:\n    return 7\nreturn 9\n"
    assert run_xdp(tmp_path, body, bytes(64), prelude)[0] == 7
    assert run_xdp(tmp_path, body, bytes(80), prelude)[0] == 9


def test_maps_update_lookup_delete_and_atomic_add(tmp_path):
    prelude = """
class Stats(Struct):
    packets: u64
    bytes: u64

counts = HashMap(u32, u64, max_entries=16)
stats = ArrayMap(u32, Stats, max_entries=2)
arr = PerCpuArray(u64, max_entries=4)
"""
    body = """
counts[1] += 5
counts[1] += 2
counts[2] = 40
counts.update(3, 30, BPF_NOEXIST)
counts[4] = 1
del counts[4]
counts.delete(3)
v = counts.get(2)
if v is None:
    return 1
s = stats.lookup(1)
if s is None:
    return 2
s.packets += 1
s.bytes += 100
arr[2] += 3
missing = counts.get(99, 123)
return v + missing + counts[1]
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 40 + 123 + 7
    assert dict(obj.maps.counts.items()) == {1: 7, 2: 40}
    assert obj.maps.stats[1].packets == 1 and obj.maps.stats[1].bytes == 100
    assert obj.maps.arr.sum(2) == 3


def test_get_copies_and_lookup_refers(tmp_path):
    prelude = "m = ArrayMap(u32, u64, max_entries=4)\n"  # array updates are in place
    body = """
m[1] = 10
c = m.get(1)
r = m.lookup(1)
if c is None or r is None:
    return 0
m[1] = 20
return c * 1000 + r
"""
    assert run_xdp(tmp_path, body, prelude=prelude)[0] == 10 * 1000 + 20


def test_str_compare_and_struct_copy(tmp_path):
    prelude = """
class Name(Struct):
    n: Str[8]
    id: u32

names = HashMap(u32, Name, max_entries=4)
"""
    body = """
a = Name(n=b"bash", id=3)
names[0] = a
r = names.lookup(0)
if r is None:
    return 0
score = 0
if r.n == b"bash":
    score += 1
if r.n != b"bas":
    score += 2
if r.n == b"bash1":
    score += 100
b = Name()
b.n = r.n
if b.n == a.n:
    score += 4
return score + r.id * 10
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 37
    assert obj.maps.names[0].n == b"bash"


def test_subprograms_and_globals(tmp_path):
    prelude = """
factor: Const[u64] = 3
total: Global[u64] = 0
hits: Global[u32] = 5

def scale(x: u64, y: u64) -> u64:
    return x * factor + y

def bump(n: u32) -> None:
    global hits
    hits += n
"""
    body = """
global total
total += scale(10, 2)
total += scale(1, 0)
bump(2)
return total
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 35
    assert obj.globals.total == 35 and obj.globals.hits == 7
    ret2, obj2 = run_xdp(tmp_path, body, prelude=prelude, consts={"factor": 10})
    assert ret2 == 112


def test_variable_index_is_clamped(tmp_path):
    prelude = "class A(Struct):\n    v: Array[u32, 4]\nm = ArrayMap(u32, A, max_entries=1)\n"
    body = """
r = m.lookup(0)
if r is None:
    return 0
for i in range(4):
    r.v[i] = i * 10
s = 0
for j in range(6):
    s += r.v[j]          # indexes 4 and 5 read 0
return s
"""
    assert run_xdp(tmp_path, body, prelude=prelude)[0] == 60


def test_histogram_record(tmp_path):
    prelude = "lat = Histogram(u64)\n"
    body = "lat.record(0)\nlat.record(1)\nlat.record(5)\nlat.record(7)\nlat.record(1 << 20)\nreturn 0\n"
    _, obj = run_xdp(tmp_path, body, prelude=prelude)
    h = [obj.maps.lat[i] for i in range(22)]
    assert h[0] == 1 and h[1] == 1 and h[3] == 2 and h[21] == 1 and sum(h) == 5


def test_queue_stack_bloom(tmp_path):
    prelude = "q = Queue(u32, max_entries=8)\nst = Stack(u32, max_entries=8)\nbf = BloomFilter(u32, max_entries=64)\n"
    body = """
q.push(1)
q.push(2)
st.push(1)
st.push(2)
bf.push(42)
a = q.pop()
b = st.pop()
if a is None or b is None:
    return 0
c = 1 if bf.contains(42) else 0
return a * 100 + b * 10 + c
"""
    assert run_xdp(tmp_path, body, prelude=prelude)[0] == 121


def test_socket_filter_load_byte(tmp_path):
    from compiler_helpers import load
    obj = load(tmp_path, """
@bpf.socket_filter
def f(skb) -> int:
    if bpf.load_byte(skb, 0) == 0x6F and bpf.load_half(skb, 1) == 0x6B20:
        return skb.len
    return 0
""")
    # test_run treats data as an Ethernet frame: the socket sees what follows the 14-byte header
    pkt = bytes(14) + b"ok " + bytes(60)
    assert obj.programs.f.test_run(pkt).retval == len(pkt) - 14
    assert obj.programs.f.test_run(bytes(14) + b"no " + bytes(60)).retval == 0


def test_arrays_of_structs_nested_and_bool_fields(tmp_path):
    prelude = """
class Point(Struct):
    x: i16
    y: i16
    ok: bool

class Shape(Struct):
    n: u8
    pts: Array[Point, 3]

shapes = ArrayMap(u32, Shape, max_entries=1)
"""
    body = """
s = shapes.lookup(0)
if s is None:
    return 0
for i in range(3):
    s.pts[i].x = i - 1
    s.pts[i].y = i * 10
    s.pts[i].ok = i != 1
s.n = len(s.pts)
total = 0
for i in range(3):
    if s.pts[i].ok:
        total += s.pts[i].x + s.pts[i].y
return total + 100
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 100 + (-1 + 0) + (1 + 20)
    sh = obj.maps.shapes[0]
    assert sh.n == 3 and [p.x for p in sh.pts] == [-1, 0, 1] and [p.ok for p in sh.pts] == [True, False, True]


def test_packet_variable_offset(tmp_path):
    body = """
first = ctx.packet(u8, 0)
if first is None:
    return 0
v = ctx.packet(u16, first)
if v is None:
    return 1
return v
"""
    data = bytes([10]) + bytes(9) + (0x1234).to_bytes(2, "little") + bytes(52)
    assert run_xdp(tmp_path, body, data)[0] == 0x1234
    assert run_xdp(tmp_path, body, bytes([200]) + bytes(63))[0] == 1


def test_ringbuf_output_and_discard_compile_and_run(tmp_path):
    prelude = """
class Ev(Struct):
    a: u32
    b: u64

rb = RingBuf(max_entries=4096)
"""
    body = """
rb.output(Ev(a=1, b=2))
e = rb.reserve(Ev)
if e is not None:
    e.a = 5
    rb.discard(e)
e2 = rb.reserve(Ev)
if e2 is None:
    return 0
e2.a = 7
rb.submit(e2)
return 1
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 1
    evs = obj.ringbuf("rb").poll(timeout=0.5)
    assert [(e.a, e.b) for e in evs] == [(1, 2), (7, 0)]


def test_struct_and_array_globals(tmp_path):
    prelude = """
class Config(Struct):
    limit: u32
    name: Str[8]

cfg: Const[Config] = Config(limit=5, name=b"web")
table: Global[Array[u16, 4]] = [1, 2, 3, 4]
"""
    body = """
global table
...
table[1] = table[0] + table[3]
if cfg.name == b"web":
    return cfg.limit * 100 + table[1]
return 0
"""
    ret, obj = run_xdp(tmp_path, body, prelude=prelude)
    assert ret == 505
    assert obj.globals.table == [1, 5, 3, 4]


def test_tail_call_through_prog_array(tmp_path):
    from compiler_helpers import load
    obj = load(tmp_path, """
jumps = ProgArray(max_entries=4)

@bpf.xdp
def entry(ctx) -> int:
    jumps.tail_call(ctx, 2)
    return 1          # only when slot 2 is empty

@bpf.xdp
def target(ctx) -> int:
    return 42
""")
    with obj:
        assert obj.programs.entry.test_run(bytes(64)).retval == 1
        obj.maps.jumps[2] = obj.programs.target
        assert obj.programs.entry.test_run(bytes(64)).retval == 42


@pytest.mark.parametrize("mcpu", ["v1", "v2", "v4"])
def test_other_cpu_versions_run(tmp_path, mcpu):
    prelude = "m = HashMap(u32, u64, max_entries=4)\n"
    body = """
a: i32 = -7
b: i32 = 2
m[1] += 5
m[1] += 1
r = m.get(1, 0)
x: u32 = 0xFFFFFFF0
y = x >> 4
return (a // b + 100) * 1000 + r * 10 + (1 if y == 0x0FFFFFFF else 0)
"""
    ret, _ = run_xdp(tmp_path, body, prelude=prelude, mcpu=mcpu)
    assert ret == 96 * 1000 + 60 + 1


def test_loop_with_run_time_bound(tmp_path):
    prelude = "cfg = ArrayMap(u32, u32, max_entries=1)\n"
    body = """
n = cfg[0]
s = 0
for i in range(min(n, 16)):     # a bound the verifier can see
    s += i
return s
"""
    _, obj = run_xdp(tmp_path, body, prelude=prelude)
    obj.maps.cfg[0] = 5
    assert obj.programs.prog.test_run(bytes(64)).retval == 10
    obj.maps.cfg[0] = 1000
    assert obj.programs.prog.test_run(bytes(64)).retval == sum(range(16))



def test_optional_integer_truthiness(tmp_path):
    prelude = "m = HashMap(u32, u64, max_entries=4)\n"
    body = """
m[1] = 0
m[2] = 7
a = m.get(1)      # present but 0: false, like Python
b = m.get(2)
c = m.get(3)      # None: false
r = 0
if a:
    r += 1
if b:
    r += b * 10
if not c:
    r += 100
return r
"""
    assert run_xdp(tmp_path, body, prelude=prelude)[0] == 170


def test_lpm_trie_longest_prefix(tmp_path):
    prelude = """
class Key(Struct):
    prefixlen: u32
    addr: u32          # network order, as read from a packet

routes = LpmTrie(Key, u32, max_entries=16)
"""
    body = """
k = Key(prefixlen=32, addr=0x0302000A)     # 10.0.2.3
return routes.get(k, 0)
"""
    _, obj = run_xdp(tmp_path, body, prelude=prelude)
    obj.maps.routes[{"prefixlen": 8, "addr": 0x0000000A}] = 1      # 10.0.0.0/8
    obj.maps.routes[{"prefixlen": 16, "addr": 0x0000000A}] = 2     # 10.0.0.0/16
    obj.maps.routes[{"prefixlen": 24, "addr": 0x0002000A}] = 3     # 10.0.2.0/24
    assert obj.programs.prog.test_run(bytes(64)).retval == 3
    del obj.maps.routes[{"prefixlen": 24, "addr": 0x0002000A}]
    assert obj.programs.prog.test_run(bytes(64)).retval == 2

"""Map container operations on both backends: every key/value kind round-trips, and the C
container path (the backend's container_ops) behaves exactly like the generic Python methods
of pybpfc.collection.Map, results and errors alike."""
import operator
import os
import subprocess
import sys
import textwrap

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.collection import Map
from pybpfc.elf.spec import CollectionSpec, MapSpec
from pybpfc.errors import Error
from pybpfc.lang.types import Array, Str, Struct, i8, i16, i32, i64, u8, u16, u32, u64

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Pair(Struct):
    a: u32
    b: i16


class Rec(Struct):
    id: u64
    name: Str[8]
    vals: Array[u16, 3]


def _backend(name):
    if name == "kernel":
        if os.geteuid() != 0:
            pytest.skip("kernel backend needs root")
        from pybpfc.backends.kernel import kernel_available

        if not kernel_available():
            pytest.skip("kernel eBPF is not available here")
    return pybpfc.get_backend(name)


@pytest.fixture(params=["userspace", "kernel"])
def backend(request):
    return _backend(request.param)


def load(backend, key_type, value_type, key_size=None, value_size=None, mtype=U.BPF_MAP_TYPE_HASH, n=64):
    ks = key_size if key_size is not None else key_type._size
    vs = value_size if value_size is not None else value_type._size
    ms = MapSpec(name="m", type=mtype, key_size=ks, value_size=vs, max_entries=n,
                 key_type=key_type, value_type=value_type)
    return pybpfc.load(CollectionSpec(maps={"m": ms}), backend=backend)


def outcome(fn, *a):
    try:
        return ("ok", fn(*a))
    except (Error, KeyError, TypeError, ValueError) as e:
        return (type(e).__name__, str(e))


def same(m, key, value):
    """Every container operation gives the same result through the fast and generic paths."""
    assert outcome(operator.setitem, m, key, value) == outcome(Map.__setitem__, m, key, value)
    got = outcome(operator.getitem, m, key)
    assert got == outcome(Map.__getitem__, m, key)
    assert outcome(m.get, key, "d") == outcome(Map.get, m, key, "d")
    assert outcome(operator.contains, m, key) == outcome(Map.__contains__, m, key)
    return got


def fast_active(m):
    from pybpfc.backends.kernel.fast import mod as kf
    from pybpfc.backends.userspace.fast import mod as uf

    return type(m).__getitem__ is not Map.__getitem__ and (kf or uf) is not None


INT_TYPES = [u8, u16, u32, u64, i8, i16, i32, i64]


@pytest.mark.parametrize("t", INT_TYPES, ids=lambda t: t.__name__)
def test_int_keys_and_values_of_every_width(backend, t):
    lo, hi = t._min(), t._max()
    with load(backend, t, t) as c:
        m = c.maps.m
        for k, v in [(0, 0), (1, hi), (hi, lo), (lo, 1), (lo + 1, hi - 1), (-1, -1)]:
            # -1 for an unsigned type wraps, as the type's own _pack does
            got = same(m, k, v)
            assert got == ("ok", t(v))
            assert m.raw.lookup(t._pack(k)) == t._pack(v)
        assert sorted(m.items()) == sorted((t(k), m[k]) for k in m.keys())
        # one past the range wraps like the type does (the C path hands such ints to Python)
        same(m, hi + 1, hi + 1)
        assert m[t(hi + 1)] == t(hi + 1)
        assert outcome(operator.setitem, m, 1, "x") == outcome(Map.__setitem__, m, 1, "x")
        assert outcome(operator.setitem, m, 1, "x")[0] == "Error"
        assert "map 'm': value: cannot encode 'x'" in outcome(operator.setitem, m, 1, "x")[1]


def test_missing_keys_and_delete(backend):
    with load(backend, u32, u64) as c:
        m = c.maps.m
        for get, delete, contains in ((operator.getitem, operator.delitem, operator.contains),
                                      (Map.__getitem__, Map.__delitem__, Map.__contains__)):
            with pytest.raises(KeyError) as e:
                get(m, 7)
            assert e.value.args == (7,)
            with pytest.raises(KeyError):
                delete(m, 7)
            assert contains(m, 7) is False
        # not a u32: the codec says so before any lookup, on both paths
        assert outcome(operator.getitem, m, (1, 2)) == outcome(Map.__getitem__, m, (1, 2))
        assert outcome(operator.getitem, m, (1, 2))[1].startswith("map 'm': key: cannot encode (1, 2) as u32")
        assert m.get(7) is None and m.get(7, 5) == 5
        assert m.get(7, default=6) == 6 and m.get(k=7) is None  # keywords as the Python method takes them
        with pytest.raises(TypeError):
            m.get(7, nope=1)
        m[7] = 70
        del m[7]
        assert 7 not in m
        m[8] = 80
        Map.__delitem__(m, 8)
        assert 8 not in m and len(m) == 0


def test_struct_str_array_sides(backend):
    with load(backend, Pair, Rec) as c:
        m = c.maps.m
        k = Pair(a=4000000000, b=-3)
        v = Rec(id=2**64 - 1, name=b"abc", vals=[1, 2, 65535])
        got = same(m, k, v)
        assert got[0] == "ok"
        r = got[1]
        assert (r.id, r.name, r.vals) == (2**64 - 1, b"abc", [1, 2, 65535])
        assert [(kk.a, kk.b) for kk in m.keys()] == [(4000000000, -3)]
        # an already-encoded key is accepted as is
        assert m[Pair._pack(k)].name == b"abc"
        bad = outcome(operator.setitem, m, k, Rec(id=1, name=b"far too long", vals=[]))
        assert bad[0] == "Error" and "map 'm': value: cannot encode" in bad[1]
    with load(backend, Str[6], Array[i8, 4]) as c:
        m = c.maps.m
        assert same(m, "comm", [-1, 2, -128]) == ("ok", [-1, 2, -128, 0])
        assert same(m, b"x", [5]) == ("ok", [5, 0, 0, 0])
        assert dict(m.items()) == {b"comm": [-1, 2, -128, 0], b"x": [5, 0, 0, 0]}


@pytest.mark.parametrize("size", [1, 2, 4, 8, 3, 16])
def test_raw_bytes_sides(backend, size):
    with load(backend, None, None, key_size=size, value_size=size) as c:
        m = c.maps.m
        b = bytes(range(1, size + 1))
        got = same(m, b, b)
        if size in (1, 2, 4, 8):  # untyped ints read back as unsigned ints
            assert got == ("ok", int.from_bytes(b, "little"))
            assert same(m, 5, 2**(8 * size) - 1) == ("ok", 2**(8 * size) - 1)
            assert m[5] == m[(5).to_bytes(size, "little")]
        else:
            assert got == ("ok", b)
        short = outcome(operator.setitem, m, b[:-1] if size > 1 else b"", b)
        assert short == outcome(Map.__setitem__, m, b[:-1] if size > 1 else b"", b)
        assert short[0] == "Error" and "map 'm'" in short[1]


@pytest.mark.parametrize("mtype", [U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY])
@pytest.mark.parametrize("vt", [u32, i64, Pair, None], ids=lambda t: getattr(t, "__name__", "raw"))
def test_percpu_values(backend, mtype, vt):
    with load(backend, u32, vt, value_size=None if vt else 4, mtype=mtype, n=4) as c:
        m = c.maps.m
        ncpu = backend.num_possible_cpus()
        if vt is Pair:
            vals = [Pair(a=i, b=-i) for i in range(ncpu)]
            got = same(m, 1, vals)[1]
            assert [(p.a, p.b) for p in got] == [(i, -i) for i in range(ncpu)]
            return
        vals = [(-i if vt is i64 else i * 1000) for i in range(ncpu)]
        assert same(m, 1, vals) == ("ok", vals)
        assert same(m, 2, 7) == ("ok", [7] * ncpu)  # one value: every CPU
        assert m.sum(1) == sum(vals)
        assert dict(m.items())[1] == vals
        if vt is u32:
            assert same(m, 3, [-1] * ncpu) == ("ok", [2**32 - 1] * ncpu)  # wraps like u32
        wrong = outcome(operator.setitem, m, 1, [1] * (ncpu + 1))
        assert wrong == ("Error", f"map 'm': per-CPU value needs {ncpu} entries, got {ncpu + 1}")


def test_fast_path_is_used_and_survives_close(backend):
    c = load(backend, u32, u64)
    m = c.maps.m
    fast = fast_active(m)
    if os.environ.get("PYBPFC_NO_FAST") != "1":
        assert fast, "the backend's C container operations should be installed"
    m[1] = 2
    assert list(m.values()) == [2]
    c.close()
    with pytest.raises(Error):
        m[1]
    with pytest.raises(Error):
        m[1] = 3


def test_generic_path_without_fast():
    code = textwrap.dedent("""
        import pybpfc
        from pybpfc.collection import Map
        from pybpfc.elf.spec import CollectionSpec, MapSpec
        from pybpfc.lang.types import u16, i32
        ms = MapSpec(name="m", type=1, key_size=2, value_size=4, max_entries=8, key_type=u16, value_type=i32)
        with pybpfc.load(CollectionSpec(maps={"m": ms}), backend="userspace") as c:
            m = c.maps.m
            assert type(m).__getitem__ is Map.__getitem__
            m[65535] = -5
            m[-1] = m[65535] - 1
            assert dict(m.items()) == {65535: -6} and 65535 in m and m.get(3, 9) == 9
            del m[65535]
            print("ok")
    """)
    env = dict(os.environ, PYBPFC_NO_FAST="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_array_items_and_width_mismatch(backend):
    with load(backend, u32, i16, mtype=U.BPF_MAP_TYPE_ARRAY, n=4) as c:
        m = c.maps.m
        assert same(m, 2, -300) == ("ok", -300)
        assert dict(m.items()) == {0: 0, 1: 0, 2: -300, 3: 0}
        assert list(m.values()) == [0, 0, -300, 0]
        bad = same(m, 4, 1)  # past max_entries: the backend's error, the same on both paths
        assert bad[0] == "Error" or bad[0] == "KeyError"
    # a declared int narrower than the map's value (a data section is as large as its data):
    # the C path leaves it to the codecs and the raw map, whatever they make of it
    ms = MapSpec(name="m", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=4, max_entries=1,
                 key_type=u32, value_type=u32, data=bytes(16))
    with pybpfc.load(CollectionSpec(maps={"m": ms}), backend=backend) as c:
        m = c.maps.m
        assert m.raw.value_size == 16
        same(m, 0, 5)
        same(m, 0, bytes(range(16)))


def test_raw_batches(backend):
    with load(backend, u32, u64, n=8) as c:
        raw = c.maps.m.raw
        pairs = [(u32._pack(i), u64._pack(i * 3)) for i in range(5)]
        raw.update_batch(pairs)
        assert sorted(raw.lookup_batch()) == sorted(pairs)
        raw.update_batch(tuple((k, u64._pack(9)) for k, _ in pairs[:2]))  # not a list: same result
        assert dict(c.maps.m.items()) == {0: 9, 1: 9, 2: 6, 3: 9, 4: 12}
        # a bad pair anywhere: an error naming the map, and nothing of the batch written
        with pytest.raises(Error, match="map 'm'"):
            raw.update_batch([(u32._pack(6), u64._pack(1)), (u32._pack(7), b"short")])
        assert 6 not in c.maps.m
        with pytest.raises(Error, match="map 'm'"):
            raw.update_batch([(u32._pack(i), u64._pack(i)) for i in range(9)])  # one more than fits


def test_user_subclass_keeps_its_methods(backend):
    class Doubling(Map):
        def __getitem__(self, k):
            return 2 * super().__getitem__(k)

    with load(backend, u32, u64) as c:
        m = Doubling(c.maps.m.raw, c.maps.m.spec, backend)
        assert type(m) is Doubling
        m[3] = 21
        assert m[3] == 42 and 3 in m and c.maps.m[3] == 21

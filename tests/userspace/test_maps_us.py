"""Userspace maps through the Backend interface: semantics of every type (kernel-like error
codes and flags), and concurrent updates from several threads and processes."""
import os
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

from pybpfc import uapi as U
from pybpfc.backends.userspace import UserspaceBackend, userspace_available
from pybpfc.backends.userspace.runtime import lib
from pybpfc.elf.spec import MapSpec
from pybpfc.errors import LoadError, NotSupportedError

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = "/work/shared/bench/vm"


@pytest.fixture
def be():
    b = UserspaceBackend(jit=False)
    yield b
    b.close()


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def test_hash_flags_errors_and_iteration(be):
    m = be.create_map(MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 8, 4))
    assert m.lookup(u32(1)) is None
    m.update(u32(1), u64(10))
    with pytest.raises(LoadError, match=r"map 'h': update failed: File exists"):
        m.update(u32(1), u64(11), U.BPF_NOEXIST)
    with pytest.raises(LoadError, match=r"map 'h': update failed: No such file"):
        m.update(u32(2), u64(11), U.BPF_EXIST)
    for k in (2, 3, 4):
        m.update(u32(k), u64(k * 10))
    with pytest.raises(LoadError, match=r"map 'h': update failed: Argument list too long"):
        m.update(u32(5), u64(50))  # full, like the kernel's E2BIG
    keys, k = [], m.next_key(None)
    while k is not None:
        keys.append(struct.unpack("<I", k)[0])
        k = m.next_key(k)
    assert sorted(keys) == [1, 2, 3, 4]
    assert m.next_key(u32(99)) is not None  # unknown key: iteration restarts like the kernel
    assert dict(m.lookup_batch(batch_size=3)) == {u32(k): u64(k * 10) for k in (1, 2, 3, 4)}
    assert m.delete(u32(3)) and not m.delete(u32(3))
    m.update(u32(5), u64(50))  # the freed slot is reused
    assert m.lookup(u32(5)) == u64(50)
    with pytest.raises(LoadError, match=r"map 'h': key is 2 bytes, the map's key size is 4"):
        m.lookup(b"\0\0")


def test_hash_keys_of_every_size_differ_in_each_byte(be):
    """Keys that differ in one byte only are different entries, for every key size (the hash
    reads the last n % 8 bytes with sized loads, 4- and 8-byte keys compare without memcmp)."""
    for size in range(1, 18):
        m = be.create_map(MapSpec(f"h{size}", U.BPF_MAP_TYPE_HASH, size, 8, 2 * size + 1))
        keys = [bytes(size)] + [bytes(size)[:i] + b"\x01" + bytes(size)[i + 1:]
                                for i in range(size)]
        keys += [bytes(size)[:i] + b"\x80" + bytes(size)[i + 1:] for i in range(size)]
        for n, k in enumerate(keys):
            m.update(k, u64(n))
        assert [m.lookup(k) for k in keys] == [u64(n) for n in range(len(keys))], size
        assert m.lookup(b"\x02" * size) is None
        m.close()


def test_array_and_percpu_layout(be):
    a = be.create_map(MapSpec("a", U.BPF_MAP_TYPE_ARRAY, 4, 4, 3))
    assert a.lookup(u32(2)) == bytes(4) and a.lookup(u32(3)) is None
    a.update(u32(2), u32(7))
    with pytest.raises(LoadError, match=r"File exists"):
        a.update(u32(0), u32(1), U.BPF_NOEXIST)
    with pytest.raises(LoadError, match=r"Argument list too long"):
        a.update(u32(3), u32(1))
    assert [struct.unpack("<I", k)[0] for k, _ in a.lookup_batch()] == [0, 1, 2]
    n = be.num_possible_cpus()
    pc = be.create_map(MapSpec("pc", U.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2))
    assert pc.value_size == 8 * n  # each CPU's 4-byte value rounded up to 8, as the kernel
    vals = b"".join(u32(100 + i).ljust(8, b"\0") for i in range(n))
    pc.update(u32(1), vals)
    assert pc.lookup(u32(1)) == vals
    ph = be.create_map(MapSpec("ph", U.BPF_MAP_TYPE_PERCPU_HASH, 8, 12, 4))
    ph.update(u64(5), b"\x01" * 16 * n)
    assert ph.lookup(u64(5)) == b"\x01" * 16 * n


def test_possible_cpus_like_the_kernel(be):
    """Per-CPU maps have a slot for every possible CPU: highest id in
    /sys/devices/system/cpu/possible + 1 (its "0-1" once read as 0 and -1, giving 1)."""
    import re
    with open("/sys/devices/system/cpu/possible") as f:
        want = max(int(x) for x in re.findall(r"\d+", f.read())) + 1
    assert be.num_possible_cpus() == want


def test_lru_evicts_least_recently_used(be):
    m = be.create_map(MapSpec("lru", U.BPF_MAP_TYPE_LRU_HASH, 4, 4, 3))
    for k in (1, 2, 3):
        m.update(u32(k), u32(k))
    m.update(u32(1), u32(11))  # 2 is now the oldest
    m.update(u32(4), u32(4))   # full: evicts 2 instead of failing
    assert m.lookup(u32(2)) is None
    assert {struct.unpack("<I", k)[0] for k, _ in m.lookup_batch()} == {1, 3, 4}


def test_queue_stack_bloom(be):
    q = be.create_map(MapSpec("q", U.BPF_MAP_TYPE_QUEUE, 0, 4, 2))
    s = be.create_map(MapSpec("s", U.BPF_MAP_TYPE_STACK, 0, 4, 2))
    for m in (q, s):
        m.push(u32(1))
        m.push(u32(2))
        with pytest.raises(LoadError, match=r"push failed: Argument list too long"):
            m.push(u32(3))
        m.push(u32(3), U.BPF_EXIST)  # full + BPF_EXIST: the oldest goes
    assert [q.pop(), q.pop(), q.pop()] == [u32(2), u32(3), None]
    assert s.peek() == u32(3)
    assert [s.pop(), s.pop(), s.pop()] == [u32(3), u32(2), None]
    b = be.create_map(MapSpec("b", U.BPF_MAP_TYPE_BLOOM_FILTER, 0, 8, 100))
    for i in range(50):
        b.push(u64(i))
    assert all(b.contains_bloom(u64(i)) for i in range(50))
    assert sum(b.contains_bloom(u64(i)) for i in range(1000, 2000)) < 100  # few false positives


def test_lpm_longest_prefix(be):
    m = be.create_map(MapSpec("lpm", U.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 8, flags=U.BPF_F_NO_PREALLOC))

    def key(plen, a, b, c, d):
        return struct.pack("<I4B", plen, a, b, c, d)

    m.update(key(8, 10, 0, 0, 0), u32(8))
    m.update(key(24, 10, 1, 2, 99), u32(24))  # host bits are ignored
    m.update(key(0, 0, 0, 0, 0), u32(0))
    assert m.lookup(key(32, 10, 1, 2, 3)) == u32(24)
    assert m.lookup(key(32, 10, 9, 2, 3)) == u32(8)
    assert m.lookup(key(32, 11, 0, 0, 0)) == u32(0)
    assert m.delete(key(24, 10, 1, 2, 0))
    assert m.lookup(key(32, 10, 1, 2, 3)) == u32(8)
    with pytest.raises(LoadError, match=r"Invalid argument"):
        m.update(key(33, 0, 0, 0, 0), u32(1))


def test_unsupported_map_type_is_named(be):
    with pytest.raises(NotSupportedError, match=r"map 'sm': type sockmap is not supported by the userspace runtime"):
        be.create_map(MapSpec("sm", U.BPF_MAP_TYPE_SOCKMAP, 4, 4, 4))
    with pytest.raises(LoadError, match=r"map 'rb': ring buffer size 5000 must be a power of two"):
        be.create_map(MapSpec("rb", U.BPF_MAP_TYPE_RINGBUF, 0, 0, 5000))


def test_threads_insert_without_losing_entries(be):
    m = be.create_map(MapSpec("t", U.BPF_MAP_TYPE_HASH, 4, 4, 4000))

    def work(base):
        for i in range(1000):
            m.update(u32(base + i), u32(i))

    ts = [threading.Thread(target=work, args=(b * 1000,)) for b in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(dict(m.lookup_batch())) == 4000


CHILD = """
import sys, types
from pybpfc.backends.userspace import Store, UserspaceProgram
st = Store.open(sys.argv[1])
spec = types.SimpleNamespace(name="xdp_hash_lookup", type=6)
p = UserspaceProgram(st, int(sys.argv[2]), spec)
if sys.argv[4] == "jit":
    assert p.use_jit()  # the loader's JIT code, from the store, mapped executable here
pkt = open(sys.argv[5], "rb").read()
for _ in range(int(sys.argv[3])):
    assert p.test_run(pkt).retval == 100
"""


@pytest.mark.parametrize("engine", ["interpreter", "jit"])
def test_two_processes_atomic_adds_on_one_hash_map(engine):
    """Two processes run the same program (lookup + atomic add on 100 keys) against one map
    in the store: every key ends at exactly warm-up + 2 * runs."""
    if not os.path.exists(f"{BENCH}/bench.bpf.o"):
        pytest.skip("shared benchmark object not present")
    import pybpfc

    be = UserspaceBackend(jit=(engine == "jit"))
    with pybpfc.load(f"{BENCH}/bench.bpf.o", backend=be) as obj:
        p = obj.programs.xdp_hash_lookup
        if engine == "jit" and p.raw.engine != "jit":
            pytest.skip("JIT unavailable")
        pkt = f"{BENCH}/pkt64.bin"
        p.test_run(open(pkt, "rb").read())  # warm-up: inserts every key with 1
        runs = 400
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, be.store.path, str(p.raw.id), str(runs),
                                   engine, pkt], cwd=ROOT, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for pr in procs:
            _, err = pr.communicate(timeout=120)
            assert pr.returncode == 0, err
        vals = dict(obj.maps.hmap.items())
        assert len(vals) == 100
        assert set(vals.values()) == {1 + 2 * runs}


def test_two_processes_insert_distinct_keys():
    be = UserspaceBackend(jit=False)
    m = be.create_map(MapSpec("shared_h", U.BPF_MAP_TYPE_HASH, 4, 4, 4000))
    code = textwrap.dedent("""
        import sys, struct
        from pybpfc.backends.userspace import Store
        from pybpfc.backends.userspace.runtime import lib
        st = Store.open(sys.argv[1])
        m = lib().pbs_map(st.handle, st.map_id("shared_h"))
        base = int(sys.argv[2])
        for i in range(2000):
            assert lib().pbs_map_update_user(m, struct.pack("<I", base + i), struct.pack("<I", i), 0) == 0
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, be.store.path, str(b)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for b in (0, 2000)]
    for pr in procs:
        _, err = pr.communicate(timeout=60)
        assert pr.returncode == 0, err
    got = {struct.unpack("<I", k)[0]: struct.unpack("<I", v)[0] for k, v in m.lookup_batch()}
    assert got == {k: k % 2000 for k in range(4000)}
    m.close()
    be.close()


def test_closed_map_raises_instead_of_touching_freed_memory(be):
    m = be.create_map(MapSpec("gone", U.BPF_MAP_TYPE_HASH, 4, 4, 4))
    m.update(u32(1), u32(2))
    m.close()
    for op in (lambda: m.lookup(u32(1)), lambda: m.update(u32(1), u32(3)), lambda: m.delete(u32(1)),
               lambda: m.next_key(None), lambda: list(m.lookup_batch())):
        with pytest.raises(Exception, match=r"map 'gone': map is closed"):
            op()


def test_ringbuf_fileno_becomes_readable_when_another_process_writes(be):
    import select

    from pybpfc.backends.userspace.maps import UserspaceRingBuffer

    m = be.create_map(MapSpec("rbx", U.BPF_MAP_TYPE_RINGBUF, 0, 0, 8192))
    rb = UserspaceRingBuffer(m, perf=False)
    try:
        fd = rb.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        code = textwrap.dedent("""
            import sys
            from pybpfc.backends.userspace import Store
            from pybpfc.backends.userspace.runtime import lib
            st = Store.open(sys.argv[1])
            m = lib().pbs_map(st.handle, st.map_id("rbx"))
            for i in range(3):
                assert lib().pbs_ringbuf_output(m, -1, b"rec%d" % i, 4) == 0
        """)
        subprocess.run([sys.executable, "-c", code, be.store.path], cwd=ROOT, check=True, timeout=60)
        assert select.select([fd], [], [], 30)[0] == [fd]
        assert rb.poll(0) == [b"rec0", b"rec1", b"rec2"]
    finally:
        rb.close()


def test_lock_free_lookups_stay_correct_while_another_process_churns(be):
    """Lookups take no lock (a sequence counter makes them retry around writers): keys that
    are never deleted must be found, with their value, while another process inserts and
    deletes other keys in the same buckets."""
    m = be.create_map(MapSpec("churn", U.BPF_MAP_TYPE_HASH, 4, 8, 512))
    for k in range(256):
        m.update(u32(k), u64(k * 3))
    code = textwrap.dedent("""
        import sys, struct
        from pybpfc.backends.userspace import Store
        from pybpfc.backends.userspace.runtime import lib
        st = Store.open(sys.argv[1])
        m = lib().pbs_map(st.handle, st.map_id("churn"))
        keys = [struct.pack("<I", 256 + k) for k in range(256)]
        v = bytes(8)
        for _ in range(300):
            for k in keys:
                assert lib().pbs_map_update_user(m, k, v, 0) == 0
            for k in keys:
                assert lib().pbs_map_delete(m, k) == 0
    """)
    child = subprocess.Popen([sys.executable, "-c", code, be.store.path], cwd=ROOT, stderr=subprocess.PIPE,
                             text=True)
    rounds = 0
    while child.poll() is None or rounds == 0:
        for k in range(256):
            assert m.lookup(u32(k)) == u64(k * 3)
        rounds += 1
    assert child.returncode == 0, child.stderr.read()
    assert len(dict(m.lookup_batch())) == 256


def test_unclosed_maps_are_collected():
    import gc
    import weakref

    be = UserspaceBackend(jit=False)
    m = be.create_map(MapSpec("tmp", U.BPF_MAP_TYPE_HASH, 4, 4, 4))
    m.update(u32(1), u32(1))
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None  # the fast path's back reference does not keep it alive


def test_map_of_maps_lookup_gives_the_inner_map_to_helpers():
    """kinds.bpf.o: a hash of maps statically holding inner_a at key 2; the program looks up key
    0 and counts in custom_var when it finds an inner map. Same effects as on the kernel."""
    import pybpfc

    obj_path = os.path.join(ROOT, "tests", "objects", "kinds.bpf.o")
    xdp = bytes(12) + b"\x08\x00" + bytes(50)

    def run(backend):
        with pybpfc.load(obj_path, backend=backend) as c:
            outer, inner = c.maps.outer, c.maps.inner_a
            assert outer.raw.lookup(u32(2)) is not None  # the static initialiser
            c.maps.legacy_hash.raw.update(u32(0), u64(1))
            c.programs.frag_prog.test_run(xdp)
            before = c.globals.custom_var
            outer.raw.update(u32(0), inner.raw.fd_bytes())
            c.programs.frag_prog.test_run(xdp)
            after = c.globals.custom_var
            assert not outer.raw.delete(u32(7))
            return before, after, c.maps.legacy_hash.raw.lookup(u32(0))

    got = run(UserspaceBackend(jit=False))
    assert got == (5, 6, u64(1 + 10 + 10))
    with pytest.raises(LoadError, match=r"map 'outer': update failed: Bad file descriptor"):
        with pybpfc.load(obj_path, backend=UserspaceBackend(jit=False)) as c:
            c.maps.outer.raw.update(u32(1), u32(250))  # no map with that id
    if os.geteuid() == 0:
        from pybpfc.backends.kernel import kernel_available

        if kernel_available():
            assert run("kernel") == got


def test_large_lru_keeps_recently_used_entries(be):
    n = 4096
    m = be.create_map(MapSpec("biglru", U.BPF_MAP_TYPE_LRU_HASH, 4, 4, n))
    for k in range(n):
        m.update(u32(k), u32(k))
    hot = list(range(0, n, 16))
    for k in hot:
        m.update(u32(k), u32(k + 1))          # recently used (user-space lookups do not count,
                                              # like the kernel's syscall lookups)
    for k in range(n, n + n // 4):             # a quarter of the map in new keys
        m.update(u32(k), u32(k))
    kept = sum(m.lookup(u32(k)) == u32(k + 1) for k in hot)
    assert len(dict(m.lookup_batch())) == n
    assert kept >= len(hot) * 0.9              # sampled eviction still spares recent entries


def test_threads_running_programs_add_atomically():
    """Four threads run the same program at once (the GIL is released while it runs), each
    through its own program handle: lookup + atomic add on 100 keys loses nothing."""
    if not os.path.exists(f"{BENCH}/bench.bpf.o"):
        pytest.skip("shared benchmark object not present")
    import types

    import pybpfc
    from pybpfc.backends.userspace import UserspaceProgram

    be = UserspaceBackend(jit=False)
    with pybpfc.load(f"{BENCH}/bench.bpf.o", backend=be) as obj:
        p = obj.programs.xdp_hash_lookup
        pkt = open(f"{BENCH}/pkt64.bin", "rb").read()
        p.test_run(pkt)  # warm-up: every key inserted with 1
        spec = types.SimpleNamespace(name="xdp_hash_lookup", type=U.BPF_PROG_TYPE_XDP)
        runs, errors = 300, []

        def work():
            h = UserspaceProgram(be.store, p.raw.id, spec)
            try:
                for _ in range(runs):
                    if h.test_run(pkt).retval != 100:
                        errors.append("miss")
            finally:
                h.close()

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors
        assert set(dict(obj.maps.hmap.items()).values()) == {1 + 4 * runs}

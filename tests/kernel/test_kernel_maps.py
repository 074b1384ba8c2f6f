"""Every map type the language offers, created in the kernel and used from Python and from a
program (run with BPF_PROG_TEST_RUN)."""
import os
import struct
import uuid

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.elf.spec import MapSpec
from pybpfc.errors import LoadError
from pybpfc.lang.types import Str, Struct, u32, u64

from kernel_helpers import collection, kernel_or_skip, prog

PKT = bytes(64)


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()


# Look up key 0 in map `m`, add 1 to the u64 value (create it with 1 when absent).
INC_KEY0 = """
mov %r6, 0
stxw [%r10-4], %r6
lddw %r1, map:{m}
mov %r2, %r10
add %r2, -4
call 1
jeq %r0, 0, create
ldxdw %r1, [%r0]
add %r1, 1
stxdw [%r0], %r1
ja done
create:
mov %r1, 1
stxdw [%r10-16], %r1
lddw %r1, map:{m}
mov %r2, %r10
add %r2, -4
mov %r3, %r10
add %r3, -16
mov %r4, 0
call 2
done:
mov %r0, 2
exit
"""


def load_inc(mtype, **kw):
    ms = MapSpec(name="m", type=mtype, key_size=4, value_size=8, max_entries=kw.pop("n", 8),
                 key_type=u32, value_type=u64, **kw)
    return pybpfc.load(collection([ms], [prog("inc", INC_KEY0.format(m="m"))]), backend="kernel")


@pytest.mark.parametrize("mtype", [U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_LRU_HASH])
def test_counter_from_program_and_python(mtype):
    with load_inc(mtype) as c:
        m, p = c.maps.m, c.programs.inc
        for _ in range(3):
            assert p.test_run(PKT).retval == U.XDP_PASS
        assert m[0] == 3
        m[0] = 40
        p.test_run(PKT, repeat=2)
        assert m[0] == 42
        m[5] = 7
        assert dict(m.items())[5] == 7 and 5 in m
        if mtype == U.BPF_MAP_TYPE_ARRAY:
            assert len(m) == 8 and sorted(m.keys()) == list(range(8))
        else:
            assert len(m) == 2 and sorted(m) == [0, 5]
            del m[5]
            assert 5 not in m and m.get(5, "none") == "none"
            with pytest.raises(KeyError):
                del m[5]
        m.clear()
        assert m.get(0, 0) == 0


@pytest.mark.parametrize("mtype", [U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY,
                                   U.BPF_MAP_TYPE_LRU_PERCPU_HASH])
def test_percpu_values_are_lists(mtype):
    with load_inc(mtype) as c:
        m = c.maps.m
        c.programs.inc.test_run(PKT, repeat=5)
        v = m[0]
        assert isinstance(v, list) and len(v) == c.backend.num_possible_cpus()
        assert sum(v) == 5 == m.sum(0)
        m[1] = list(range(len(v)))
        assert m[1] == list(range(len(v)))
        items = dict(m.items())  # batch lookup of per-CPU values
        assert items[0] == v and items[1] == list(range(len(v)))


def test_lru_evicts():
    with load_inc(U.BPF_MAP_TYPE_LRU_HASH, n=16) as c:
        m = c.maps.m
        for i in range(200):
            m[i] = i
        assert 0 < len(m) <= 64 and 199 in m  # LRU keeps recent keys, drops old ones


def test_lpm_trie_longest_prefix():
    class Key(Struct):
        prefixlen: u32
        addr: Str[4]

    ms = MapSpec(name="routes", type=U.BPF_MAP_TYPE_LPM_TRIE, key_size=8, value_size=4,
                 max_entries=16, key_type=Key, value_type=u32)
    with pybpfc.load(collection([ms]), backend="kernel") as c:
        m = c.maps.routes
        m[Key(prefixlen=8, addr=bytes([10, 0, 0, 0]))] = 1
        m[Key(prefixlen=24, addr=bytes([10, 1, 2, 0]))] = 2
        assert m[Key(prefixlen=32, addr=bytes([10, 1, 2, 3]))] == 2
        assert m[Key(prefixlen=32, addr=bytes([10, 9, 9, 9]))] == 1
        assert Key(prefixlen=32, addr=bytes([11, 0, 0, 1])) not in m


PUSH_3 = """
mov %r6, 0
push:
stxw [%r10-4], %r6
lddw %r1, map:q
mov %r2, %r10
add %r2, -4
mov %r3, 0
call 87
add %r6, 1
jlt %r6, 3, push
mov %r0, 2
exit
"""


@pytest.mark.parametrize("mtype,order", [(U.BPF_MAP_TYPE_QUEUE, [0, 1, 2, 100]),
                                         (U.BPF_MAP_TYPE_STACK, [100, 2, 1, 0])])
def test_queue_and_stack(mtype, order):
    ms = MapSpec(name="q", type=mtype, key_size=0, value_size=4, max_entries=8, value_type=u32)
    with pybpfc.load(collection([ms], [prog("push3", PUSH_3)]), backend="kernel") as c:
        q = c.maps.q
        c.programs.push3.test_run(PKT)
        q.push(100)
        if mtype == U.BPF_MAP_TYPE_QUEUE:
            assert q.peek() == 0
        else:
            assert q.peek() == 100
        assert [q.pop() for _ in range(4)] == order
        assert q.pop() is None
        with pytest.raises(pybpfc.Error, match=r"map 'q': len: queue, stack and bloom filter maps have no keys"):
            len(q)


BLOOM_CHECK = """
mov %r1, 77
stxw [%r10-4], %r1
lddw %r1, map:bloom
mov %r2, %r10
add %r2, -4
call 89
mov %r1, 1
jeq %r0, 0, out
mov %r1, 2
out:
mov %r0, %r1
exit
"""


def test_bloom_filter():
    ms = MapSpec(name="bloom", type=U.BPF_MAP_TYPE_BLOOM_FILTER, key_size=0, value_size=4,
                 max_entries=64, value_type=u32, map_extra=3)
    with pybpfc.load(collection([ms], [prog("check", BLOOM_CHECK)]), backend="kernel") as c:
        b = c.maps.bloom
        assert c.programs.check.test_run(PKT).retval == 2   # absent
        b.push(77)
        assert 77 in b
        assert c.programs.check.test_run(PKT).retval == 1   # maybe present


TAIL = """
mov %r6, %r1
lddw %r2, map:jmp
mov %r3, 1
call 12
mov %r0, 0
exit
"""


def test_prog_array_tail_call_by_name():
    ms = MapSpec(name="jmp", type=U.BPF_MAP_TYPE_PROG_ARRAY, key_size=4, value_size=4,
                 max_entries=4, contents=[(1, "target")])
    progs = [prog("entry", TAIL), prog("target", "mov %r0, 3\nexit")]
    with pybpfc.load(collection([ms], progs), backend="kernel") as c:
        assert c.programs.entry.test_run(PKT).retval == U.XDP_TX
        del c.maps.jmp[1]
        assert c.programs.entry.test_run(PKT).retval == U.XDP_ABORTED
        c.maps.jmp[1] = c.programs.target  # a Program object stored from Python
        assert c.programs.entry.test_run(PKT).retval == U.XDP_TX


OUTER_READ = """
mov %r1, 0
stxw [%r10-4], %r1
lddw %r1, map:outer
mov %r2, %r10
add %r2, -4
call 1
jeq %r0, 0, miss
mov %r1, %r0
mov %r2, %r10
add %r2, -4
call 1
jeq %r0, 0, miss
ldxw %r0, [%r0]
exit
miss:
mov %r0, 99
exit
"""


@pytest.mark.parametrize("otype", [U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS])
def test_map_of_maps(otype):
    inner = MapSpec(name="inner", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=4,
                    max_entries=4, key_type=u32, value_type=u32)
    outer = MapSpec(name="outer", type=otype, key_size=4, value_size=4, max_entries=4,
                    inner_map=MapSpec(name="inner_tmpl", type=U.BPF_MAP_TYPE_ARRAY, key_size=4,
                                      value_size=4, max_entries=4),
                    contents=[(0, "inner")])
    other = MapSpec(name="other", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=4,
                    max_entries=4, key_type=u32, value_type=u32)
    with pybpfc.load(collection([inner, outer, other], [prog("read", OUTER_READ)]), backend="kernel") as c:
        c.maps.inner[0] = 2
        assert c.programs.read.test_run(PKT).retval == 2
        c.maps.other[0] = 5
        c.maps.outer[0] = c.maps.other  # a Map object stored from Python
        assert c.programs.read.test_run(PKT).retval == 5


def test_stack_trace_and_perf_array_create():
    st = MapSpec(name="stacks", type=U.BPF_MAP_TYPE_STACK_TRACE, key_size=4, value_size=8 * 127,
                 max_entries=64)
    pe = MapSpec(name="events", type=U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, key_size=4, value_size=4,
                 max_entries=0)
    with pybpfc.load(collection([st, pe]), backend="kernel") as c:
        assert list(c.maps.stacks.keys()) == []
        info = c.maps.events.raw.info()
        assert info.max_entries == c.backend.num_possible_cpus()


def test_batch_items_and_update_batch():
    ms = MapSpec(name="big", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=8,
                 max_entries=4096, key_type=u32, value_type=u64)
    with pybpfc.load(collection([ms]), backend="kernel") as c:
        m = c.maps.big
        m.raw.update_batch([(struct.pack("<I", i), struct.pack("<Q", i * 3)) for i in range(3000)])
        got = dict(m.items())
        assert got == {i: i * 3 for i in range(3000)}
        assert m.raw._batch_ok is True  # this kernel has BPF_MAP_LOOKUP_BATCH for hash maps
        assert len(m) == 3000
        keys = [struct.pack("<I", i) for i in (5, 6, 99999, 7)]  # one absent key in the middle
        assert m.raw.delete_batch(keys) == 3
        assert len(m) == 2997 and 5 not in m and 8 in m
        m.clear()
        assert len(m) == 0


def test_bad_key_size_and_missing_map_are_clear_errors():
    ms = MapSpec(name="h", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=4, max_entries=4)
    with pybpfc.load(collection([ms]), backend="kernel") as c:
        with pytest.raises(pybpfc.Error, match=r"map 'h': key: expected 4 bytes, got 2"):
            c.maps.h[b"ab"] = 1
    with load_inc(U.BPF_MAP_TYPE_HASH) as c:
        with pytest.raises(pybpfc.Error, match=r"map 'm': key: cannot encode 'abc' as u32"):
            c.maps.m["abc"] = 1
        with pytest.raises(pybpfc.Error, match=r"map 'm': value: cannot encode None as u64"):
            c.maps.m[1] = None
    p = prog("p", "lddw %r1, map:nope\nmov %r0, 0\nexit")
    with pytest.raises(LoadError, match=r"prog 'p': references map 'nope'"):
        pybpfc.load(collection([], [p]), backend="kernel")
    bad = MapSpec(name="rb", type=U.BPF_MAP_TYPE_RINGBUF, key_size=0, value_size=0, max_entries=5000)
    with pytest.raises(LoadError, match=r"map 'rb': ring buffer size 5000 must be a power of two"):
        pybpfc.load(collection([bad]), backend="kernel")


READ_GLOBALS = """
lddw %r1, map_value:.rodata+4
ldxw %r2, [%r1]
lddw %r1, map_value:.bss+0
ldxw %r3, [%r1]
add %r3, %r2
stxw [%r1], %r3
mov %r0, %r3
exit
"""


def _globals_spec():
    ro = MapSpec(name=".rodata", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=8,
                 max_entries=1, data=struct.pack("<II", 1, 5), readonly=True, section=".rodata",
                 variables={"first": (0, 4, u32), "step": (4, 4, u32)})
    bss = MapSpec(name=".bss", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=4,
                  max_entries=1, data=bytes(4), section=".bss", variables={"total": (0, 4, u32)})
    return collection([ro, bss], [prog("acc", READ_GLOBALS)])


def test_global_data_and_consts():
    with pybpfc.load(_globals_spec(), backend="kernel") as c:
        # .bss is mapped into this process: globals are read and written in place
        bss, ro = c.map(".bss").raw.memory(), c.map(".rodata").raw.memory()
        assert bss is not None and not bss.readonly and ro is not None and ro.readonly
        assert bytes(ro) == struct.pack("<II", 1, 5)
        assert c.programs.acc.test_run(PKT).retval == 5
        assert struct.unpack("<I", bss[:4])[0] == 5  # the program's write, seen without a syscall
        assert c.programs.acc.test_run(PKT).retval == 10
        assert c.globals.total == 10 and c.globals.step == 5
        c.globals.total = 100
        assert c.programs.acc.test_run(PKT).retval == 105
        with pytest.raises(pybpfc.Error, match="step is a constant"):
            c.globals.step = 1
        with pytest.raises(pybpfc.Error, match=r"map '.bss': cannot set total to 'x'"):
            c.globals.total = "x"
        # .rodata is frozen: not even the raw map can be written from user space
        with pytest.raises(LoadError):
            c.maps[".rodata"] if False else c.map(".rodata").raw.update(b"\0" * 4, bytes(8))
    with pybpfc.load(_globals_spec(), backend="kernel", consts={"step": 7}) as c:
        assert c.programs.acc.test_run(PKT).retval == 7


def test_pinning_by_name_reuses_map():
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs is not mounted at /sys/fs/bpf")
    from pybpfc.backends.kernel import KernelBackend

    root = f"/sys/fs/bpf/pybpfc_kmaps_{uuid.uuid4().hex[:8]}"
    os.mkdir(root)
    try:
        ms = MapSpec(name="shared", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=4,
                     max_entries=8, key_type=u32, value_type=u32, pinning=1)
        with pybpfc.load(collection([ms]), backend=KernelBackend(pin_root=root)) as c1:
            c1.maps.shared[1] = 11
            assert os.path.exists(f"{root}/shared")
            with pybpfc.load(collection([ms]), backend=KernelBackend(pin_root=root)) as c2:
                assert c2.maps.shared[1] == 11
            c1.maps.shared.pin(f"{root}/by_hand")  # explicit pin of a live map
            from pybpfc.backends.kernel import syscall as sc

            fd = sc.obj_get(f"{root}/by_hand")
            assert sc.map_info(fd).id == c1.maps.shared.raw.info().id
            os.close(fd)
        other = MapSpec(name="shared", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=8,
                        max_entries=8, pinning=1)
        with pytest.raises(LoadError, match=r"map 'shared': pinned map at .* is incompatible \(value size 4 != 8\)"):
            pybpfc.load(collection([other]), backend=KernelBackend(pin_root=root))
    finally:
        for f in os.listdir(root):
            os.unlink(os.path.join(root, f))
        os.rmdir(root)


def test_stack_trace_from_program():
    from pybpfc.lang.types import Array

    st = MapSpec(name="stacks", type=U.BPF_MAP_TYPE_STACK_TRACE, key_size=4, value_size=8 * 16,
                 max_entries=16, key_type=u32, value_type=Array[u64, 16])
    # raw_tp: return bpf_get_stackid(ctx, &stacks, 0) (the kernel stack of the test_run call)
    p = prog("st", "lddw %r2, map:stacks\nmov %r3, 0\ncall 27\nexit",
             type=U.BPF_PROG_TYPE_RAW_TRACEPOINT, section="raw_tp/x", kind="raw_tracepoint")
    with pybpfc.load(collection([st], [p]), backend="kernel") as c:
        sid = c.programs.st.test_run(ctx=bytes(8)).retval
        if sid >= 1 << 31:
            pytest.skip(f"bpf_get_stackid failed here (errno {(1 << 32) - sid})")
        ips = c.maps.stacks[sid]
        assert ips[0] >= 0xffff800000000000  # kernel text addresses
        assert list(c.maps.stacks.keys()) == [sid]


def test_map_from_several_threads():
    import threading

    with load_inc(U.BPF_MAP_TYPE_HASH, n=4096) as c:
        m, errors = c.maps.m, []

        def work(t):
            try:
                for i in range(500):
                    k = t * 1000 + i
                    m[k] = k * 3
                    assert m[k] == k * 3
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ths = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert not errors
        assert dict(m.items()) == {t * 1000 + i: (t * 1000 + i) * 3 for t in range(4) for i in range(500)}

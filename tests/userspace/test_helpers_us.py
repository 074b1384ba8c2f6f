"""Helpers of the userspace runtime, each run from a small program in the runtime (interpreter
and JIT) with its effect checked in maps, trace output or the return value."""
import ctypes
import errno
import os
import struct

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.asm import assemble
from pybpfc.backends.kernel.tracefs import parse_trace_line
from pybpfc.backends.userspace import UserspaceBackend, userspace_available
from pybpfc.elf.spec import CollectionSpec, MapSpec, ProgramSpec, Relocation
from pybpfc.errors import LoadError

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(params=["interpreter", "jit"])
def engine(request):
    return request.param


def relocations(insns: bytes, maps) -> list:
    """Relocations for the `lddw %rN, map_fd(I)` / `map_value(I, OFF)` slots of a program, I
    being the position in `maps` (so the loader's own preparation is what gets tested)."""
    out = []
    for slot in range(len(insns) // 8):
        op, regs = insns[slot * 8], insns[slot * 8 + 1]
        if op == 0x18 and (regs >> 4) in (1, 2):
            imm, addend = struct.unpack_from("<i", insns, slot * 8 + 4)[0], struct.unpack_from("<i", insns, slot * 8 + 12)[0]
            kind = "map" if regs >> 4 == 1 else "map_value"
            out.append(Relocation(slot, kind, maps[imm].name, addend if kind == "map_value" else 0))
    return out


def load(asm: str, maps=(), ptype=U.BPF_PROG_TYPE_TRACEPOINT, engine="interpreter", name="p"):
    insns = b"".join(i.encode() for i in assemble(asm))
    spec = CollectionSpec()
    for m in maps:
        spec.maps[m.name] = m
    spec.programs[name] = ProgramSpec(name, "tracepoint/x/y", ptype, insns=insns,
                                      relocations=relocations(insns, list(maps)))
    obj = pybpfc.load(spec, backend=UserspaceBackend(jit=engine == "jit"))
    prog = getattr(obj.programs, name)
    if engine == "jit" and prog.raw.engine != "jit":
        obj.close()
        pytest.skip("JIT unavailable")
    return obj, prog


def s64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def test_probe_read_bad_address_is_an_error_not_a_fault(engine):
    obj, p = load("""
        stdw [%r10-8], 0x55
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, 16
        call 4
        ldxdw %r2, [%r10-8]
        jeq %r2, 0, +2
        mov %r0, 1
        exit
        exit
    """, engine=engine)
    with obj:
        # -EFAULT, and the destination was zeroed (else 1), as the kernel does
        assert s64(p.test_run(ctx=bytes(8)).retval) == -errno.EFAULT


def test_probe_read_user_str_copies_a_string(engine):
    src = ctypes.create_string_buffer(b"hello pybpfc")
    vals = MapSpec("out", U.BPF_MAP_TYPE_ARRAY, 4, 16, 1)
    obj, p = load("""
        ldxdw %r3, [%r1+0]
        mov %r1, %r10
        add %r1, -16
        mov %r2, 16
        call 114
        mov %r6, %r0
        stw [%r10-20], 0
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -20
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 2
        mov %r0, %r6
        exit
    """, maps=[vals], engine=engine)
    with obj:
        r = p.test_run(ctx=struct.pack("<Q", ctypes.addressof(src)))
        assert r.retval == len(b"hello pybpfc") + 1  # with the NUL, as the kernel counts
        assert obj.maps.out[0] == b"hello pybpfc\0\0\0\0"


def test_trace_printk_lines_readable_from_python(engine):
    obj, p = load("""
        lddw %r6, 0x0064252069682121
        stxdw [%r10-8], %r6
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, 42
        call 6
        exit
    """, engine=engine)
    with obj:
        # the format is "!!hi %d" + NUL in little-endian order
        p.test_run(ctx=bytes(8))
        lines = list(obj.backend.trace_pipe_lines(0))
        assert len(lines) == 1
        task, msg = parse_trace_line(lines[0])
        assert msg == "!!hi 42"
        assert task.endswith(f"-{os.getpid()}") or "-" in task


def test_strncmp_against_read_only_data(engine):
    ro = MapSpec(".rodata", U.BPF_MAP_TYPE_ARRAY, 4, 8, 1, data=b"abcd\0\0\0\0", readonly=True)
    obj, p = load("""
        stdw [%r10-8], 0x0000000064636261
        mov %r1, %r10
        add %r1, -8
        mov %r2, 5
        lddw %r3, map_value(0, 0)
        call 182
        mov %r6, %r0
        stdw [%r10-8], 0x0000000065636261
        mov %r1, %r10
        add %r1, -8
        mov %r2, 5
        lddw %r3, map_value(0, 0)
        call 182
        lsh %r6, 8
        and %r0, 0xff
        or %r0, %r6
        exit
    """, maps=[ro], engine=engine)
    with obj:
        assert p.test_run(ctx=bytes(8)).retval == 0x01  # equal, then "abce" > "abcd"


def test_identity_time_and_random_helpers(engine):
    out = MapSpec("out", U.BPF_MAP_TYPE_ARRAY, 4, 8, 8)
    asm = ""
    for slot, helper in enumerate([14, 15, 5, 5, 7, 7, 125, 8]):
        asm += f"""
        call {helper}
        stxdw [%r10-16], %r0
        stw [%r10-4], {slot}
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -4
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 2
        """
    asm += "mov %r0, 0\nexit\n"
    obj, p = load(asm, maps=[out], engine=engine)
    with obj:
        p.test_run(ctx=bytes(8))
        v = [obj.maps.out[i] for i in range(8)]
        assert v[0] >> 32 == os.getpid()
        assert v[1] == (os.getgid() << 32) | os.getuid()
        assert 0 < v[2] <= v[3]  # CLOCK_MONOTONIC, like bpf_ktime_get_ns
        assert v[4] < 1 << 32 and v[5] < 1 << 32 and v[4] != v[5]
        assert v[6] >= v[3]  # boot time includes suspend: never behind monotonic
        assert v[7] < os.cpu_count()


def test_queue_push_pop_from_a_program(engine):
    q = MapSpec("q", U.BPF_MAP_TYPE_QUEUE, 0, 4, 4)
    obj, p = load("""
        ldxw %r6, [%r1+0]
        stxw [%r10-4], %r6
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -4
        mov %r3, 0
        call 87
        exit
    """, maps=[q], engine=engine)
    with obj:
        for v in (5, 6, 7):
            assert p.test_run(ctx=struct.pack("<Q", v)).retval == 0
        assert [obj.maps.q.pop() for _ in range(4)] == [5, 6, 7, None]


def test_unsupported_helper_refused_at_load_by_name():
    with pytest.raises(LoadError, match=r"prog 'p': helper bpf_skb_store_bytes \(id 9\) is not supported "
                                        r"by the userspace runtime"):
        load("call 9\nexit")


def test_tail_call_and_bpf_loop_in_clang_object(engine):
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend=UserspaceBackend(jit=engine == "jit")) as c:
        # jmp_init's static initialiser: index 1 holds tail_target
        assert dict(c.maps.jmp_init.items()) == {1: c.programs.tail_target.raw.id}
        c.maps.jmp[0] = c.programs.tail_target.raw.id
        assert c.programs.on_malloc_ret.test_run(ctx=bytes(168)).retval == 0
        assert c.maps.hits[7] == 3  # tail_target ran (bump(7) adds `scale`)
        del c.maps.jmp[0]
        c.programs.on_malloc_ret.test_run(ctx=bytes(168))
        assert c.maps.hits[7] == 3  # empty slot: the tail call falls through
        c.programs.tc_count.test_run(bytes(12) + b"\x08\x00" + bytes(50))
        assert c.maps.hits[45 & 7] == 3  # bpf_loop callback summed 0..9


def test_attach_cookie_reaches_the_program(engine):
    from pybpfc.backends.userspace.runtime import ffi, lib

    obj, p = load("call 174\nexit", engine=engine)
    with obj:
        res = ffi().new("struct pbs_run_result *")
        r0 = lib().pbs_prog_run(obj.backend.store.handle, p.raw.id, 0, 0, ffi().NULL, 0, 0xC00C1E, res)
        assert (res.status, r0) == (0, 0xC00C1E)


def test_func_ip_is_what_the_agent_passes(engine):
    from pybpfc.backends.userspace.runtime import ffi, lib

    obj, p = load("call 173\nexit", engine=engine)
    with obj:
        res = ffi().new("struct pbs_run_result *")
        r0 = lib().pbs_prog_run_ip(obj.backend.store.handle, p.raw.id, 0, 0, ffi().NULL, 0, 0, 0x401000, res)
        assert (res.status, r0) == (0, 0x401000)
        assert p.test_run(ctx=bytes(8)).retval == 0  # no probe: 0


def test_ringbuf_discard_and_query(engine):
    rb = MapSpec("rb", U.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
    obj, p = load("""
        lddw %r1, map_fd(0)
        mov %r2, 8
        mov %r3, 0
        call 131
        jeq %r0, 0, fail
        stdw [%r0+0], 1
        mov %r1, %r0
        mov %r2, 0
        call 133
        lddw %r1, map_fd(0)
        mov %r2, 8
        mov %r3, 0
        call 131
        jeq %r0, 0, fail
        stdw [%r0+0], 2
        mov %r1, %r0
        mov %r2, 0
        call 132
        lddw %r1, map_fd(0)
        mov %r2, 0
        call 134
        mov %r6, %r0
        lddw %r1, map_fd(0)
        mov %r2, 1
        call 134
        lsh %r0, 16
        or %r0, %r6
        exit
    fail:
        mov %r0, 0
        exit
    """, maps=[rb], engine=engine)
    with obj:
        reader = obj.ringbuf("rb")
        r0 = p.test_run(ctx=bytes(8)).retval
        assert r0 & 0xFFFF == 32          # two 16-byte records (header + 8) not yet consumed
        assert r0 >> 16 == 4096           # BPF_RB_RING_SIZE
        assert reader.poll(0) == [struct.pack("<Q", 2)]  # the discarded one is skipped


def test_perf_buffer_counts_lost_records(engine):
    pa = MapSpec("pa", U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0)
    big = MapSpec("big", U.BPF_MAP_TYPE_ARRAY, 4, 16000, 1)
    obj, p = load("""
        mov %r6, %r1
        stw [%r10-4], 0
        lddw %r1, map_fd(1)
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, +7
        mov %r4, %r0
        mov %r1, %r6
        lddw %r2, map_fd(0)
        lddw %r3, 0xffffffff
        mov %r5, 16000
        call 25
        exit
    """, maps=[pa, big], engine=engine)
    with obj:
        reader = obj.perfbuf("pa")
        rets = [p.test_run(ctx=bytes(8)).retval for _ in range(6)]
        got = reader.poll(0)
        assert len(got) + reader.lost == 6
        assert reader.lost >= 2            # 64 KiB per CPU holds at most 4 such records
        assert all(len(g) == 16000 for g in got)
        assert rets.count(0) == len(got)   # the others returned an error, like the kernel


def test_for_each_map_elem_and_callbacks_in_clang_object(engine):
    """linking.bpf.o: bpf_for_each_map_elem over an array with a callback calling a subprogram,
    bpf_loop, a global subprogram and a static function in the program's section."""
    pkt = bytes(12) + b"\x08\x00" + bytes(50)
    want = (3 * (1 + 2 + 3 + 4) * 100 + 10 + 1000) + len(pkt) * 100000

    def run(backend):
        with pybpfc.load(f"{HERE}/../objects/linking.bpf.o", backend=backend) as c:
            return c.programs.link_all.test_run(pkt).retval, dict(c.maps.vals.items())

    got = run(UserspaceBackend(jit=engine == "jit"))
    assert got == (want, {0: 1, 1: 2, 2: 3, 3: 4})
    if os.geteuid() == 0:
        from pybpfc.backends.kernel import kernel_available

        if kernel_available():
            assert run("kernel") == got


def test_tail_call_chain_stops_at_the_kernel_limit(engine):
    """A program that tail-calls itself: 1 run + 33 tail calls, as the kernel allows; the chain
    is a loop in the runtime, not native recursion."""
    text = """
        mov %r6, %r1
        stw [%r10-4], 0
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, out
        mov %r1, 1
        lock add [%r0+0], %r1
        mov %r1, %r6
        lddw %r2, map_fd(1)
        mov %r3, 0
        call 12
    out:
        mov %r0, 2
        exit
    """
    def run(backend):
        insns = b"".join(i.encode() for i in assemble(text))
        maps = [MapSpec("count", U.BPF_MAP_TYPE_ARRAY, 4, 8, 1), MapSpec("jt", U.BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1)]
        spec = CollectionSpec()
        for m in maps:
            spec.maps[m.name] = m
        spec.programs["selfcall"] = ProgramSpec("selfcall", "xdp", U.BPF_PROG_TYPE_XDP, insns=insns,
                                                relocations=relocations(insns, maps))
        with pybpfc.load(spec, backend=backend) as c:
            c.maps.jt[0] = c.programs.selfcall.raw.fd_bytes()
            r = c.programs.selfcall.test_run(bytes(64)).retval
            return r, c.maps.count[0]

    got = run(UserspaceBackend(jit=engine == "jit"))
    assert got == (2, 34)
    if os.geteuid() == 0:
        from pybpfc.backends.kernel import kernel_available

        if kernel_available():
            assert run("kernel") == got


def test_repeated_test_run_restores_the_callers_maps_after_a_tail_call(engine):
    """test_run(repeat=N) sets a program up once and runs it N times; a tail call in between
    installs the target's maps (its map 0 is another map), so each run must get the caller's
    back, start with a fresh tail-call count and the caller's regions only."""
    bump = """
        stw [%r10-4], 0
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, out
        mov %r1, 1
        lock add [%r0+0], %r1
    out:
    """
    caller = bump + """
        mov %r1, %r6
        lddw %r2, map_fd(1)
        mov %r3, 0
        call 12
        mov %r0, 1
        exit
    """
    target = bump + "\nmov %r0, 2\nexit\n"

    def run(backend):
        a, b = (MapSpec(n, U.BPF_MAP_TYPE_ARRAY, 4, 8, 1) for n in "ab")
        jt = MapSpec("jt", U.BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1)
        spec = CollectionSpec()
        for m in (a, b, jt):
            spec.maps[m.name] = m
        for name, text, maps in (("caller", "mov %r6, %r1\n" + caller, [a, jt]), ("target", target, [b])):
            insns = b"".join(i.encode() for i in assemble(text))
            spec.programs[name] = ProgramSpec(name, "xdp", U.BPF_PROG_TYPE_XDP, insns=insns,
                                              relocations=relocations(insns, maps))
        with pybpfc.load(spec, backend=backend) as c:
            c.maps.jt[0] = c.programs.target.raw.fd_bytes()
            r = c.programs.caller.test_run(bytes(64), repeat=5).retval
            return r, c.maps.a[0], c.maps.b[0]

    got = run(UserspaceBackend(jit=engine == "jit"))
    assert got == (2, 5, 5)
    if os.geteuid() == 0:
        from pybpfc.backends.kernel import kernel_available

        if kernel_available():
            assert run("kernel") == got

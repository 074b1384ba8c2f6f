"""UserspaceBackend end to end: clang and pybpfc objects load and give the same results and
map contents as on the kernel; ring/perf buffers; engine selection; unsafe programs are
refused or stopped while the test process survives."""
import os
import struct
import threading

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.asm import assemble
from pybpfc.backends.base import NoopLink
from pybpfc.backends.userspace import UserspaceBackend, userspace_available
from pybpfc.elf.spec import CollectionSpec, MapSpec, ProgramSpec, Relocation
from pybpfc.errors import LoadError, NotSupportedError, RuntimeFault, VerifierError

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BENCH = "/work/shared/bench/vm"
ETH_IP_UDP = bytes(12) + b"\x08\x00" + bytes(50)


def kernel_ok() -> bool:
    if os.geteuid() != 0:
        return False
    from pybpfc.backends.kernel import kernel_available

    return kernel_available()


def pkt(n):
    with open(f"{BENCH}/pkt{n}.bin", "rb") as f:
        return f.read()


@pytest.fixture(scope="module", params=["interpreter", "jit"])
def bench(request):
    if not os.path.exists(f"{BENCH}/bench.bpf.o"):
        pytest.skip("shared benchmark object not present")
    with pybpfc.load(f"{BENCH}/bench.bpf.o", backend=UserspaceBackend(jit=request.param == "jit")) as c:
        if request.param == "jit" and c.programs.xdp_pass.raw.engine != "jit":
            pytest.skip("JIT unavailable")
        yield c


@pytest.mark.parametrize("name,size,expected", [
    ("xdp_pass", 64, 2), ("xdp_loop_sum", 64, 41748), ("xdp_bpf_loop", 64, 41748),
    ("xdp_hash_update", 64, 100), ("xdp_memcpy", 64, 9835), ("xdp_memcpy", 1024, 59051),
    ("xdp_parse_csum", 64, 231), ("xdp_parse_csum", 1024, 55175),
])
def test_bench_expected_results(bench, name, size, expected):
    r = getattr(bench.programs, name).test_run(pkt(size), repeat=3)
    assert r.retval == expected
    assert r.data == pkt(size)
    assert r.duration_ns > 0


def test_bench_hash_lookup_after_warmup_and_globals(bench):
    p = bench.programs.xdp_hash_lookup
    p.test_run(pkt(64))
    assert p.test_run(pkt(64)).retval == 100
    assert len(bench.maps.hmap) >= 100
    assert bench.globals.loop_n == 1000
    bench.globals.loop_n = 10
    try:
        assert bench.programs.xdp_loop_sum.test_run(pkt(64)).retval == 55
        assert bench.programs.xdp_bpf_loop.test_run(pkt(64)).retval == 55
    finally:
        bench.globals.loop_n = 1000


def run_progs_object(backend):
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend=backend) as c:
        rets = [c.programs.xdp_pass.test_run(ETH_IP_UDP).retval,
                c.programs.xdp_drop.test_run(ETH_IP_UDP).retval,
                c.programs.tc_count.test_run(ETH_IP_UDP).retval,
                c.programs.sock_filter.test_run(ETH_IP_UDP).retval,
                c.programs.cg_egress.test_run(ETH_IP_UDP).retval]
        return rets, dict(c.maps.hits.items())


def test_progs_object_every_type_like_the_kernel():
    rets, hits = run_progs_object(UserspaceBackend(jit=False))
    assert rets == [U.XDP_PASS, U.XDP_DROP, 0, len(ETH_IP_UDP) - 14, 1]
    assert hits == {0: 3, 1: 3, 2: 3, 3: 0, 4: 3, 5: 6, 6: 0, 7: 0}
    assert run_progs_object(UserspaceBackend(jit=True)) == (rets, hits)
    if kernel_ok():
        assert run_progs_object("kernel") == (rets, hits)


def run_maps_object(backend, n=5):
    pid = os.getpid()
    with pybpfc.load(f"{HERE}/../objects/maps.bpf.o", backend=backend, consts={"target_pid": pid}) as c:
        rb, pb = c.ringbuf("events"), c.perfbuf("perf_events")
        if backend == "kernel":
            c.programs.on_getpid.attach()
            for _ in range(n):
                os.getpid()
            c.close_links = [l.close() for l in c.links]
        else:
            for _ in range(n):
                c.programs.on_getpid.test_run(ctx=bytes(64))
        events = rb.poll(1)
        perf = []
        while len(perf) < n:
            got = pb.poll(1)
            if not got:
                break
            perf += got
        return {
            "counters": c.maps.counters[0],
            "globals": (c.globals.total, c.globals.drops, c.globals.seen, c.globals.last_event.pid),
            "events": [(e.pid, e.comm) for e in events],
            "queue": [c.maps.queue.pop() for _ in range(n + 1)],
            "flows": [k.saddr for k in c.maps.flows.keys()],
            "lru": dict(c.maps.lru.items()),
            "pcpu": c.maps.pcpu.sum(0),
            "perf": [struct.unpack_from("<I", e)[0] for e in perf],
        }


def test_maps_object_helpers_and_globals_like_the_kernel():
    pid = os.getpid()
    got = run_maps_object(UserspaceBackend(jit=False))
    comm = open("/proc/self/comm").read().strip()
    assert got["counters"] == 5 and got["pcpu"] == 5
    assert got["globals"] == (7 + 5 * 100, 5, [[1, 2, 3, 4][i] + (5 if i == pid & 3 else 0) for i in range(4)], pid)
    assert got["events"] == [(pid, comm.encode()[:15])] * 5
    assert got["queue"] == [pid] * 5 + [None]
    assert got["flows"] == [pid] and got["lru"] == {pid: 0}
    assert got["perf"] == [pid] * 5
    jit = UserspaceBackend(jit=True)
    assert run_maps_object(jit) == got  # JIT (or its interpreter fallback) agrees
    if kernel_ok():
        k = run_maps_object("kernel")
        assert k == got


def test_pybpfc_compiled_example_like_the_kernel():
    def run(backend):
        with pybpfc.load(f"{ROOT}/examples/xdp_proto.py", backend=backend) as c:
            ip_udp = bytearray(ETH_IP_UDP)
            ip_udp[14 + 9] = 17
            for _ in range(3):
                assert c.programs.count_proto.test_run(bytes(ip_udp)).retval == U.XDP_PASS
            assert c.programs.count_proto.test_run(bytes(64)).retval == U.XDP_PASS  # not IPv4
            return {k: sum(v) for k, v in c.maps.counts.items() if sum(v)}

    try:
        got = run(UserspaceBackend(jit=False))
    except ImportError as e:
        pytest.skip(f"compiler not available: {e}")
    assert got == {17: 3}
    if kernel_ok():
        assert run("kernel") == got


def test_ringbuf_reader_wakes_on_a_record_from_another_thread():
    spec = CollectionSpec()
    spec.maps["rb"] = MapSpec("rb", U.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
    insns = b"".join(i.encode() for i in assemble("""
        stdw [%r10-8], 0x1234
        lddw %r1, map_fd(0)
        mov %r2, %r10
        add %r2, -8
        mov %r3, 8
        mov %r4, 0
        call 130
        exit
    """))
    spec.programs["out"] = ProgramSpec("out", "tracepoint/a/b", U.BPF_PROG_TYPE_TRACEPOINT, insns=insns,
                                       relocations=[Relocation(1, "map", "rb")])
    with pybpfc.load(spec, backend=UserspaceBackend(jit=False)) as c:
        rb = c.ringbuf("rb")
        assert rb.poll(0) == []
        t = threading.Timer(0.2, lambda: c.programs.out.test_run(ctx=bytes(8)))
        t.start()
        got = rb.poll(30)  # returns when the record arrives, long before the timeout
        t.join()
        assert got == [struct.pack("<Q", 0x1234)]
        # wrap-around: many more records than fit at once, read as they come, in order
        seen = []
        for i in range(600):
            c.programs.out.test_run(ctx=bytes(8))
            if i % 100 == 99:
                seen += rb.poll(0)
        assert seen == [struct.pack("<Q", 0x1234)] * 600


def test_engine_selection_by_environment(monkeypatch):
    monkeypatch.setenv("PYBPFC_JIT", "0")
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend="userspace") as c:
        assert c.programs.xdp_pass.raw.engine == "interpreter"


def test_attach_without_agent_is_not_supported():
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend=UserspaceBackend(jit=False)) as c:
        with pytest.raises(NotSupportedError, match=r"prog 'xdp_pass': XDP is not supported by the userspace backend"):
            c.programs.xdp_pass.attach_xdp("lo")
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend=UserspaceBackend(jit=False),
                     unsupported="ignore") as c:
        assert isinstance(c.programs.xdp_pass.attach_xdp("lo"), NoopLink)


# -- safety ------------------------------------------------------------------------------------

def load_asm(asm, maps=(), relocs=(), engine="interpreter", ptype=U.BPF_PROG_TYPE_XDP):
    spec = CollectionSpec()
    for m in maps:
        spec.maps[m.name] = m
    insns = b"".join(i.encode() for i in assemble(asm))
    spec.programs["bad"] = ProgramSpec("bad", "xdp", ptype, insns=insns,
                                       relocations=[Relocation(i, "map", t) for i, t in relocs])
    return pybpfc.load(spec, backend=UserspaceBackend(jit=engine == "jit"))


HASH = MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 8, 4)
LOOKUP = """
    stw [%r10-4], 1
    lddw %r1, map_fd(0)
    mov %r2, %r10
    add %r2, -4
    call 1
"""


@pytest.mark.parametrize("engine", ["interpreter", "jit"])
@pytest.mark.parametrize("what,asm", [
    ("map value out of bounds", LOOKUP + "jeq %r0, 0, +2\nldxdw %r0, [%r0+4096]\nexit\nmov %r0, 0\nexit"),
    ("null lookup result used", LOOKUP + "ldxdw %r0, [%r0+0]\nexit"),
    ("wild pointer", "lddw %r1, 0x7fff00001000\nstdw [%r1+0], 1\nmov %r0, 0\nexit"),
    ("write through packet end", "ldxw %r2, [%r1+4]\nstdw [%r2+0], 1\nmov %r0, 0\nexit"),
    ("endless loop", "mov %r0, 0\nadd %r0, 1\nja -2\nexit"),
])
def test_unsafe_programs_are_stopped(engine, what, asm):
    try:
        c = load_asm(asm, maps=[HASH], relocs=[(1, "h")] if "map_fd" in asm else [], engine=engine)
    except VerifierError:
        return  # refused before running is as good
    with c:
        p = c.programs.bad
        if engine == "jit" and p.raw.engine != "jit":
            pytest.skip("JIT unavailable")
        if what != "null lookup result used":
            c.maps.h[1] = 5
        with pytest.raises(RuntimeFault, match=r"prog 'bad': stopped at insn \d+: "):
            p.test_run(ETH_IP_UDP)


def test_stack_out_of_bounds_is_refused():
    with pytest.raises(VerifierError, match=r"prog 'bad': insn 0"):
        load_asm("stdw [%r10-520], 1\nmov %r0, 0\nexit")


def test_read_only_data_cannot_be_written_by_programs():
    ro = MapSpec(".rodata", U.BPF_MAP_TYPE_ARRAY, 4, 8, 1, data=bytes(8), readonly=True)
    spec = CollectionSpec()
    spec.maps[".rodata"] = ro
    insns = b"".join(i.encode() for i in assemble("lddw %r1, map_value(0, 0)\nstdw [%r1+0], 1\nmov %r0, 0\nexit"))
    spec.programs["bad"] = ProgramSpec("bad", "xdp", U.BPF_PROG_TYPE_XDP, insns=insns,
                                       relocations=[Relocation(0, "map_value", ".rodata")])
    with pybpfc.load(spec, backend=UserspaceBackend(jit=False)) as c:
        with pytest.raises(RuntimeFault, match=r"memory access outside"):
            c.programs.bad.test_run(ETH_IP_UDP)


def test_relocation_to_missing_map_is_named():
    spec = CollectionSpec()
    insns = b"".join(i.encode() for i in assemble("lddw %r1, 0\nmov %r0, 0\nexit"))
    spec.programs["p"] = ProgramSpec("p", "xdp", U.BPF_PROG_TYPE_XDP, insns=insns,
                                     relocations=[Relocation(0, "map", "nope")])
    with pytest.raises(LoadError, match=r"prog 'p': references map 'nope' which the object does not define"):
        pybpfc.load(spec, backend=UserspaceBackend(jit=False))


def test_too_many_pointable_maps_refused_at_load():
    spec = CollectionSpec()
    asm = ""
    relocs = []
    for i in range(13):
        spec.maps[f"a{i}"] = MapSpec(f"a{i}", U.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
        relocs.append(Relocation(2 * i, "map", f"a{i}"))
        asm += f"lddw %r1, map_fd({i})\n"
    insns = b"".join(i.encode() for i in assemble(asm + "mov %r0, 0\nexit"))
    spec.programs["p"] = ProgramSpec("p", "xdp", U.BPF_PROG_TYPE_XDP, insns=insns, relocations=relocs)
    with pytest.raises(LoadError, match=r"prog 'p': uses 13 maps with values it can point into .*allows 12"):
        pybpfc.load(spec, backend=UserspaceBackend(jit=False))


def _legacy_loads_spec(oob: bool = False):
    def asm(text):
        return b"".join(i.encode() for i in assemble(text))

    def raw(op, src=0, imm=0):
        return struct.pack("<BBhi", op, src << 4, 0, imm)

    insns = (asm("mov %r6, %r1\njne %r6, 0, +1\nexit")[:16] + raw(0x30, imm=0)  # jumped over
             + raw(0x28, imm=1000 if oob else 2)                                # ldabsh: IPv4 total length
             + asm("mov %r8, %r0\nmov %r7, 4\nexit")[:16] + raw(0x50, src=7, imm=5)  # ldindb r7+5: protocol
             + asm("lsh %r8, 8\nor %r0, %r8\njne %r0, 0, +1\nmov %r0, 77\nexit"))
    spec = CollectionSpec()
    spec.programs["legacy"] = ProgramSpec("legacy", "socket", U.BPF_PROG_TYPE_SOCKET_FILTER, insns=insns)
    return spec


@pytest.mark.parametrize("engine", ["interpreter", "jit"])
def test_legacy_packet_loads_in_socket_filters_like_the_kernel(engine):
    pkt = bytearray(ETH_IP_UDP)
    pkt[14 + 2:14 + 4] = (0x0032).to_bytes(2, "big")
    pkt[14 + 9] = 17
    expected = (0x32 << 8) | 17
    for oob, want in ((False, expected), (True, 0)):
        with pybpfc.load(_legacy_loads_spec(oob), backend=UserspaceBackend(jit=engine == "jit")) as c:
            assert c.programs.legacy.test_run(bytes(pkt)).retval == want
        if kernel_ok():
            with pybpfc.load(_legacy_loads_spec(oob), backend="kernel") as c:
                assert c.programs.legacy.test_run(bytes(pkt)).retval == want


def test_pybpfc_socket_filter_example_like_the_kernel():
    def run(backend):
        with pybpfc.load(f"{ROOT}/examples/sockfilter.py", backend=backend) as c:
            ok = ETH_IP_UDP[:14] + bytes(8) + b"ok" + bytes(30)
            bad = ETH_IP_UDP[:14] + bytes(8) + b"no" + bytes(30)
            rets = [c.programs.keep_ok.test_run(p).retval for p in (ok, bad, bad)]
            return rets, c.maps.dropped[0]

    got = run(UserspaceBackend(jit=False))
    assert got == ([len(ETH_IP_UDP[:14] + bytes(8) + b"ok" + bytes(30)) - 14, 0, 0], 2)
    if kernel_ok():
        assert run("kernel") == got


def test_rodata_is_frozen_after_load_like_the_kernel():
    def run(backend):
        with pybpfc.load(f"{HERE}/../objects/maps.bpf.o", backend=backend, consts={"target_pid": 7}) as c:
            ro = c.maps[".rodata"] if isinstance(c.maps, dict) else c.map(".rodata")
            data = ro.raw.lookup(b"\0\0\0\0")
            with pytest.raises(LoadError, match=r"map '.rodata': update failed: Operation not permitted"):
                ro.raw.update(b"\0\0\0\0", data)
            return c.globals.target_pid

    assert run(UserspaceBackend(jit=False)) == 7
    if kernel_ok():
        assert run("kernel") == 7


def test_pinned_maps_are_shared_by_loaders_of_one_store():
    """LIBBPF_PIN_BY_NAME maps: a second loader of the same store (here in another process)
    gets the first loader's map, which outlives the first loader like a bpffs pin; maps
    without pinning stay separate."""
    import subprocess
    import sys

    path = f"/dev/shm/pybpfc-pin-{os.getpid()}"
    obj = f"{HERE}/../objects/maps.bpf.o"
    be = UserspaceBackend(store=path, jit=False)
    try:
        with pybpfc.load(obj, backend=be) as c:
            c.maps.pinned[3] = 33
            c.maps.counters[0] = 11
        code = f"""
import pybpfc
from pybpfc.backends.userspace import UserspaceBackend
with pybpfc.load({obj!r}, backend=UserspaceBackend(store={path!r}, jit=False)) as c:
    assert c.maps.pinned[3] == 33, dict(c.maps.pinned.items())
    assert c.maps.counters[0] == 0
    c.maps.pinned[4] = 44
"""
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
        with pybpfc.load(obj, backend=be) as c:
            assert dict(c.maps.pinned.items()) == {3: 33, 4: 44}
    finally:
        be.store.close()
    assert not os.path.exists(path)


def test_pinned_map_with_another_layout_is_refused():
    spec_a = CollectionSpec()
    spec_a.maps["shared"] = MapSpec("shared", U.BPF_MAP_TYPE_HASH, 4, 8, 16, pinning=1)
    spec_b = CollectionSpec()
    spec_b.maps["shared"] = MapSpec("shared", U.BPF_MAP_TYPE_HASH, 4, 4, 16, pinning=1)
    be = UserspaceBackend(jit=False)
    with pybpfc.load(spec_a, backend=be):
        with pytest.raises(LoadError, match=r"map 'shared': pinned map in the store does not match"):
            pybpfc.load(spec_b, backend=be)

"""clang-built libbpf-style objects loaded through the ELF reader into the kernel."""
import os

import pytest

import pybpfc
from pybpfc import uapi as U

from kernel_helpers import kernel_or_skip

BENCH = "/work/shared/bench/vm"
HERE = os.path.dirname(__file__)


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()


@pytest.fixture(scope="module")
def bench():
    if not os.path.exists(f"{BENCH}/bench.bpf.o"):
        pytest.skip("shared benchmark object not present")
    kernel_or_skip()
    with pybpfc.load(f"{BENCH}/bench.bpf.o", backend="kernel") as c:
        yield c


def _pkt(n):
    with open(f"{BENCH}/pkt{n}.bin", "rb") as f:
        return f.read()


@pytest.mark.parametrize("name,pkt,expected", [
    ("xdp_pass", 64, 2), ("xdp_loop_sum", 64, 41748), ("xdp_bpf_loop", 64, 41748),
    ("xdp_hash_update", 64, 100), ("xdp_memcpy", 64, 9835), ("xdp_memcpy", 1024, 59051),
    ("xdp_parse_csum", 64, 231), ("xdp_parse_csum", 1024, 55175),
])
def test_bench_expected_results(bench, name, pkt, expected):
    r = getattr(bench.programs, name).test_run(_pkt(pkt), repeat=3)
    assert r.retval == expected
    assert r.data == _pkt(pkt)  # none of them changes the packet


def test_bench_hash_lookup_after_warmup(bench):
    p = bench.programs.xdp_hash_lookup
    p.test_run(_pkt(64))
    assert p.test_run(_pkt(64)).retval == 100
    assert len(bench.maps.hmap) > 0


def test_bench_globals(bench):
    assert bench.globals.loop_n == 1000
    bench.globals.loop_n = 10
    try:
        assert bench.programs.xdp_loop_sum.test_run(_pkt(64)).retval == 55
    finally:
        bench.globals.loop_n = 1000


def test_bench_btf_loaded(bench):
    # the object's BTF went into the kernel: programs carry func/line info
    info = bench.programs.xdp_parse_csum.raw.info()
    assert info.btf_id != 0 and info.nr_line_info > 0
    assert not bench.backend.warnings
    # ... and maps carry their BTF key/value types
    minfo = bench.maps.hmap.raw.info()
    assert minfo.btf_id == info.btf_id and minfo.btf_key_type_id and minfo.btf_value_type_id


@pytest.fixture
def progs_obj():
    with pybpfc.load(f"{HERE}/../objects/progs.bpf.o", backend="kernel") as c:
        yield c


ETH_IP_UDP = bytes(12) + b"\x08\x00" + bytes(50)


def test_progs_object_test_run_every_type(progs_obj):
    c = progs_obj
    hits = c.maps.hits
    assert c.programs.xdp_pass.test_run(ETH_IP_UDP).retval == U.XDP_PASS
    assert hits[0] == 3  # bump() adds the static `scale` (3)
    assert c.programs.xdp_drop.test_run(ETH_IP_UDP).retval == U.XDP_DROP
    assert (hits[1], hits[2]) == (3, 3)  # subprogram calling a subprogram
    assert c.programs.tc_count.test_run(ETH_IP_UDP).retval == U.TC_ACT_OK
    assert hits[45 & 7] == 3  # bpf_loop callback summed 0..9
    # socket filters see the packet from the network header on: skb->len excludes Ethernet
    assert c.programs.sock_filter.test_run(ETH_IP_UDP).retval == len(ETH_IP_UDP) - 14
    assert hits[4] == 3
    assert c.programs.cg_egress.test_run(ETH_IP_UDP).retval == 1
    assert hits[5] == 6  # tc_count bumped index 5 too


def test_progs_object_prog_array_initialised(progs_obj):
    # jmp_init's static initialiser put tail_target at index 1; a lookup returns its prog id
    ids = dict(progs_obj.maps.jmp_init.items())
    assert ids == {1: progs_obj.programs.tail_target.raw.info().id}


def test_tracepoint_program_cannot_test_run(progs_obj):
    with pytest.raises(pybpfc.NotSupportedError, match=r"prog 'tail_target': this kernel cannot test-run tracepoint"):
        progs_obj.programs.tail_target.test_run(b"")


def test_packet_test_run_needs_ethernet_header(progs_obj):
    with pytest.raises(pybpfc.LoadError, match=r"prog 'sock_filter': .*at least 14 bytes"):
        progs_obj.programs.sock_filter.test_run(b"\0" * 4)
    with pytest.raises(pybpfc.LoadError, match=r"prog 'xdp_pass': test_run of xdp programs needs at least 14 bytes"):
        progs_obj.programs.xdp_pass.test_run(b"\0" * 10)


@pytest.fixture
def maps_obj(tmp_path):
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs is not mounted")
    import uuid
    from pybpfc.backends.kernel import KernelBackend

    root = f"/sys/fs/bpf/pybpfc_kobj_{uuid.uuid4().hex[:8]}"
    os.mkdir(root)
    try:
        with pybpfc.load(f"{HERE}/../objects/maps.bpf.o", backend=KernelBackend(pin_root=root),
                         consts={"target_pid": os.getpid()}) as c:
            yield c
    finally:
        for f in os.listdir(root):
            os.unlink(os.path.join(root, f))
        os.rmdir(root)


def test_maps_object_end_to_end(maps_obj):
    c = maps_obj
    pid = os.getpid()  # before attaching: getpid() is what the program counts
    assert c.globals.target_pid == pid
    assert (c.globals.total, c.globals.seen, c.globals.drops) == (7, [1, 2, 3, 4], 0)
    rb = c.ringbuf("events")
    pb = c.perfbuf("perf_events")
    c.programs.on_getpid.attach()
    for _ in range(5):
        os.getpid()
    assert c.maps.counters[0] == 5
    assert c.globals.total == 7 + 5 * 100 and c.globals.drops == 5
    assert c.globals.seen[pid & 3] == [1, 2, 3, 4][pid & 3] + 5
    events = rb.poll(1)
    assert len(events) == 5 and all(e.pid == pid for e in events)
    assert [c.maps.queue.pop() for _ in range(5)] == [pid] * 5
    assert [k.saddr for k in c.maps.flows.keys()] == [pid]
    assert c.maps.pcpu.sum(0) == 5
    assert len(pb.poll(1)) >= 1


def test_pybpfc_compiled_example_runs_in_kernel():
    """Python source -> compiler -> ELF reader -> kernel: the per-CPU count of the UDP packet."""
    src = os.path.join(HERE, "..", "..", "examples", "xdp_proto.py")
    if not os.path.exists(src) or not os.path.exists(f"{BENCH}/pkt64.bin"):
        pytest.skip("example or packet missing")
    with pybpfc.load(src, backend="kernel") as c:
        r = c.programs.count_proto.test_run(_pkt(64), repeat=7)
        assert r.retval == U.XDP_PASS
        counts = c.maps.counts
        assert counts.sum(17) == 7 and counts.sum(6) == 0  # pkt64 is UDP
        assert isinstance(counts[17], list) and len(counts[17]) == c.backend.num_possible_cpus()


def test_clang_twin_behaves_like_the_pybpfc_program(tmp_path):
    """examples/xdp_proto.py and its C twin, on the same packets: same verdicts, same counts."""
    import shutil
    import subprocess

    root = os.path.join(HERE, "..", "..", "examples")
    if not shutil.which("clang-19") or not os.path.exists(f"{root}/c/xdp_proto.bpf.c"):
        pytest.skip("clang-19 or the C twin missing")
    obj = tmp_path / "xdp_proto.bpf.o"
    subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", f"{root}/c/xdp_proto.bpf.c", "-o", str(obj)], check=True)
    tcp = bytearray(_pkt(64))
    tcp[14 + 9] = 6  # same packet, IP protocol TCP
    packets = [(_pkt(64), 3), (bytes(tcp), 2), (_pkt(1024), 1), (bytes(14), 4)]  # last: not IP
    results = []
    for src in (f"{root}/xdp_proto.py", str(obj)):
        with pybpfc.load(src, backend="kernel") as c:
            p = c.programs.count_proto
            verdicts = [p.test_run(pkt, repeat=n).retval for pkt, n in packets]
            results.append((verdicts, {k: c.maps.counts.sum(k) for k in (6, 17)}))
    assert results[0] == results[1] == ([U.XDP_PASS] * 4, {6: 2, 17: 4})

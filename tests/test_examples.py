"""Every example compiles, loads (kernel via pybpfc and via bpftool) and does what it says."""
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

import pybpfc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ["opens", "mallocsize", "execsnoop", "xdp_proto", "sockfilter"]

kernel = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for kernel eBPF")


def example(name):
    return os.path.join(ROOT, "examples", f"{name}.py")


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    d = tmp_path_factory.mktemp("examples")
    out = {}
    for name in EXAMPLES:
        out[name] = str(d / f"{name}.bpf.o")
        with open(out[name], "wb") as f:
            f.write(pybpfc.compile(example(name)))
    return out


@kernel
@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool not installed")
@pytest.mark.parametrize("name", EXAMPLES)
def test_bpftool_loads_example(objects, name):
    pin = f"/sys/fs/bpf/pybpfc_example_{name}_{os.getpid()}"
    r = subprocess.run(["bpftool", "prog", "loadall", objects[name], pin], capture_output=True, text=True)
    try:
        assert r.returncode == 0, r.stderr
        assert os.listdir(pin)
    finally:
        shutil.rmtree(pin, ignore_errors=True)


@kernel
def test_opens_counts_this_process(objects):
    with pybpfc.load(objects["opens"], backend="kernel") as obj:
        obj.attach_all()
        for _ in range(7):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        assert obj.maps.counts[os.getpid()] >= 7


@kernel
def test_mallocsize_histogram_sees_our_sizes(objects):
    with pybpfc.load(objects["mallocsize"], backend="kernel") as obj:
        obj.programs.on_malloc.attach_uprobe(pid=os.getpid())
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        for _ in range(3):
            libc.free(ctypes.c_void_p(libc.malloc(1 << 20)))   # bucket 21: 1 MiB
        hist = obj.maps.sizes.histogram()
        assert len(hist) > 21 and hist[21] >= 3
        assert "1048576 -> 2097151" in obj.maps.sizes.format_log2_hist("bytes")


@kernel
def test_execsnoop_reports_exec_with_filename(objects):
    with pybpfc.load(objects["execsnoop"], backend="kernel") as obj:
        obj.attach_all()
        rb = obj.ringbuf("events")
        p = subprocess.run(["/bin/true"])
        assert p.returncode == 0
        deadline = time.monotonic() + 5
        seen = []
        while time.monotonic() < deadline and not any(e.filename == b"/bin/true" for e in seen):
            seen += rb.poll(0.2)
        hits = [e for e in seen if e.filename == b"/bin/true"]
        assert hits, seen
        assert hits[0].uid == os.getuid() and hits[0].ts > 0 and hits[0].pid > 0


def udp_packet(proto=17, payload=b"hello"):
    eth = b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x0800)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, proto, 0,
                     socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    udp = struct.pack("!HHHH", 1234, 53, 8 + len(payload), 0)
    return eth + ip + udp + payload


BACKENDS = [pytest.param("kernel", marks=kernel), "userspace"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_xdp_proto_counts_per_protocol(objects, backend):
    with pybpfc.load(objects["xdp_proto"], backend=backend) as obj:
        prog = obj.programs.count_proto
        for proto, n in ((17, 3), (6, 2), (1, 1)):
            for _ in range(n):
                assert prog.test_run(udp_packet(proto)).retval == pybpfc.XDP_PASS
        truncated = udp_packet()[:14] + b"\x45" * 10    # IPv4 ethertype, IP header cut short
        assert prog.test_run(truncated).retval == pybpfc.XDP_PASS      # passed, not counted
        arp = udp_packet()[:12] + struct.pack("!H", 0x0806) + udp_packet()[14:]
        assert prog.test_run(arp).retval == pybpfc.XDP_PASS
        assert (obj.maps.counts.sum(17), obj.maps.counts.sum(6), obj.maps.counts.sum(1)) == (3, 2, 1)
        assert sum(obj.maps.counts.sum(p) for p in range(256)) == 6


@kernel
def test_sockfilter_keeps_ok_datagrams(objects):
    with pybpfc.load(objects["sockfilter"], backend="kernel") as obj:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind(("127.0.0.1", 0))
            obj.programs.keep_ok.attach_socket_filter(a)
            for msg in (b"ok 1", b"no 2", b"ok 3", b"xx"):
                b.sendto(msg, a.getsockname())
            a.settimeout(1.0)
            got = [a.recv(100), a.recv(100)]
            a.settimeout(0.2)
            with pytest.raises(socket.timeout):
                a.recv(100)
            assert got == [b"ok 1", b"ok 3"]
            assert obj.maps.dropped[0] == 2
        finally:
            a.close()
            b.close()


@kernel
def test_example_runs_as_a_script():
    """The user-space half of an example works as written (`python examples/sockfilter.py`)."""
    r = subprocess.run([sys.executable, example("sockfilter")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["received b'ok 1'", "received b'ok 3'", "dropped 1"]


@kernel
@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool not installed")
def test_btf_shows_event_struct(objects):
    r = subprocess.run(["bpftool", "-j", "btf", "dump", "file", objects["execsnoop"]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    types = json.loads(r.stdout)["types"]
    ev = [t for t in types if t.get("kind") == "STRUCT" and t.get("name") == "Event"]
    assert ev, "Event struct missing from BTF"
    members = {m["name"]: m["bits_offset"] // 8 for m in ev[0]["members"]}
    assert members == {"pid": 0, "uid": 4, "ts": 8, "comm": 16, "filename": 32}

"""The attach scenarios again with the pybpfc-language twins (progs/attach_twins.py),
compiled by pybpfc and loaded through pybpfc.load(backend="kernel")."""
import ctypes
import os
import socket
import subprocess
import sys
import uuid

import pytest
from attach_netns import VethPair, available, enter, send_udp

import pybpfc
from pybpfc.backends.kernel.attach import cgroup, perf_event

HERE = os.path.dirname(__file__)
N = 13


@pytest.fixture(scope="module")
def spec():
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")
    return pybpfc.read_spec(os.path.join(HERE, "progs", "attach_twins.py"))


@pytest.fixture
def obj(spec):
    with pybpfc.load(spec, backend="kernel", consts={"target_pid": os.getpid()}) as o:
        yield o


def test_twins_tracing(obj):
    libc = ctypes.CDLL("libc.so.6")
    ppid = os.getppid()
    P = obj.programs
    links = [P.tp_getppid.attach_tracepoint(), P.raw_enter.attach_raw_tracepoint(),
             P.up_getppid.attach_uprobe(), P.ur_getppid.attach_uprobe()]
    assert [l.kind for l in links] == ["tracepoint", "raw_tracepoint", "uprobe", "uretprobe"]
    for _ in range(N):
        libc.getppid()
    for l in links:
        l.close()
    libc.getppid()
    h = obj.maps.hits
    assert [h[i] for i in range(4)] == [N, N, N, N * ppid]


def test_twins_perf_event(obj):
    link = obj.programs.on_sample.attach_perf_event(
        type=perf_event.PERF_TYPE_SOFTWARE, config=perf_event.PERF_COUNT_SW_CPU_CLOCK,
        sample_period=100_000, pid=os.getpid())
    x = 0
    for _ in range(200):
        x += sum(range(20000))
        if obj.maps.hits[8] >= 2:
            break
    link.close()
    assert obj.maps.hits[8] >= 2


def test_twins_xdp_and_tc(obj):
    why = available()
    if why:
        pytest.skip(why)
    with VethPair("t") as v:
        with enter(v.ns_b):
            links = [obj.programs.xdp_udp.attach_xdp(v.dev_b), obj.programs.tc_udp.attach_tc(v.dev_b)]
        assert links[1].target == f"{v.dev_b}/ingress"
        assert send_udp(v, N) == N
        for l in links:
            l.close()
    assert obj.maps.hits[4] == N and obj.maps.hits[5] == N


def test_twins_socket_filter_and_cgroup(obj):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, obj.programs.sock_all.attach_socket_filter(b):
        for i in range(N):
            a.send(b"m%d" % i)
        assert [b.recv(16) for _ in range(N)] == [b"m%d" % i for i in range(N)]
    assert obj.maps.hits[6] == N
    root = cgroup.cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2")
    path = os.path.join(root, f"pybpfc_attach_{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))

        def join():
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        child = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                 f"[s.sendto(b'x', ('127.0.0.1', {rx.getsockname()[1]})) for _ in range({N})]")
        with rx, obj.programs.cg_egress.attach_cgroup(path):
            subprocess.run([sys.executable, "-c", child], check=True, preexec_fn=join)
    finally:
        os.rmdir(path)
    assert obj.maps.hits[7] == N

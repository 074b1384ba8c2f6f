"""Network attach points with real packets: XDP and tc (tcx) on a veth pair between two
network namespaces, socket filter on a socket pair, cgroup_skb on a cgroup v2 directory."""
import os
import shutil
import socket
import subprocess
import sys
import uuid

import pytest
from attach_asm import counter, length_filter, udp_port_counter
from attach_netns import VethPair, available, enter, send_udp

from pybpfc import uapi as U
from pybpfc.backends.kernel.attach import AttachMixin, FdLink, cgroup
from pybpfc.errors import AttachError, NotSupportedError

A = AttachMixin()
PORT = 7777
N = 9


@pytest.fixture
def veth():
    why = available()
    if why:
        pytest.skip(why)
    with VethPair("x") as v:
        yield v


XDP_OFFS = (0, 4)     # xdp_md.data, data_end
SKB_OFFS = (76, 80)   # __sk_buff.data, data_end


def test_xdp_counts_and_passes_udp(counters, progs, veth):
    p = progs(U.BPF_PROG_TYPE_XDP, udp_port_counter(counters, PORT, *XDP_OFFS, U.XDP_PASS, U.XDP_PASS),
              "xdp_count", U.BPF_XDP)
    with enter(veth.ns_b):
        link = A.attach_xdp(p, veth.dev_b)
    with link:
        assert isinstance(link, FdLink) and link.target == veth.dev_b
        assert send_udp(veth, N) == N
    assert counters[0] == N
    assert send_udp(veth, 2) == 2 and counters[0] == N, "XDP still attached after close()"


def test_xdp_drop_and_busy(counters, progs, veth):
    drop = progs(U.BPF_PROG_TYPE_XDP, udp_port_counter(counters, PORT, *XDP_OFFS, U.XDP_DROP, U.XDP_PASS),
                 "xdp_drop", U.BPF_XDP)
    with enter(veth.ns_b):
        link = A.attach_xdp(drop, veth.dev_b)
        try:
            with pytest.raises(AttachError, match=f"prog 'xdp_drop': xdp {veth.dev_b}: .*already attached"):
                A.attach_xdp(drop, veth.dev_b)
        except BaseException:
            link.close()
            raise
    with link:
        assert send_udp(veth, N) == 0
    assert counters[0] == N


def test_xdp_bad_interface(counters, progs):
    p = progs(U.BPF_PROG_TYPE_XDP, counter(counters, ret=U.XDP_PASS), "xdp_nodev", U.BPF_XDP)
    with pytest.raises(AttachError, match=r"prog 'xdp_nodev': xdp: no interface 'pbat_nonexistent'"):
        A.attach_xdp(p, "pbat_nonexistent")
    with pytest.raises(AttachError, match="unknown mode"):
        A.attach_xdp(p, "lo", "turbo")


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_tc_counts_and_shoots(counters, progs, veth, direction):
    # ingress on B sees the datagrams arriving; egress on A sees them leaving.
    ns, dev = (veth.ns_b, veth.dev_b) if direction == "ingress" else (veth.ns_a, veth.dev_a)
    p = progs(U.BPF_PROG_TYPE_SCHED_CLS, udp_port_counter(counters, PORT, *SKB_OFFS, U.TC_ACT_OK, U.TC_ACT_OK),
              "tc_count")
    with enter(ns):
        link = A.attach_tc(p, dev, direction)
    with link:
        assert link.target == f"{dev}/{direction}"
        assert send_udp(veth, N) == N
    assert counters[0] == N
    shot = progs(U.BPF_PROG_TYPE_SCHED_CLS, udp_port_counter(counters, PORT, *SKB_OFFS, U.TC_ACT_SHOT, U.TC_ACT_OK),
                 "tc_shot")
    with enter(ns):
        link = A.attach_tc(shot, dev, direction)
    with link:
        assert send_udp(veth, 3) == 0
    assert counters[0] == N + 3
    assert send_udp(veth, 1) == 1


def test_tc_bad_direction(counters, progs):
    p = progs(U.BPF_PROG_TYPE_SCHED_CLS, counter(counters), "tc_dir")
    with pytest.raises(AttachError, match="prog 'tc_dir': tc: direction must be 'ingress' or 'egress'"):
        A.attach_tc(p, "lo", "sideways")


def test_socket_filter_on_socketpair(counters, progs):
    p = progs(U.BPF_PROG_TYPE_SOCKET_FILTER, length_filter(counters, 50), "sock_len")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.settimeout(0.5)
        link = A.attach_socket_filter(p, b)
        a.send(b"short")
        a.send(b"L" * 100)
        a.send(b"tiny")
        assert b.recv(200) == b"short"
        assert b.recv(200) == b"tiny"
        with pytest.raises(socket.timeout):
            b.recv(200)
        assert counters[0] == 3
        link.close()
        a.send(b"L" * 100)
        assert b.recv(200) == b"L" * 100
        assert counters[0] == 3
        with pytest.raises(NotSupportedError, match="cannot be pinned"):
            link.pin("/sys/fs/bpf/x")
    with pytest.raises(AttachError, match="prog 'sock_len': socket filter: .*not an open socket"):
        A.attach_socket_filter(p, object())


CHILD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(b"x", ("127.0.0.1", int(sys.argv[2])))
"""


@pytest.fixture
def cgroup_dir():
    root = cgroup.cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    path = os.path.join(root, f"pybpfc_attach_{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


def test_cgroup_skb_egress_counts_a_member_process(counters, progs, cgroup_dir):
    p = progs(U.BPF_PROG_TYPE_CGROUP_SKB, counter(counters, ret=1), "cg_egress",
              U.BPF_CGROUP_INET_EGRESS, kind="cgroup")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]

    def join():
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    with rx, A.attach_cgroup(p, cgroup_dir) as link:
        assert isinstance(link, FdLink)
        subprocess.run([sys.executable, "-c", CHILD, str(N), str(port)], check=True, preexec_fn=join)
        # the same traffic from a process outside the cgroup is not counted
        subprocess.run([sys.executable, "-c", CHILD, "4", str(port)], check=True)
    assert counters[0] == N
    subprocess.run([sys.executable, "-c", CHILD, "2", str(port)], check=True, preexec_fn=join)
    assert counters[0] == N


def test_cgroup_errors(counters, progs, tmp_path):
    p = progs(U.BPF_PROG_TYPE_CGROUP_SKB, counter(counters, ret=1), "cg_bad", U.BPF_CGROUP_INET_EGRESS)
    with pytest.raises(AttachError, match=r"prog 'cg_bad': cgroup /nonexistent/cg: no such directory"):
        A.attach_cgroup(p, "/nonexistent/cg")
    with pytest.raises(AttachError, match=r"not a cgroup v2 directory"):
        A.attach_cgroup(p, str(tmp_path))


def _tc_show(ns, dev, direction):
    return subprocess.run(["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", dev, direction],
                          capture_output=True, text=True).stdout


def _qdiscs(ns, dev):
    return subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev],
                          capture_output=True, text=True).stdout


@pytest.mark.skipif(not shutil.which("tc"), reason="iproute2 tc is missing")
def test_tc_netlink_filter(counters, progs, veth):
    p = progs(U.BPF_PROG_TYPE_SCHED_CLS, udp_port_counter(counters, PORT, *SKB_OFFS, U.TC_ACT_SHOT, U.TC_ACT_OK),
              "tc_nl_shot")
    with enter(veth.ns_b):
        link = A.attach_tc(p, veth.dev_b, "ingress", mode="netlink")
    try:
        shown = _tc_show(veth.ns_b, veth.dev_b, "ingress")
        assert "bpf" in shown and "tc_nl_shot" in shown and "direct-action" in shown
        assert "clsact" in _qdiscs(veth.ns_b, veth.dev_b)
        assert send_udp(veth, 4) == 0
        assert counters[0] == 4
    finally:
        link.close()          # from the root namespace: the link remembers its own
    assert "tc_nl_shot" not in _tc_show(veth.ns_b, veth.dev_b, "ingress")
    assert "clsact" not in _qdiscs(veth.ns_b, veth.dev_b)
    assert send_udp(veth, 2) == 2 and counters[0] == 4


def test_xdp_link_update_and_detach(counters, progs, veth):
    pas = progs(U.BPF_PROG_TYPE_XDP, udp_port_counter(counters, PORT, *XDP_OFFS, U.XDP_PASS, U.XDP_PASS),
                "xdp_upd_pass", U.BPF_XDP)
    drop = progs(U.BPF_PROG_TYPE_XDP, udp_port_counter(counters, PORT, *XDP_OFFS, U.XDP_DROP, U.XDP_PASS),
                 "xdp_upd_drop", U.BPF_XDP)
    pin = f"/sys/fs/bpf/pybpfc_attach_xdp_{os.getpid()}"
    with enter(veth.ns_b):
        link = A.attach_xdp(pas, veth.dev_b)
    try:
        assert send_udp(veth, 2) == 2
        link.update(drop)                      # swapped in place, no gap
        assert send_udp(veth, 3) == 0
        assert counters[0] == 5
        link.pin(pin)
        link.detach()                          # BPF_LINK_DETACH: gone at once despite the pin
        assert send_udp(veth, 2) == 2 and counters[0] == 5
    finally:
        link.close()
        if os.path.exists(pin):
            os.unlink(pin)


def test_cgroup_wrong_attach_type_says_so(counters, progs, cgroup_dir):
    p = progs(U.BPF_PROG_TYPE_CGROUP_SKB, counter(counters, ret=1), "cg_wrong", U.BPF_CGROUP_INET_EGRESS)
    with pytest.raises(AttachError, match=r"prog 'cg_wrong': cgroup .*: .*Invalid argument.*attach type 8 does not fit"):
        A.attach_cgroup(p, cgroup_dir, U.BPF_CGROUP_INET4_BIND)

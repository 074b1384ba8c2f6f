"""Collection.attach()/attach_all(): options reach only the programs they apply to, and tc
programs attach in the direction their section names."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import pybpfc
import pybpfc.uapi
from pybpfc.errors import AttachError

PROG = textwrap.dedent('''
    from pybpfc import bpf, ArrayMap, u32, u64, TC_ACT_OK

    hits = ArrayMap(u32, u64, max_entries=2)

    @bpf.tc("egress")
    def out(skb) -> int:
        hits[0] += 1
        return TC_ACT_OK

    @bpf.tracepoint("syscalls/sys_enter_getppid")
    def tp(ctx) -> int:
        hits[1] += 1
        return 0
''')

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for kernel eBPF")


@pytest.fixture
def obj_path(tmp_path):
    src = tmp_path / "prog.py"
    src.write_text(PROG)
    out = tmp_path / "prog.bpf.o"
    out.write_bytes(pybpfc.compile(str(src)))
    return str(out)


def test_attach_all_needs_an_interface_for_tc(obj_path):
    with pybpfc.load(obj_path, backend="kernel") as obj:
        with pytest.raises(AttachError, match=r"prog 'out': section 'tc/egress' does not say where to attach; pass ifname="):
            obj.attach_all()
        with pytest.raises(pybpfc.Error, match=r"unknown attach option\(s\) iface"):
            obj.attach_all(iface="lo")


@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_attach_all_puts_tc_egress_on_egress_and_ignores_pid_for_tracepoints(obj_path):
    ns = f"pybpfc_coll_{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        code = textwrap.dedent(f'''
            import os, socket, subprocess, pybpfc
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            with pybpfc.load({obj_path!r}, backend="kernel") as obj:
                links = obj.attach_all(ifname="lo", pid=os.getpid())   # pid is for uprobes: ignored here
                from pybpfc.backends.kernel import syscall as S
                tc = [l for l in links if l.kind.startswith("tc")][0]
                raw = bytes(S.obj_get_info_by_fd(tc.fd, S.LinkInfo()).raw)   # union bpf_link_info.tcx
                print("tcx attach_type", int.from_bytes(raw[4:8], "little"))
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.sendto(b"x", ("127.0.0.1", 9))
                os.getppid()
                print("hits", obj.maps.hits[0], obj.maps.hits[1])
        ''')
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"tcx attach_type {pybpfc.uapi.BPF_TCX_EGRESS}" in r.stdout, r.stdout
        hits = [int(x) for x in r.stdout.split("hits", 1)[1].split()]
        assert hits[0] >= 1 and hits[1] >= 1
    finally:
        subprocess.run(["ip", "netns", "del", ns])

"""`pybpfc run` on pybpfc-language programs (compiled on the fly): the examples and a
pybpfc twin of the attach test programs."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PY = sys.executable


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")


def run(*args):
    r = subprocess.run([PY, "-m", "pybpfc", "run", *args], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r


def jlines(out):
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_run_execsnoop_py_sees_the_command(tmp_path):
    pidfile = tmp_path / "pid"
    r = run("examples/execsnoop.py", "--json", "--", "sh", "-c", f"echo $$ > {pidfile}; exec /bin/true")
    pid = int(pidfile.read_text())
    evs = [o["event"] for o in jlines(r.stdout) if o.get("map") == "events"]
    mine = [e for e in evs if e["pid"] == pid and e["filename"] == "/bin/true"]
    assert len(mine) == 1 and mine[0]["comm"] == "sh"
    assert not any(o.get("global", "").startswith("__") for o in jlines(r.stdout))


def test_run_mallocsize_py_histogram():
    r = run("examples/mallocsize.py", "--json", "--", PY, "-c",
            "import ctypes; l = ctypes.CDLL(None); l.malloc.restype = ctypes.c_void_p; "
            "[l.malloc(5000) for _ in range(300)]")
    hist = next(o["histogram"] for o in jlines(r.stdout) if o.get("map") == "sizes")
    assert hist and hist[-1] != 0
    assert hist[13] >= 300          # 5000 is in bucket 13: 4096 -> 8191


def test_run_mallocsize_py_text_bars():
    r = run("examples/mallocsize.py", "--duration", "0.2")
    assert "sizes:" in r.stdout and "distribution" in r.stdout


CG_PROG = '''
from pybpfc import ArrayMap, bpf, u32, u64

pkts = ArrayMap(u32, u64, max_entries=1)


@bpf.cgroup_skb("egress")
def count_egress(skb) -> int:
    pkts[0] += 1
    return 1
'''


def test_run_cgroup_program_on_a_cgroup(tmp_path):
    import socket
    import uuid

    from pybpfc.backends.kernel.attach import cgroup

    root = cgroup.cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2")
    src = tmp_path / "cg.py"
    src.write_text(CG_PROG)
    cg = os.path.join(root, f"pybpfc_attach_{uuid.uuid4().hex[:8]}")
    os.mkdir(cg)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        sender = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  f"[s.sendto(b'x', ('127.0.0.1', {rx.getsockname()[1]})) for _ in range(7)]")
        # the command moves itself into the cgroup, then sends 7 datagrams
        r = run(str(src), "--cgroup", cg, "--json", "--", "sh", "-c",
                f"echo $$ > {cg}/cgroup.procs && exec {PY} -c \"{sender}\"")
    finally:
        rx.close()
        os.rmdir(cg)
    pkts = next(o for o in jlines(r.stdout) if o.get("map") == "pkts")
    assert pkts["entries"] == [{"key": 0, "value": 7}]
    r = subprocess.run([PY, "-m", "pybpfc", "run", str(src), "--duration", "0.1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "prog 'count_egress': cgroup programs attach to a cgroup: pass --cgroup PATH" in r.stderr

"""`pybpfc build`, `check` and `dump` as a user runs them, and the example programs here."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pybpfc
from compiler_helpers import kernel_ok, needs_kernel, write

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(HERE)))


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pybpfc.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=120)


def test_build_obj_ir_asm(tmp_path):
    src = os.path.join(HERE, "programs", "xdp_counter.py")
    out = tmp_path / "x.o"
    r = cli("build", src, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x7fELF"
    r = cli("build", src, "--emit", "ir", "-o", "-", "-O", "0", "--mcpu", "v2")
    assert r.returncode == 0 and "define dso_local i32 @count" in r.stdout
    r = cli("build", src, "--emit", "asm", "-o", "-")
    assert r.returncode == 0 and "exit" in r.stdout


def test_build_reports_errors_without_traceback(tmp_path):
    path = write(tmp_path, "@bpf.xdp\ndef p(ctx) -> int:\n    return 1.5\n")
    r = cli("build", path, "-o", str(tmp_path / "x.o"))
    assert r.returncode == 1
    assert "prog.py:5:12: error: floating-point numbers are not supported" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.o").exists()


def test_dump_interleaves_python_source(tmp_path):
    r = cli("dump", os.path.join(HERE, "programs", "xdp_counter.py"))
    assert r.returncode == 0, r.stderr
    assert "eth = ctx.packet(EthHdr, 0)" in r.stdout and "s = stats.lookup(ip.protocol)" in r.stdout
    assert "call" in r.stdout
    r = cli("dump", os.path.join(HERE, "programs", "xdp_counter.py"), "--btf")
    if r.returncode == 0:
        assert "STRUCT 'Stats' size=16 vlen=2" in r.stdout


@needs_kernel
def test_check_accepts_and_reports_verifier_rejection_with_python_lines(tmp_path):
    r = cli("check", os.path.join(HERE, "programs", "tc_marker.py"))
    assert r.returncode == 0, r.stderr
    assert "tc_count" in r.stdout and "verified" in r.stdout
    # a helper the kernel does not allow in XDP programs: compiles, then the verifier says no
    path = write(tmp_path, "@bpf.xdp\ndef p(ctx) -> int:\n    x = 1\n    t = bpf.skb_store_bytes(ctx, 0, 0, 0, 0)\n"
                           "    return XDP_PASS if t else XDP_DROP\n")
    r = cli("check", path)
    assert r.returncode == 1
    assert "verifier" in r.stderr
    assert "t = bpf.skb_store_bytes(ctx, 0, 0, 0, 0)" in r.stderr     # the log names the Python line


@needs_kernel
def test_example_programs_run(tmp_path):
    with pybpfc.load(os.path.join(HERE, "programs", "xdp_counter.py"), backend="kernel") as obj:
        eth = bytes(12) + b"\x08\x00"
        ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0]) + bytes([10, 0, 0, 2]) + bytes([10, 0, 0, 3])
        p = obj.programs.count
        assert p.test_run(eth + ip + bytes(20)).retval == pybpfc.XDP_PASS
        assert p.test_run(eth + ip + bytes(20)).retval == pybpfc.XDP_PASS
        blocked = ip[:12] + bytes([10, 0, 0, 1]) + ip[16:]
        assert p.test_run(eth + blocked + bytes(20)).retval == pybpfc.XDP_DROP
        st = obj.maps.stats[17]
        assert (st.packets, st.bytes) == (2, 40)
    with pybpfc.load(os.path.join(HERE, "programs", "tc_marker.py"), backend="kernel") as obj:
        assert obj.programs.tc_count.test_run(bytes(60)).retval == pybpfc.TC_ACT_OK
        assert obj.programs.tc_count.test_run(bytes(200)).retval == pybpfc.TC_ACT_OK
        assert obj.globals.seen == 2 and obj.globals.long_packets == 1
        # cgroup_skb sees the packet from the network header (test_run strips the Ethernet header)
        assert obj.programs.allow_all.test_run(bytes(14) + b"\x45" + bytes(40)).retval == 1
        assert obj.programs.allow_all.test_run(bytes(14) + b"\xff" + bytes(40)).retval == 0


def test_mypy_accepts_programs_with_the_plugin(tmp_path):
    pytest.importorskip("mypy")
    root = os.path.dirname(os.path.dirname(HERE))
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nplugins = pybpfc.lang.mypy_plugin\nignore_missing_imports = True\n"
                   "follow_imports = silent\n")
    files = [os.path.join(root, "examples", f) for f in sorted(os.listdir(os.path.join(root, "examples")))
             if f.endswith(".py")] + [os.path.join(HERE, "programs", f) for f in ("xdp_counter.py", "tc_marker.py", "flows.py")]
    bad = write(tmp_path, "from pybpfc import u8\nx: u8 = b'no'\n", name="bad.py", header=False)
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir", str(tmp_path / "c"),
                        *files, bad], capture_output=True, text=True, env=ENV, timeout=300)
    assert "bad.py:2: error: Incompatible types in assignment" in r.stdout, r.stdout
    assert r.stdout.count("error:") == 1, r.stdout


def test_dump_without_llvm_tools_uses_own_disassembler(monkeypatch, capsys):
    from pybpfc.cli import dump
    monkeypatch.setattr(dump, "OBJDUMP", ("no-such-objdump",))
    obj = pybpfc.compile(os.path.join(HERE, "programs", "xdp_counter.py"))
    assert dump._disasm(obj, "xdp_counter.py") == 0
    out = capsys.readouterr().out
    assert "count (xdp):" in out
    assert "; xdp_counter.py:39: eth = ctx.packet(EthHdr, 0)" in out
    assert "exit" in out


@needs_kernel
def test_flows_example(tmp_path):
    def pkt(src, sport, proto=17, length=60):
        eth = bytes(12) + b"\x08\x00"
        ip = bytes([0x45, 0]) + length.to_bytes(2, "big") + bytes(4) + bytes([64, proto, 0, 0]) + \
            bytes([10, 0, 0, src]) + bytes([10, 0, 0, 99])
        return eth + ip + sport.to_bytes(2, "big") + (53).to_bytes(2, "big") + bytes(40)

    path = os.path.join(HERE, "programs", "flows.py")
    with pybpfc.load(path, backend="kernel", consts={"min_len": 50}) as obj:
        p = obj.programs.track
        for args in [(1, 1000), (1, 1000), (2, 2000), (3, 3000, 6), (4, 4000, 17, 40)]:
            assert p.test_run(pkt(*args)).retval == pybpfc.XDP_PASS
        flows = {(k.saddr >> 24, k.sport, k.dport, k.proto): (v.packets, v.bytes) for k, v in obj.maps.flows.items()}
        assert flows == {(1, 1000, 53, 17): (2, 120), (2, 2000, 53, 17): (1, 60), (3, 3000, 53, 6): (1, 60)}
        assert obj.globals.skipped == 1
        evs = obj.ringbuf("new_flows").poll(timeout=0.5)
        assert sorted(e.key.sport for e in evs) == [1000, 2000, 3000]


def test_dump_types_shows_the_checked_program():
    r = cli("dump", "--types", os.path.join(HERE, "programs", "flows.py"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "track (xdp, section xdp) -> i32" in out
    assert "    size: u16" in out and "    st: ref FlowStats" in out and "    now: u64" in out
    assert "swap16 (subprogram, section .text) -> u16" in out
    assert "map new_flows: RingBuf(event NewFlow, max_entries=16384)" in out
    assert "const min_len: u32 = 0" in out

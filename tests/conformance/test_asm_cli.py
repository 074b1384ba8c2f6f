"""`pybpfc asm`: assemble, disassemble (raw, .data, ELF objects), run, and clear errors."""
import os

from pybpfc.cli import main

SUITE = "/work/shared/conformance"
BENCH = "/work/shared/bench/vm/bench.bpf.o"


def test_assemble_disassemble_run(tmp_path, capsys):
    src = tmp_path / "p.s"
    src.write_text("mov %r0, 5\nlsh %r0, 2\nexit\n")
    out = tmp_path / "p.bin"
    assert main(["asm", str(src), "-o", str(out)]) == 0
    assert out.read_bytes()[:8].hex() == "b700000005000000"
    assert main(["asm", "-d", str(out)]) == 0
    assert "1: lsh %r0, 2" in capsys.readouterr().out
    assert main(["asm", str(src), "--run"]) == 0
    assert "r0 = 0x14" in capsys.readouterr().out


def test_run_data_file(capsys):
    assert main(["asm", os.path.join(SUITE, "tests", "subnet.data"), "--run"]) == 0
    assert "r0 = 0x1 " in capsys.readouterr().out


def test_disassemble_object(capsys):
    if not os.path.exists(BENCH):
        return
    assert main(["asm", "-d", BENCH, "-p", "xdp_bpf_loop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("xdp_bpf_loop:") and "func(+6)" in out and "call 181" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["asm", os.path.join(SUITE, "negative", "invalid_register.data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybpfc asm: ") and "invalid_register.data:4: invalid register %r50" in err
    bad = tmp_path / "b.s"
    bad.write_text("mov %r0, 0\nldxdw %r0, [%r10+8]\nexit\n")
    assert main(["asm", str(bad), "--run"]) == 1
    assert "insn 1: stack access [r10+8]" in capsys.readouterr().err
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 5)
    assert main(["asm", "-d", str(odd)]) == 1
    assert "not a whole number" in capsys.readouterr().err

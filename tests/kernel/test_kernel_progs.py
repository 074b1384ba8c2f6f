"""Program load and test_run: verifier rejections point at source lines; test_run for the
program types the kernel can run; BTF-attached programs find their vmlinux target."""
import os
import shutil
import struct
import subprocess

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.elf.spec import LineInfo

from kernel_helpers import collection, kernel_or_skip, prog


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()


def test_verifier_error_maps_insns_to_source_lines():
    # r0 is never set: rejected at the exit (insn 2), which LineInfo puts on line 12.
    lines = [LineInfo(insn=0, file="prog.py", line=10, col=5, source="x = 1"),
             LineInfo(insn=2, file="prog.py", line=12, col=5, source="return r")]
    p = prog("noret", "mov %r1, 1\nmov %r2, 2\nexit", lines=lines)
    with pytest.raises(pybpfc.VerifierError) as ei:
        pybpfc.load(collection([], [p]), backend="kernel")
    e = ei.value
    assert (e.insn, e.line_info) == (2, lines[1])
    first = str(e).splitlines()[0]
    assert first.startswith("prog 'noret': rejected by the verifier at prog.py:12:5 (insn 2): ")
    assert "R0 !read_ok" in first
    assert "\n    return r\n" in str(e)
    log = e.log.splitlines()
    # every instruction follows the source line it came from
    assert log.index("; prog.py:10:5: x = 1") < log.index(next(l for l in log if l.startswith("0: (b7)")))
    assert log.index("; prog.py:12:5: return r") == log.index(next(l for l in log if l.startswith("2: (95)"))) - 1


def test_verifier_error_from_clang_object_uses_btf_line_info(tmp_path):
    if not shutil.which("clang-19"):
        pytest.skip("clang-19 not installed")
    src = tmp_path / "oob.bpf.c"
    src.write_text('#include <linux/bpf.h>\n'
                   '__attribute__((section("xdp"), used))\n'
                   'int oob(struct xdp_md *ctx)\n'
                   '{\n'
                   '\tunsigned char *p = (unsigned char *)(long)ctx->data;\n'
                   '\treturn p[100];\n'
                   '}\n'
                   'char LICENSE[] __attribute__((section("license"), used)) = "GPL";\n')
    obj = tmp_path / "oob.bpf.o"
    subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(pybpfc.VerifierError) as ei:
        pybpfc.load(str(obj), backend="kernel")
    msg = str(ei.value)
    assert msg.startswith(f"prog 'oob': rejected by the verifier at {src}:6:")
    assert "invalid access to packet" in msg and "\n    return p[100];\n" in msg
    assert "; return p[100]; @ oob.bpf.c:6" in ei.value.log  # the kernel's own annotation kept


def test_long_verifier_log_is_captured_whole():
    # ~60k straight-line instructions, rejected at the end: the log outgrows the first buffer.
    from pybpfc.elf.spec import ProgramSpec

    insns = struct.pack("<BBhi", 0xb7, 1, 0, 1) * 60000 + struct.pack("<BBhi", 0x95, 0, 0, 0)
    p = ProgramSpec(name="long", section="xdp", type=U.BPF_PROG_TYPE_XDP, insns=insns)
    with pytest.raises(pybpfc.VerifierError) as ei:
        pybpfc.load(collection([], [p]), backend="kernel")
    log = ei.value.log
    assert len(log) > (1 << 20)
    assert log.splitlines()[0].startswith("0: R1=ctx() R10=fp0") or "0: (b7) r1 = 1" in log.splitlines()[1]
    assert "60000: (95) exit" in log and "R0 !read_ok" in str(ei.value).splitlines()[0]


def test_bad_instructions_are_clear_load_errors():
    from pybpfc.elf.spec import ProgramSpec

    p = ProgramSpec(name="short", section="xdp", type=U.BPF_PROG_TYPE_XDP, insns=b"\x95" * 7)
    with pytest.raises(pybpfc.LoadError, match=r"prog 'short': instructions must be a non-empty multiple of 8"):
        pybpfc.load(collection([], [p]), backend="kernel")


# Write 0xAA into the first packet byte (with the bounds check the verifier wants).
XDP_WRITE = """
ldxw %r2, [%r1+0]
ldxw %r3, [%r1+4]
mov %r4, %r2
add %r4, 1
jgt %r4, %r3, out
mov %r5, 0xaa
stxb [%r2], %r5
out:
mov %r0, 3
exit
"""


def test_xdp_test_run_returns_changed_packet():
    with pybpfc.load(collection([], [prog("w", XDP_WRITE)]), backend="kernel") as c:
        r = c.programs.w.test_run(b"\x01\x02\x03" + bytes(61), repeat=100)
        assert r.retval == U.XDP_TX
        assert r.data == b"\xaa\x02\x03" + bytes(61)
        assert r.duration_ns >= 0


def test_sched_cls_negative_return_and_ctx():
    p = prog("cls", "mov %r0, -1\nexit", type=U.BPF_PROG_TYPE_SCHED_CLS, section="tc", kind="tc")
    with pybpfc.load(collection([], [p]), backend="kernel") as c:
        assert c.programs.cls.test_run(bytes(64)).retval == U.TC_ACT_UNSPEC


def test_raw_tracepoint_test_run_with_ctx():
    # return args[0] + args[1]
    text = "ldxdw %r0, [%r1+0]\nldxdw %r2, [%r1+8]\nadd %r0, %r2\nexit"
    p = prog("rtp", text, type=U.BPF_PROG_TYPE_RAW_TRACEPOINT, section="raw_tp/sys_enter",
             kind="raw_tracepoint", license="GPL")
    with pybpfc.load(collection([], [p]), backend="kernel") as c:
        r = c.programs.rtp.test_run(ctx=struct.pack("<QQ", 40, 2))
        assert r.retval == 42


def test_syscall_program_ctx_out():
    # *(u32 *)ctx += 1; return 7
    text = "ldxw %r2, [%r1+0]\nadd %r2, 1\nstxw [%r1+0], %r2\nmov %r0, 7\nexit"
    p = prog("sysp", text, type=U.BPF_PROG_TYPE_SYSCALL, section="syscall", kind="syscall",
             sleepable=True)
    with pybpfc.load(collection([], [p]), backend="kernel") as c:
        r = c.programs.sysp.test_run(ctx=struct.pack("<I", 41))
        assert (r.retval, r.ctx) == (7, struct.pack("<I", 42))


def _fentry(target):
    return prog("fe", "mov %r0, 0\nexit", type=U.BPF_PROG_TYPE_TRACING, section=f"fentry/{target}",
                kind="fentry", attach_to=target, expected_attach_type=U.BPF_TRACE_FENTRY)


def test_tp_btf_load_finds_vmlinux_btf_id():
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    from pybpfc.backends.kernel.vmlinux import KIND_TYPEDEF, find

    p = prog("tpb", "mov %r0, 0\nexit", type=U.BPF_PROG_TYPE_TRACING, section="tp_btf/sys_enter",
             kind="tp_btf", attach_to="sys_enter", expected_attach_type=U.BPF_TRACE_RAW_TP)
    with pybpfc.load(collection([], [p]), backend="kernel") as c:
        info = c.programs.tpb.raw.info()
        assert info.attach_btf_id == find("btf_trace_sys_enter", KIND_TYPEDEF) != 0
    with pytest.raises(pybpfc.LoadError, match=r"prog 'fe': 'no_such_fn_xyz' not found in the kernel's BTF"):
        pybpfc.load(collection([], [_fentry("no_such_fn_xyz")]), backend="kernel")


def test_fentry_loads_or_says_why_not():
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    try:
        c = pybpfc.load(collection([], [_fentry("bpf_fentry_test1")]), backend="kernel")
    except pybpfc.NotSupportedError as e:
        assert str(e).startswith("prog 'fe': this kernel refused to load fentry programs")
        return
    with c:
        assert c.programs.fe.raw.info().attach_btf_id != 0


def test_pin_program(tmp_path):
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs not mounted")
    from pybpfc.backends.kernel import syscall as sc

    path = f"/sys/fs/bpf/pybpfc_kprog_{os.getpid()}"
    with pybpfc.load(collection([], [prog("p", "mov %r0, 2\nexit")]), backend="kernel") as c:
        c.programs.p.pin(path)
        try:
            fd = sc.obj_get(path)
            assert sc.prog_info(fd).id == c.programs.p.raw.info().id
            os.close(fd)
        finally:
            os.unlink(path)


def test_rejected_btf_loads_without_it_and_says_so():
    from pybpfc.elf.spec import MapSpec

    ms = MapSpec(name="h", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=4, max_entries=4,
                 btf_key_type_id=1, btf_value_type_id=1)
    spec = collection([ms], [prog("p", "lddw %r1, map:h\nmov %r0, 2\nexit",
                                  lines=[LineInfo(insn=0, file="x.py", line=1, col=1)])])
    spec.btf = b"\x9f\xeb\x01\x00" + bytes(20)  # a header that promises nothing valid
    with pytest.warns(RuntimeWarning, match="BTF load failed"):
        c = pybpfc.load(spec, backend="kernel")
    with c:
        assert c.programs.p.test_run(bytes(64)).retval == 2
        assert c.maps.h.raw.info().btf_id == 0
        assert any("loading without BTF" in w for w in c.backend.warnings)


def test_oversized_verifier_log_keeps_its_end(monkeypatch):
    from pybpfc.backends.kernel import programs
    from pybpfc.elf.spec import ProgramSpec

    monkeypatch.setattr(programs, "LOG_START", 4096)
    monkeypatch.setattr(programs, "LOG_MAX", 64 << 10)
    insns = struct.pack("<BBhi", 0xb7, 1, 0, 1) * 60000 + struct.pack("<BBhi", 0x95, 0, 0, 0)
    p = ProgramSpec(name="long", section="xdp", type=U.BPF_PROG_TYPE_XDP, insns=insns)
    with pytest.raises(pybpfc.VerifierError) as ei:
        pybpfc.load(collection([], [p]), backend="kernel")
    log = ei.value.log
    first = log.splitlines()[0]
    if first.startswith("(verifier log cut to its first"):
        pytest.skip("kernel older than 6.4 keeps the head of a cut log")
    assert first.startswith("(verifier log cut to its last ") and len(log) < (64 << 10) + 200
    assert "60000: (95) exit" in log  # the end, where the reason is
    assert "R0 !read_ok" in str(ei.value).splitlines()[0]

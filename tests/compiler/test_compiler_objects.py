"""The objects pybpfc writes: libbpf-style sections, BTF (bpftool's view), line info, options."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import uuid

import pytest

import pybpfc
from compiler_helpers import kernel_ok, write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))) + \
    sorted(glob.glob(os.path.join(ROOT, "tests", "compiler", "programs", "*.py")))
BPFTOOL = shutil.which("bpftool")
needs_bpftool = pytest.mark.skipif(not (BPFTOOL and kernel_ok()), reason="needs bpftool, root and kernel eBPF")


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
@needs_bpftool
def test_bpftool_loadall_examples(tmp_path, path):
    obj = tmp_path / "prog.bpf.o"
    obj.write_bytes(pybpfc.compile(path))
    pin = f"/sys/fs/bpf/pybpfc_compiler_{uuid.uuid4().hex[:8]}"
    try:
        r = subprocess.run([BPFTOOL, "prog", "loadall", str(obj), pin], capture_output=True, text=True)
        if r.returncode and "failed to guess program type from ELF section 'tc/" in r.stderr:
            pytest.skip("this bpftool's libbpf predates tcx section names (tc/ingress); "
                        "the kernel backend test loads it")
        assert r.returncode == 0, r.stderr[-3000:]
        assert os.listdir(pin)
    finally:
        shutil.rmtree(pin, ignore_errors=True)


@pytest.mark.skipif(not BPFTOOL, reason="needs bpftool")
def test_btf_structs_by_name_with_offsets(tmp_path):
    path = write(tmp_path, """
class Inner(Struct):
    a: u8
    b: u64

class Event(Struct):
    pid: u32
    inner: Inner
    comm: Str[16]
    vals: Array[u16, 3]
    flag: bool

events = RingBuf(max_entries=4096)
by_pid = HashMap(u32, Event, max_entries=8)

@bpf.tracepoint("syscalls/sys_enter_getppid")
def p(ctx) -> int:
    events.output(Event(pid=1))
    return 0
""")
    obj = tmp_path / "o.o"
    obj.write_bytes(pybpfc.compile(path))
    out = subprocess.run([BPFTOOL, "btf", "dump", "file", str(obj)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"STRUCT 'Event' size=(\d+) vlen=5\n((?:\t.*\n)+)", out)
    assert m, out
    assert int(m.group(1)) == 48
    members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", m.group(2)))
    assert members == {"pid": "0", "inner": "64", "comm": "192", "vals": "320", "flag": "368"}
    assert re.search(r"STRUCT 'Inner' size=16 vlen=2\n\t'a' type_id=\d+ bits_offset=0\n\t'b' type_id=\d+ bits_offset=64", out)
    assert "DECL_TAG 'pybpfc:event=Event'" in out
    assert re.search(r"DATASEC '.maps'", out) and re.search(r"FUNC 'p' type_id=\d+ linkage=global", out)


def test_sections_program_types_and_map_specs(tmp_path):
    path = write(tmp_path, """
ht = Histogram(u64)
pa = ProgArray(max_entries=4)
st = StackTraceMap(max_entries=16)
lpm = LpmTrie(u64, u32, max_entries=16)
pinned = HashMap(u32, u32, max_entries=4, pinned=True)

@bpf.xdp
def a(ctx) -> int:
    return XDP_PASS

@bpf.socket_filter
def b(skb) -> int:
    return 0

@bpf.tc("ingress")
def c(skb) -> int:
    return 0

@bpf.cgroup_skb("egress")
def d(skb) -> int:
    return 1

@bpf.kprobe("do_unlinkat")
def e(dfd: i32) -> int:
    return 0

@bpf.kretprobe("do_unlinkat")
def f(ret: i64) -> int:
    return 0

@bpf.uprobe("libc:malloc")
def g(size: u64) -> int:
    return 0

@bpf.perf_event
def h(ctx) -> int:
    st.get_stackid(ctx, 0)
    return 0

@bpf.raw_tracepoint("sys_enter")
def i(ctx) -> int:
    pa.tail_call(ctx, 1)
    return 0

@bpf.section("fentry/do_unlinkat")
def j(ctx) -> int:
    return 0
""")
    spec = pybpfc.read_spec(path)
    secs = {n: p.section for n, p in spec.programs.items()}
    assert secs == {"a": "xdp", "b": "socket", "c": "tc/ingress", "d": "cgroup_skb/egress", "e": "kprobe/do_unlinkat",
                    "f": "kretprobe/do_unlinkat", "g": "uprobe/libc:malloc", "h": "perf_event",
                    "i": "raw_tracepoint/sys_enter", "j": "fentry/do_unlinkat"}
    from pybpfc import uapi as U
    assert spec.programs["a"].type == U.BPF_PROG_TYPE_XDP
    assert spec.programs["b"].type == U.BPF_PROG_TYPE_SOCKET_FILTER
    assert spec.maps["ht"].tags.get("histogram") == "log2" and spec.maps["ht"].max_entries == 65
    assert spec.maps["pa"].type == U.BPF_MAP_TYPE_PROG_ARRAY and spec.maps["pa"].key_size == 4
    assert spec.maps["st"].value_size == 127 * 8
    assert spec.maps["lpm"].flags & U.BPF_F_NO_PREALLOC
    assert spec.maps["pinned"].pinning == 1
    assert spec.license == "GPL"


def test_line_info_points_at_python_source(tmp_path):
    path = write(tmp_path, """
counts = HashMap(u32, u64, max_entries=16)

@bpf.xdp
def prog(ctx) -> int:
    x = 1
    counts[x] += 1
    return XDP_PASS
""")
    spec = pybpfc.read_spec(path)
    li = spec.programs["prog"].line_info
    assert li, "no line info"
    files = {os.path.basename(x.file) for x in li}
    assert files == {"prog.py"}
    lines = {x.line for x in li}
    # def line 7, counts[x] += 1 on 9, return on 10 (x = 1 is folded away)
    assert {9, 10} <= lines and lines <= {7, 8, 9, 10}
    assert spec.programs["prog"].func_info


def test_emit_ir_asm_and_mcpu(tmp_path):
    path = write(tmp_path, """
@bpf.xdp
def prog(ctx) -> int:
    a: i32 = 7
    return a // 2
""")
    ir = pybpfc.compile(path, emit="ir").decode()
    assert 'section "xdp"' in ir and "!DISubprogram" in ir
    asm = pybpfc.compile(path, emit="asm").decode()
    assert "exit" in asm
    for cpu in ("v1", "v2", "v3", "v4"):
        assert pybpfc.compile(path, mcpu=cpu)[:4] == b"\x7fELF"
    assert pybpfc.compile(path, opt_level=0)[:4] == b"\x7fELF"
    with pytest.raises(pybpfc.Error, match="mcpu"):
        pybpfc.compile(path, mcpu="v9")


def test_saved_tracepoint_format_for_cross_builds(tmp_path):
    fmt_dir = tmp_path / "formats" / "myc" / "my_event"
    fmt_dir.mkdir(parents=True)
    (fmt_dir / "format").write_text(
        "name: my_event\nID: 1\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:int value;\toffset:8;\tsize:4;\tsigned:1;\n"
        "\tfield:char name[16];\toffset:12;\tsize:16;\tsigned:0;\n")
    path = write(tmp_path, """
seen = HashMap(u32, i32, max_entries=4)

@bpf.tracepoint("myc/my_event")
def p(ctx) -> int:
    if ctx.name == b"x":
        seen[0] = ctx.value
    return 0
""")
    ir = pybpfc.compile(path, emit="ir", tracepoint_formats=str(tmp_path / "formats")).decode()
    assert "tracepoint/myc/my_event" in ir
    with pytest.raises(pybpfc.CompileError, match=r"tracepoint 'myc/my_event' not found"):
        pybpfc.compile(path)


def test_imported_structs_and_helpers_from_project_module(tmp_path):
    (tmp_path / "events_lib.py").write_text(
        "from pybpfc import Struct, u32, u64\n\n"
        "class Ev(Struct):\n    a: u32\n    b: u64\n\n"
        "def twice(x: u64) -> u64:\n    return x * 2\n")
    path = write(tmp_path, """
from events_lib import Ev, twice
import events_lib

m = ArrayMap(u32, Ev, max_entries=1)

@bpf.xdp
def prog(ctx) -> int:
    r = m.lookup(0)
    if r is None:
        return 0
    r.a = 21
    r.b = events_lib.twice(r.a)
    return twice(r.a)
""")
    if not kernel_ok():
        pybpfc.compile(path)
        return
    with pybpfc.load(path, backend="kernel") as obj:
        assert obj.programs.prog.test_run(bytes(64)).retval == 42
        assert obj.maps.m[0].b == 42


def test_edited_project_module_is_read_again(tmp_path):
    lib = tmp_path / "shared_consts.py"
    lib.write_text("VALUE = 7\n")
    path = write(tmp_path, "from shared_consts import VALUE\n@bpf.xdp\ndef prog(ctx) -> int:\n    return VALUE\n")
    assert "ret i32 7" in pybpfc.compile(path, emit="ir").decode()
    lib.write_text("VALUE = 9\n")
    assert "ret i32 9" in pybpfc.compile(path, emit="ir").decode()

"""`pybpfc build` start-up work: only the build subcommand is imported, LLVM is loaded in the
code generation child (forked before the frontend runs), helper prototypes come from an on-disk
cache. Each must give the same results and errors as the plain in-process path."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pybpfc.codegen as codegen
import pybpfc.codegen.llvm as LLVM
from pybpfc.errors import CompileError, Error
from pybpfc.frontend import helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "xdp_proto.py")
ENV = dict(os.environ, PYTHONPATH=ROOT)

STACK_HOG = """from pybpfc import *

class Big(Struct):
    data: Array[u64, 100]

m = HashMap(u32, Big, max_entries=4)

@bpf.xdp
def p(ctx) -> int:
    a = Big()
    b = Big()
    a.data[3] = bpf.ktime_get_ns()
    b.data[5] = bpf.ktime_get_ns()
    m[1] = a
    m[2] = b
    return 0
"""


def py(code: str, *args, cache=None):
    env = dict(ENV, PYBPFC_CACHE_DIR=str(cache)) if cache else ENV
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def build(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "pybpfc.cli", "build", *args], capture_output=True, text=True,
                          env=dict(ENV, PYBPFC_CACHE_DIR=str(tmp_path / "cache")), timeout=120)


def test_build_imports_only_its_subcommand_and_loads_llvm_in_the_child(tmp_path):
    out = tmp_path / "x.o"
    r = py("import sys; from pybpfc.cli import main; rc = main(sys.argv[1:]); "
           "print(rc, sorted(m for m in sys.modules if m.startswith('pybpfc.cli.')), 'llvmlite.binding' in sys.modules)",
           "build", EXAMPLE, "-o", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "0 ['pybpfc.cli.build'] False"
    assert out.read_bytes()[:4] == b"\x7fELF"


def test_help_and_unknown_commands_still_list_every_subcommand():
    r = py("from pybpfc.cli import main; main(['--help'])")
    for name in ("build", "check", "dump", "run", "exec", "doctor", "asm"):
        assert f"\n    {name} " in r.stdout
    r = py("import sys; from pybpfc.cli import main; sys.exit(main(['biuld']))")
    assert r.returncode == 2 and "invalid choice: 'biuld'" in r.stderr and "'doctor'" in r.stderr


@pytest.mark.parametrize("emit", ["obj", "ir", "asm"])
def test_forked_child_output_equals_in_process_output(tmp_path, emit):
    out = tmp_path / f"x.{emit}"
    r = build(EXAMPLE, "--emit", emit, "-o", str(out), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    codegen._first_compile = False  # this process: LLVM in process, only emission forked
    assert codegen.compile_file(EXAMPLE, emit=emit) == out.read_bytes()


@pytest.mark.parametrize("way", ["capi", "binding"])
def test_first_compile_in_a_process_forks_early_then_llvm_stays_in_process(tmp_path, way):
    if way == "capi" and not CAPI_CHECKED:
        pytest.skip(f"llvmlite {LLVM._llvmlite_version()} is not one the C-API path was checked against")
    r = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom pybpfc.codegen import compile_file, llvm\n"
         "a = compile_file(sys.argv[1]); print(llvm.loaded(), 'llvmlite.binding' in sys.modules)\n"
         "b = compile_file(sys.argv[1]); print(llvm.loaded(), 'llvmlite.binding' in sys.modules, a == b, a[:4])\n",
         EXAMPLE], capture_output=True, text=True, timeout=120,
        env=dict(ENV, PYBPFC_CACHE_DIR=str(tmp_path / "cache"), PYBPFC_LLVM=way))
    assert r.returncode == 0, r.stderr
    # the C-API path never imports llvmlite.binding (its ~40 ms of imports are what it avoids)
    binding = str(way == "binding")
    assert r.stdout.split("\n")[:2] == ["False False", f"True {binding} True b'\\x7fELF'"]


CAPI_CHECKED = LLVM._llvmlite_version().startswith(LLVM.ABI_CHECKED)
BAD_IR = {
    "parse": "this is not LLVM IR",
    "verify": ("define i32 @f(i1 %c) {\nentry:\n  br i1 %c, label %a, label %b\na:\n  %x = add i32 1, 2\n"
               "  br label %b\nb:\n  ret i32 %x\n}\n"),
}


@pytest.mark.skipif(not CAPI_CHECKED, reason="llvmlite version not checked for the C-API path")
@pytest.mark.parametrize("example", ["xdp_proto", "execsnoop"])
@pytest.mark.parametrize("opt", [0, 2])
def test_c_api_path_gives_the_bytes_llvmlite_binding_gives(example, opt):
    text = codegen.lower_module(os.path.join(ROOT, "examples", f"{example}.py"))
    out = {}
    for api in (LLVM._CApi(), LLVM._Binding()):
        with api.optimize(text, opt, "v3") as mod:
            out[api.name] = (mod.ir(), mod.emit(asm=True), mod.emit())
    assert out["capi"] == out["binding"]
    assert out["capi"][2][:4] == b"\x7fELF" and "exit" in out["capi"][1].decode()


@pytest.mark.parametrize("way", ["capi", "binding"])
@pytest.mark.parametrize("bad", sorted(BAD_IR))
def test_ir_llvm_refuses_is_an_llvm_error_on_both_paths(way, bad):
    if way == "capi" and not CAPI_CHECKED:
        pytest.skip("llvmlite version not checked for the C-API path")
    api = LLVM._CApi() if way == "capi" else LLVM._Binding()
    with pytest.raises(LLVM.LLVMError) as e:
        api.optimize(BAD_IR[bad], 2, "v3")
    assert ("parsing error" if bad == "parse" else "does not dominate all uses") in str(e.value)


@pytest.mark.parametrize("setting, want", [("binding", "binding"), ("", "capi")])
def test_llvm_path_choice(setting, want):
    if want == "capi" and not CAPI_CHECKED:
        want = "binding"  # unchecked llvmlite versions always use the public API
    r = subprocess.run([sys.executable, "-c", "from pybpfc.codegen import llvm; print(llvm.backend().name)"],
                       capture_output=True, text=True, env=dict(ENV, PYBPFC_LLVM=setting), timeout=60)
    assert r.stdout.strip() == want, r.stderr


def test_llvm_exit_in_the_early_child_is_a_located_error(tmp_path):
    src = tmp_path / "hog.py"
    src.write_text(STACK_HOG)
    r = build(str(src), "-o", str(tmp_path / "hog.o"), tmp_path=tmp_path)
    assert r.returncode == 1
    assert f"{src}:10:5: error: " in r.stderr and "BPF stack limit is exceeded" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "hog.o").exists()


def test_frontend_error_with_the_child_running_is_reported_and_the_child_reaped(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("from pybpfc import *\n\n@bpf.xdp\ndef p(ctx) -> int:\n    return foo\n")
    r = py("import os, sys\nfrom pybpfc.cli import main\nrc = main(sys.argv[1:])\n"
           "try:\n    os.waitpid(-1, os.WNOHANG)\n    print(rc, 'child left')\n"
           "except ChildProcessError:\n    print(rc, 'no children')\n",
           "build", str(src), "-o", str(tmp_path / "bad.o"), cache=tmp_path / "cache")
    assert r.stdout.strip() == "1 no children", r.stdout + r.stderr
    assert f"{src}:5:12: error: name 'foo' is not defined" in r.stderr and "Traceback" not in r.stderr


def test_ir_rejected_by_llvm_in_the_early_child_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(codegen, "lower_module", lambda path, tp=None: "this is not LLVM IR")
    child = codegen._CodegenChild.start()
    pid = child.pid
    with pytest.raises(Error, match="internal compiler error: LLVM rejected the generated IR for x.py"):
        child.finish(codegen.lower_module("x.py"), "x.py", 2, "v3", "obj")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


INTERRUPTED_WAIT = """
import os
import pybpfc.codegen as C

real_waitpid, calls = os.waitpid, []

def waitpid(pid, flags):
    calls.append(pid)
    if len(calls) == 1:  # the first, blocking wait for the child: as if Ctrl-C arrived
        raise KeyboardInterrupt
    return real_waitpid(pid, flags)

child = C._CodegenChild.start()
pid = child.pid
os.waitpid = waitpid
try:
    child.finish("x", "x.py", 2, "v3", "obj")
except KeyboardInterrupt:
    print("interrupted")
os.waitpid = real_waitpid
try:
    os.waitpid(pid, os.WNOHANG)
    print("child left")
except ChildProcessError:
    print("no children")
"""


def test_interrupted_build_leaves_no_child(tmp_path):
    r = py(INTERRUPTED_WAIT, cache=tmp_path / "cache")
    assert r.stdout.split("\n")[:2] == ["interrupted", "no children"], r.stdout + r.stderr


def _plain(hs: dict) -> dict:
    return {k: (h.id, h.ret, [(p.name, p.ctype) for p in h.params]) for k, h in hs.items()}


@pytest.mark.skipif(not os.path.exists(H.HEADER), reason=f"{H.HEADER} not installed")
def test_helper_cache_matches_the_header_and_follows_its_changes(tmp_path, monkeypatch):
    header = tmp_path / "bpf.h"
    header.write_text(open(H.HEADER).read())
    monkeypatch.setenv("PYBPFC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(H, "HEADER", str(header))
    H.helpers.cache_clear()
    try:
        parsed = _plain(H.helpers())
        assert (tmp_path / "cache" / "helpers.marshal").exists()
        assert parsed["map_lookup_elem"][1:] == ("void *", [("map", "struct bpf_map *"), ("key", "const void *")])
        H.helpers.cache_clear()
        assert _plain(H.helpers()) == parsed  # now from the cache
        # an edited header (new mtime/size) is parsed again, not served from the stale cache
        header.write_text(header.read_text().replace(" * u64 bpf_ktime_get_ns(void)", " * long bpf_ktime_get_ns(u32 flags)"))
        H.helpers.cache_clear()
        assert _plain(H.helpers())["ktime_get_ns"][1:] == ("long", [("flags", "u32")])
        (tmp_path / "cache" / "helpers.marshal").write_bytes(b"garbage")
        H.helpers.cache_clear()
        assert _plain(H.helpers())["ktime_get_ns"][1:] == ("long", [("flags", "u32")])
    finally:
        H.helpers.cache_clear()


def test_unwritable_cache_dir_still_compiles(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PYBPFC_CACHE_DIR", str(blocker / "sub"))  # cannot create a dir under a file
    H.helpers.cache_clear()
    try:
        assert "map_lookup_elem" in H.helpers()
    finally:
        H.helpers.cache_clear()


NO_CHILD_LEFT = ("import os, sys\nfrom pybpfc.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
                 "except SystemExit as e:\n    rc = e.code\n"
                 "try:\n    os.waitpid(-1, os.WNOHANG)\n    print(rc, 'child left')\n"
                 "except ChildProcessError:\n    print(rc, 'no children')\n")


@pytest.mark.parametrize("args, rc", [(["--help"], 0), ([], 2), (["x.py", "--mcpu", "v9"], 2),
                                      (["/nonexistent/x.py"], 1)])
def test_prestarted_child_is_reaped_when_build_does_not_compile(tmp_path, args, rc):
    r = py(NO_CHILD_LEFT, "build", *args, cache=tmp_path / "cache")
    assert r.stdout.strip().splitlines()[-1] == f"{rc} no children", r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_package_names_resolve_lazily_and_match_the_language_surface():
    r = py("import sys, pybpfc\n"
           "print('pybpfc.lang' in sys.modules, 'pybpfc.api' in sys.modules)\n"
           "ns = {}\nexec('from pybpfc import *', ns)\n"
           "import pybpfc.lang as L, pybpfc.api as A, pybpfc.uapi as U\n"
           "assert sorted(set(L.__all__) - set(pybpfc.__all__)) == [], 'lang names missing from pybpfc.__all__'\n"
           "assert all(ns[n] is getattr(pybpfc, n) for n in pybpfc.__all__)\n"
           "assert pybpfc.HashMap is L.HashMap and pybpfc.load is A.load and pybpfc.XDP_PASS == U.XDP_PASS\n"
           "assert set(pybpfc.__all__) <= set(dir(pybpfc)) and 'lang' in dir(pybpfc)\n"
           "print(len(pybpfc.__all__))\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "60"]
    r = py("import pybpfc; pybpfc.no_such_name")
    assert "AttributeError: module 'pybpfc' has no attribute 'no_such_name'" in r.stderr


def test_gc_settings_are_restored_for_in_process_callers_and_frozen_only_at_program_exit(tmp_path):
    out = str(tmp_path / "x.o")
    r = py("import gc, sys\nfrom pybpfc.cli import main\nbefore = gc.get_threshold()\n"
           "rc = main(['build', sys.argv[1], '-o', sys.argv[2]])\n"
           "print(rc, gc.get_threshold() == before, gc.get_freeze_count())\n"
           "sys.argv = ['pybpfc', 'build', sys.argv[1], '-o', sys.argv[2]]\n"
           "rc = main()\nprint(rc, gc.get_freeze_count() > 0)\n", EXAMPLE, out, cache=tmp_path / "cache")
    assert r.stdout.split("\n")[:2] == ["0 True 0", "0 True"], r.stdout + r.stderr


def test_c_api_path_that_cannot_load_falls_back_to_llvmlite_binding(monkeypatch):
    def missing(self):
        raise AttributeError("function 'LLVMPY_ParseAssembly' not found")

    monkeypatch.setattr(LLVM._CApi, "__init__", missing)
    monkeypatch.setattr(LLVM, "_backend", None)
    monkeypatch.setenv("PYBPFC_LLVM", "capi")
    assert LLVM.backend().name == "binding"
    with LLVM.optimize(codegen.lower_module(EXAMPLE), 2, "v3") as mod:
        assert mod.emit()[:4] == b"\x7fELF"

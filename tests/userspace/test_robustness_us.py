"""The userspace runtime never crashes the process using it: misuse from Python (use after
close, a closed store under live maps/programs/readers, wrong sizes, unknown ids, stores too
small for their tables) raises a pybpfc error; JIT code stays mapped while it may run and is
never unmapped with another program's size; unverified programs naming registers r11..r15 stay
inside the interpreter's own state. Each scenario runs in a child process so a crash fails the
test instead of killing pytest; the last test reruns them all on an AddressSanitizer/UBSan
build of the runtime (see docs/userspace-robustness.md)."""
import os
import subprocess
import sys
import textwrap

import pytest

from pybpfc.backends.userspace import userspace_available

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRELUDE = """
import gc, struct, sys, threading
from pybpfc import uapi as U
from pybpfc.asm import assemble
from pybpfc.backends.userspace import UserspaceBackend, UserspaceProgram
from pybpfc.backends.userspace.maps import UserspaceMap
from pybpfc.elf.spec import MapSpec, ProgramSpec
from pybpfc.errors import Error, LoadError

def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)

def expect(fn, exc, text):
    try:
        fn()
    except exc as e:
        assert text in str(e), (text, str(e))
        return
    raise AssertionError(f"no {exc.__name__} ({text!r})")

def prog(be, src, ptype=U.BPF_PROG_TYPE_TRACEPOINT):
    insns = b"".join(i.encode() for i in assemble(src))
    return be.load_program(ProgramSpec("p", "tracepoint/a/b", ptype, insns=insns), {})
"""

SCENARIOS = {
    # maps' C fast path held the map's address in the store: after Store.close() it was unmapped
    "store_closed_under_maps": """
        be = UserspaceBackend(jit=False)
        m = be.create_map(MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 8, 4))
        m.update(u32(1), u64(1))
        be.store.close()
        for op in (lambda: m.lookup(u32(1)), lambda: m.update(u32(2), u64(2)), lambda: m.delete(u32(1)),
                   lambda: m.next_key(None), lambda: list(m.lookup_batch())):
            expect(op, Error, "map 'h': map is closed")
        m.close()
    """,
    # bound fast methods taken before close() kept calling into the (freed, then unmapped) map
    "fast_methods_kept_after_close": """
        be = UserspaceBackend(jit=False)
        m = be.create_map(MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 8, 4))
        m.update(u32(1), u64(1))
        lookup, update, delete = m.lookup, m.update, m.delete
        m.close()
        expect(lambda: lookup(u32(1)), Error, "map 'h': map is closed")
        expect(lambda: update(u32(1), u64(2)), Error, "map 'h': map is closed")
        expect(lambda: delete(u32(1)), Error, "map 'h': map is closed")
        st = be.store
        be.close(); del m; gc.collect()
        st.close()
        expect(lambda: lookup(u32(1)), Error, "map 'h': map is closed")
    """,
    "programs_after_close": """
        be = UserspaceBackend(jit=False)
        p = prog(be, "mov %r0, 7\\nexit")
        assert p.test_run(ctx=bytes(8)).retval == 7
        be.store.close()
        expect(lambda: p.test_run(ctx=bytes(8)), Error, "prog 'p': program is closed")
        expect(lambda: p.run(), Error, "prog 'p': program is closed")
        be2 = UserspaceBackend(jit=False)
        q = prog(be2, "mov %r0, 7\\nexit")
        q.close()
        expect(lambda: q.run(), Error, "prog 'p': program is closed")
        expect(lambda: q.use_jit(), Error, "prog 'p': program is closed")
    """,
    # the ring buffer's notify thread waits on a futex inside the store
    "ringbuf_reader_thread_then_store_closed": """
        be = UserspaceBackend(jit=False)
        m = be.create_map(MapSpec("rb", U.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096))
        rb = be.open_ringbuf(m)
        rb.fileno()
        be.store.close()
        assert not rb._thread.is_alive()
        expect(lambda: rb.poll(0), Error, "map 'rb': map is closed")
        expect(lambda: be.open_ringbuf(m), Error, "map 'rb': map is closed")
    """,
    # another thread inside test_run (GIL released) while the store is closed
    "store_closed_while_a_thread_runs": """
        be = UserspaceBackend(jit=False)
        p = prog(be, "mov %r0, 0\\nmov %r1, 3000\\nadd %r0, 1\\nsub %r1, 1\\njne %r1, 0, -3\\nexit")
        outcome = []
        started = threading.Event()
        def work():
            started.set()
            try:
                for _ in range(50):
                    outcome.append(p.test_run(ctx=bytes(8), repeat=20).retval)
            except Error as e:
                outcome.append(str(e))
        t = threading.Thread(target=work)
        t.start()
        started.wait()
        be.store.close()
        t.join()
        assert all(o == 3000 for o in outcome[:-1]), outcome[:3]
        assert outcome[-1] in (3000, "prog 'p': program is closed"), outcome[-1]
    """,
    # a backend, its maps and programs in a reference cycle, collected in whatever order
    "cycles_collected_with_fast_methods_alive": """
        kept = []
        for i in range(30):
            be = UserspaceBackend(jit=False)
            m = be.create_map(MapSpec("h", U.BPF_MAP_TYPE_ARRAY, 4, 8, 4))
            p = prog(be, "mov %r0, 1\\nexit")
            be.cycle = (be, m, p)
            m.update(u32(0), u64(i))
            if i % 3 == 0:
                kept.append(m.lookup)   # keeps the map, hence the store, alive
            del be, m, p
            gc.collect()
        assert [k(u32(0)) for k in kept] == [u64(i) for i in range(0, 30, 3)]
    """,
    # buffers are sized from the definition: a definition that disagrees with the stored map
    # made the C side copy past them
    "definitions_that_do_not_match_the_store": """
        be = UserspaceBackend(jit=False)
        m = be.create_map(MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 64, 4))
        expect(lambda: UserspaceMap(be.store, m.id, MapSpec("h", U.BPF_MAP_TYPE_HASH, 4, 8, 4), owner=False),
               LoadError, "map 'h': map %d in the store has type 1, key size 4, value size 64" % m.id)
        expect(lambda: UserspaceMap(be.store, 200, MapSpec("x", U.BPF_MAP_TYPE_HASH, 4, 8, 4), owner=False),
               LoadError, "map 'x': no map with id 200 in the store")
        expect(lambda: m.lookup(b"abc"), LoadError, "map 'h': key is 3 bytes, the map's key size is 4")
        expect(lambda: m.update(u32(1), b"x"), LoadError, "map 'h': value is 1 bytes")
        expect(lambda: m.update_batch([(u32(1), b"x")]), LoadError, "map 'h': value is 1 bytes")
        q = UserspaceProgram(be.store, 77, type("S", (), {"name": "ghost", "type": U.BPF_PROG_TYPE_TRACEPOINT}))
        from pybpfc.errors import RuntimeFault
        expect(lambda: q.test_run(ctx=bytes(8)), RuntimeFault, "prog 'ghost': stopped")
    """,
    # a second handle of the store (another loader, the agent) mapped program A's JIT code;
    # A was freed, B took its id with larger code: remapping unmapped A's mapping with B's size,
    # taking unrelated memory of the process with it
    "jit_remap_after_id_reuse": """
        import platform, types
        from pybpfc.backends.userspace.runtime import lib
        from pybpfc.backends.userspace.store import Store
        if platform.machine() != "x86_64":
            return
        L = lib()
        be = UserspaceBackend(jit=False)
        other = Store.open(be.store.path)
        ret7 = b"\\xb8\\x07\\x00\\x00\\x00\\xc3"                    # mov eax, 7; ret
        a = prog(be, "mov %r0, 1\\nexit")
        assert L.pbs_prog_set_jit(be.store.handle, a.id, ret7, len(ret7), 0) == 0
        assert L.pbs_prog_map_jit(other.handle, a.id) == 0
        a.close()
        b = prog(be, "mov %r0, 2\\nexit")
        assert b.id == a.id
        big = ret7 + b"\\x90" * (1 << 20)
        assert L.pbs_prog_set_jit(be.store.handle, b.id, big, len(big), 0) == 0
        before = open("/proc/self/maps").read().splitlines()
        assert L.pbs_prog_map_jit(other.handle, b.id) == 0
        after = open("/proc/self/maps").read().splitlines()
        # libraries and other file mappings (anonymous ones come and go with allocators)
        gone = [m for m in before if m not in after and len(m.split()) > 5 and "(deleted)" not in m]
        assert not gone, gone
        h = UserspaceProgram(other, b.id, types.SimpleNamespace(name="b", type=U.BPF_PROG_TYPE_TRACEPOINT))
        assert h.test_run(ctx=bytes(8)).retval == 7
        assert L.pbs_prog_map_jit(other.handle, b.id) == 0    # mapped already: kept
        assert h.test_run(ctx=bytes(8)).retval == 7
    """,
    # the loader closes a program while another handle of it (another thread) runs its JIT
    # code: the code stays mapped until the store is closed
    "jit_code_dropped_while_running": """
        import platform, types
        from pybpfc.backends.userspace.runtime import lib
        if platform.machine() != "x86_64":
            return
        L = lib()
        be = UserspaceBackend(jit=False)
        a = prog(be, "mov %r0, 1\\nexit")
        from cffi import FFI
        F = FFI()
        flag = F.new("volatile uint8_t *")
        # movabs rax, &flag; mov byte [rax], 1; mov ecx, 1 << 27; dec ecx; jnz -4; mov eax, 7; ret
        spin = (b"\\x48\\xb8" + struct.pack("<Q", int(F.cast("uintptr_t", flag))) + b"\\xc6\\x00\\x01"
                + b"\\xb9\\x00\\x00\\x00\\x08\\xff\\xc9\\x75\\xfc\\xb8\\x07\\x00\\x00\\x00\\xc3")
        assert L.pbs_prog_set_jit(be.store.handle, a.id, spin, len(spin), 0) == 0
        h = UserspaceProgram(be.store, a.id, types.SimpleNamespace(name="a", type=U.BPF_PROG_TYPE_TRACEPOINT))
        assert h.use_jit()
        out = []
        t = threading.Thread(target=lambda: out.append(h.test_run(ctx=bytes(8)).retval))
        t.start()
        while not flag[0]:  # the thread is inside the JIT code (the GIL is released there)
            pass
        a.close()           # the last reference: the program is freed under the running thread
        t.join()
        assert out == [7], out
    """,
    # a region count set past the table from Python (the run struct is plain cffi memory)
    "region_count_past_the_table": """
        from pybpfc.backends.userspace import vm as V
        from pybpfc.errors import RuntimeFault
        v = V.Vm(assemble("mov %r0, 1\\nexit"))
        v.run.nregions = 40
        expect(lambda: v.add_region(0x1000, 8), RuntimeFault, "region table full")
        assert V.lib().pbr_check_access(v.run, 0x1000, 8, V.PBR_PERM_R) == 0
        v.run.nregions = 0
        v.add_region(0x1000, 8)
        assert v() == 1
    """,
    # the header and tables were written past the end of a store smaller than them
    "store_sizes": """
        from pybpfc.backends.userspace.runtime import lib
        from pybpfc.backends.userspace.store import Store
        for size in (1, 4096, 65536):
            expect(lambda: Store.create(None, size), LoadError, f"size {size} is below the minimum")
        expect(lambda: UserspaceBackend(size=4096), LoadError, "store (memfd): cannot create: size 4096")
        expect(lambda: Store.create(None, -5), LoadError, "size -5 is negative")
        expect(lambda: Store.create(None, 1 << 60), LoadError, "cannot create")
        be = UserspaceBackend(jit=False, size=lib().pbs_min_size())
        expect(lambda: be.create_map(MapSpec("big", U.BPF_MAP_TYPE_ARRAY, 4, 1024, 4096)), LoadError,
               "map 'big': map create failed")
        m = be.create_map(MapSpec("a", U.BPF_MAP_TYPE_ARRAY, 4, 8, 1))
        m.update(u32(0), u64(5))
        assert prog(be, "mov %r0, 3\\nexit").test_run(ctx=bytes(8)).retval == 3
    """,
    # register fields are 4 bits; unverified programs may name r11..r15 (ASan: stack overflow)
    "unverified_registers_above_r10": """
        from pybpfc.backends.userspace import vm as V
        def ins(op, dst=0, src=0, off=0, imm=0): return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
        p = ins(0xb7, 6, imm=6) + ins(0x7a, 10, off=-8, imm=0x55)
        for d in range(11, 16):
            p += ins(0xb7, d, imm=-1) + ins(0x07, d, imm=d) + ins(0x1e, d, 12, off=0)  # jeq32 rD, r12
        p += ins(0x79, 0, 10, off=-8) + ins(0x0f, 0, 6) + ins(0x0f, 0, 15) + ins(0x95)
        assert V.run_program(p, b"", verify_first=False) == (0x55 + 6 + 14) & (2**64 - 1)
    """,
}


def _run(names, env=None):
    code = PRELUDE + "".join(
        f"\ndef s_{n}():\n" + textwrap.indent(textwrap.dedent(SCENARIOS[n]), "    ") for n in names)
    code += "".join(f"\ns_{n}()\nprint('ok {n}', flush=True)" for n in names)
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_misuse_raises_instead_of_crashing(name):
    r = _run([name])
    assert r.returncode == 0 and f"ok {name}" in r.stdout, \
        f"child exit {r.returncode}:\n{r.stdout[-1000:]}\n{r.stderr[-3000:]}"


def _asan_runtime(tmp_path_factory):
    import shutil

    from pybpfc._native import build

    cc = os.environ.get("CC", "gcc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        p = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(p):
            pytest.skip(f"{cc} has no {name}")
        libs.append(p)
    out = str(tmp_path_factory.mktemp("asan"))
    saved = build.CFLAGS
    build.CFLAGS = [f for f in saved if f != "-O2"] + ["-O1", "-fsanitize=address,undefined",
                                                        "-fno-omit-frame-pointer"]
    try:
        build.build("pybpfc_runtime", out_dir=out)
    finally:
        build.CFLAGS = saved
    return out, libs


def test_scenarios_under_address_sanitizer(tmp_path_factory):
    """Every scenario with the runtime built with -fsanitize=address,undefined and Python's
    allocations through malloc, so overflows of Python-side buffers are seen too."""
    out, libs = _asan_runtime(tmp_path_factory)
    env = dict(os.environ, PYBPFC_NATIVE_DIR=out, LD_PRELOAD=" ".join(libs), PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1",
               PYBPFC_JIT="0")
    r = _run(sorted(SCENARIOS), env)
    report = r.stderr[-4000:]
    assert "runtime error:" not in r.stderr and "AddressSanitizer" not in r.stderr, report
    assert r.returncode == 0, f"child exit {r.returncode}:\n{r.stdout[-1000:]}\n{report}"

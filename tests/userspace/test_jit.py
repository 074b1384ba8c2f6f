"""LLVM JIT: ABI, position independence, memory safety, budget, calls and callbacks, maps,
fallback. Programs run through the JIT only (verify_first=False where the point is the JIT's
own run-time checks) and, where useful, against the interpreter."""
import os
import struct
import subprocess
import warnings

import pytest

from pybpfc.asm import assemble
from pybpfc.backends.userspace import jit, vm
from pybpfc.errors import RuntimeFault


def I(op, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def lddw(dst, value, src=0):
    value &= (1 << 64) - 1
    return (struct.pack("<BBhI", 0x18, (src << 4) | dst, 0, value & 0xFFFFFFFF) +
            struct.pack("<BBhI", 0, 0, 0, value >> 32))


def code(text):
    return b"".join(i.encode() for i in assemble(text))


def run_jit(prog, mem=b"", **kw):
    kw.setdefault("verify_first", False)
    return jit.jit_vm(prog, **kw)(mem)


# ---------------------------------------------------------------- ABI

def test_run_struct_offsets_match_header(tmp_path):
    """The offsets the generated code uses are the C header's."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    src = tmp_path / "off.c"
    fields = {"helpers": jit.OFF_HELPERS, "maps": jit.OFF_MAPS, "map_values": jit.OFF_MAP_VALUES,
              "budget": jit.OFF_BUDGET, "status": jit.OFF_STATUS, "nregions": jit.OFF_NREGIONS,
              "exit_value": jit.OFF_EXIT_VALUE, "fault_addr": jit.OFF_FAULT_ADDR,
              "fault_pc": jit.OFF_FAULT_PC, "invoke": jit.OFF_INVOKE, "engine": jit.OFF_ENGINE,
              "ctx": jit.OFF_CTX, "regions": jit.OFF_REGIONS}
    body = "".join(f'printf("{k} %zu\\n", offsetof(struct pbr_run, {k}));' for k in fields)
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "pybpfc_vm.h"\n'
                   f'int main(void) {{ {body} printf("region %zu\\n", sizeof(struct pbr_region));'
                   ' return 0; }\n')
    exe = tmp_path / "off"
    subprocess.run(["gcc", "-I", os.path.join(root, "runtime", "include"), str(src), "-o",
                    str(exe)], check=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True,
                                                      text=True).stdout.splitlines())
    assert {k: int(out[k]) for k in fields} == fields
    assert int(out["region"]) == jit.REGION_SIZE
    assert jit.ffi().offsetof("struct pbr_run", "regions") == jit.OFF_REGIONS


# ---------------------------------------------------------------- code placement

SUM_LOOP = code("""
    mov %r0, 0
    mov %r1, 0
loop:
    add %r1, 1
    add %r0, %r1
    jlt %r1, 1000, loop
    exit
""")


def test_code_is_position_independent():
    c = jit.jit_compile(SUM_LOOP)
    assert len(c.code) > 0 and 0 <= c.entry < len(c.code)
    # the same bytes at another address (not page aligned, but aligned as the code requires)
    pad = 4096 + c.align
    moved = jit.JitCode(b"\xcc" * pad + c.code, c.entry + pad, align=c.align)
    a, b = jit.JitProgram(c), jit.JitProgram(moved)
    assert a.address % 4096 != b.address % 4096
    f = jit.ffi()
    for p in (a, b):
        run = f.new("struct pbr_run *")
        run.budget = 10_000
        assert p.run(run, 0, 0) == 500500
        assert run.status == jit.PBR_OK


def test_link_refuses_external_symbols_and_absolute_relocations():
    import llvmlite.binding as llvm
    jit._target_machine()
    ext = """
declare i64 @external_fn(i64)
define i64 @pbr_jit_entry(ptr %run, i64 %a, i64 %b) {
  %r = call i64 @external_fn(i64 %a)
  ret i64 %r
}"""
    absolute = """
@table = internal constant [2 x ptr] [ptr @f, ptr @f]
define internal i64 @f() { ret i64 1 }
@slot = global ptr @table
define i64 @pbr_jit_entry(ptr %run, i64 %a, i64 %b) {
  %p = load ptr, ptr @slot
  %v = ptrtoint ptr %p to i64
  ret i64 %v
}"""
    tm = llvm.Target.from_triple("x86_64-unknown-linux-gnu").create_target_machine(
        reloc="pic", codemodel="small")
    with pytest.raises(jit.JitError, match="external symbol 'external_fn'"):
        jit._link(tm.emit_object(llvm.parse_assembly(ext)), ["pbr_jit_entry"])
    with pytest.raises(jit.JitError, match="relocation type|external symbol"):
        jit._link(tm.emit_object(llvm.parse_assembly(absolute)), ["pbr_jit_entry"])


# ---------------------------------------------------------------- safety

def _fault(prog, mem=b"", **kw):
    with pytest.raises(RuntimeFault) as e:
        run_jit(prog, mem, **kw)
    return e.value


def test_wild_and_null_pointers_fault():
    e = _fault(lddw(1, 0xDEADBEEF) + I(0x71, 0, 1, 0) + I(0x95))
    assert e.status == vm.PBR_EFAULT and e.addr == 0xDEADBEEF and e.pc == 2
    e = _fault(I(0xB7, 1, 0, 0, 0) + I(0x79, 0, 1, 8) + I(0x95))
    assert e.status == vm.PBR_EFAULT and e.addr == 8


def test_memory_block_bounds():
    mem = bytes(range(16))
    assert run_jit(I(0x79, 0, 1, 8) + I(0x95), mem) == int.from_bytes(mem[8:], "little")
    e = _fault(I(0x79, 0, 1, 9) + I(0x95), mem)  # last byte one past the end
    assert e.status == vm.PBR_EFAULT
    e = _fault(I(0x7A, 1, 0, -1, 7) + I(0xB7, 0) + I(0x95), mem)  # store before the start
    assert e.status == vm.PBR_EFAULT
    # the last bytes of a region (the cache covers all but the last 7; exact checks the rest)
    tail = I(0x79, 0, 1, 0) + I(0x71, 2, 1, 15) + I(0x0F, 0, 2) + I(0x69, 2, 1, 14)
    assert run_jit(tail + I(0x0F, 0, 2) + I(0x95), mem) == (
        int.from_bytes(mem[:8], "little") + 15 + int.from_bytes(mem[14:16], "little"))
    e = _fault(I(0x79, 0, 1, 0) + I(0x69, 2, 1, 15) + I(0x95), mem)  # u16 at the last byte
    assert e.status == vm.PBR_EFAULT and e.pc == 1


def test_checks_reused_within_a_block_stay_exact():
    """A check is skipped only for a range inside one already proven in the same block through
    the same, unchanged register; everything else is checked again."""
    mem = bytes(range(16))
    q = [int.from_bytes(mem[i:i + 8], "little") for i in (0, 8)]
    # covered: a narrower load inside the first one's range; not covered: the next 8 bytes
    assert run_jit(I(0x79, 0, 1, 0) + I(0x71, 2, 1, 7) + I(0x0F, 0, 2) + I(0x79, 2, 1, 8) +
                   I(0x0F, 0, 2) + I(0x95), mem) == (q[0] + 7 + q[1]) & (2**64 - 1)
    # overlapping the proven range but one byte past the region
    e = _fault(I(0x79, 0, 1, 8) + I(0x79, 2, 1, 9) + I(0x95), mem)
    assert e.status == vm.PBR_EFAULT and e.pc == 1
    # the register changes between two accesses with the same offset
    e = _fault(I(0x79, 0, 1, 8) + I(0x07, 1, 0, 0, 8) + I(0x79, 2, 1, 8) + I(0x95), mem)
    assert e.status == vm.PBR_EFAULT and e.pc == 2
    # the same register loaded from memory it points to (dst == src)
    e = _fault(I(0x79, 1, 1, 0) + I(0x79, 0, 1, 0) + I(0x95), mem)
    assert e.status == vm.PBR_EFAULT and e.pc == 1 and e.addr == q[0]
    # a loop: every iteration's block checks again (r1 walks off the end)
    loop = I(0xB7, 0) + I(0x79, 2, 1, 0) + I(0x0F, 0, 2) + I(0x07, 1, 0, 0, 8) + I(0x05, off=-4)
    e = _fault(loop, mem)
    assert e.status == vm.PBR_EFAULT and e.pc == 1
    # carried over a conditional jump's fall-through, but not into one that is also a jump
    # target: pc 3 jumps to pc 7 with r3 = mem + 8, pc 5 proved r3 + 8 with r3 = mem and
    # falls through pc 6 into pc 7
    prog = (I(0x79, 2, 1, 0) + I(0xBF, 3, 1) + I(0x07, 3, 0, 0, 8) + I(0x55, 2, 0, 3, 0) +
            I(0xBF, 3, 1) + I(0x79, 0, 3, 8) + I(0x15, 0, 0, 1, 0) + I(0x79, 0, 3, 8) +
            I(0x95))
    e = _fault(prog, mem)
    assert e.status == vm.PBR_EFAULT and e.pc == 7
    fall = (I(0x79, 0, 1, 0) + I(0x15, 0, 0, 2, 0) + I(0x71, 2, 1, 3) + I(0x0F, 0, 2) +
            I(0x95))
    assert run_jit(fall, mem) == q[0] + 3


def test_stack_bounds():
    # r10 + 8: above the stack, reached through another register and as a constant offset
    e = _fault(I(0xBF, 2, 10) + I(0x07, 2, 0, 0, 8) + I(0x7B, 2, 1, 0) + I(0x95))
    assert e.status == vm.PBR_EFAULT
    e = _fault(I(0x7A, 10, 0, 0, 1) + I(0xB7, 0) + I(0x95))
    assert e.status == vm.PBR_EFAULT
    # below all 8 frames
    e = _fault(I(0xBF, 2, 10) + I(0x07, 2, 0, 0, -4097) + I(0x71, 0, 2, 0) + I(0x95))
    assert e.status == vm.PBR_EFAULT
    # inside the frame through a computed pointer: fine
    assert run_jit(I(0x7A, 10, 0, -16, 42) + I(0xBF, 2, 10) + I(0x07, 2, 0, 0, -16) +
                   I(0x79, 0, 2, 0) + I(0x95)) == 42


def test_read_only_region_refuses_writes():
    f = vm.ffi()
    buf = f.new("uint8_t[]", 8)
    addr = int(f.cast("uintptr_t", buf))
    p = jit.jit_vm(lddw(1, addr) + I(0x71, 0, 1, 0) + I(0x72, 1, 0, 0, 5) + I(0x95),
                   verify_first=False)
    p.add_region(addr, 8, vm.PBR_PERM_R)
    with pytest.raises(RuntimeFault) as e:
        p()
    assert e.value.status == vm.PBR_EFAULT and e.value.pc == 3 and buf[0] == 0


def test_endless_loop_stops_at_budget():
    e = _fault(I(0xB7, 0) + I(0x05, 0, 0, -1) + I(0x95), budget=1000)
    assert e.status == vm.PBR_EBUDGET and e.pc == 1


# counted loops: the budget is charged when the loop exits (see docs/jit.md)

COUNTED = code("""
    mov %r0, 0
    mov %r1, 0
loop:
    add %r0, %r1
    add %r1, 1
    jlt %r1, 1000, loop
    exit
""")


def _counted(prog):
    """{back-edge pc: header pc} the JIT treats as counted loops in the entry function."""
    g = jit._Gen(jit._decode(prog))
    fg = jit._FuncGen(g, 0, g.ends[0])
    fg.blocks = {pc: None for pc in fg.leaders() if pc < g.ends[0]}
    return fg.counted_loops()


def test_counted_loop_spends_the_same_budget():
    assert _counted(COUNTED) == {4: 2}
    # one tick at entry and one per taken back-edge (999), as for any other loop
    assert run_jit(COUNTED, budget=1000) == sum(range(1000))
    e = _fault(COUNTED, budget=999)
    assert e.status == vm.PBR_EBUDGET and e.pc == 4
    # the same with the limit in a register set before the loop, compared the other way round
    other = code("""
    mov %r0, 0
    mov %r1, 1
    mov %r2, 4096
loop:
    add %r0, %r1
    add %r1, 1
    jgt %r2, %r1, loop
    exit
""")
    assert _counted(other) == {5: 3}
    assert run_jit(other) == sum(range(4096))
    assert _fault(other, budget=4000).status == vm.PBR_EBUDGET
    # counting down to 0 with != (the differential tests' loops)
    down = code("mov %r0, 0\nmov %r8, 5\nloop:\nadd %r0, 3\nadd %r8, -1\njne %r8, 0, loop\nexit")
    assert _counted(down) == {4: 2}
    assert run_jit(down) == 15


@pytest.mark.parametrize("asm", [
    # != that steps over its limit (1001 is odd, the step 2): endless
    "mov %r0, 0\nmov %r1, 0\nloop:\nadd %r1, 2\njne %r1, 1001, loop\nexit",
    # counting down by 2 from 5 past 0: endless
    "mov %r0, 0\nmov %r1, 5\nloop:\nadd %r1, -2\njne %r1, 0, loop\nexit",
    # the limit is not known before the loop
    "mov %r0, 0\nlddw %r2, -1\nmov %r1, 0\nloop:\nadd %r1, 1\njlt %r1, %r2, loop\nexit",
    # the counter changes by a non-constant amount
    "mov %r0, 0\nmov %r1, 0\nloop:\nadd %r1, %r0\njlt %r1, 1000, loop\nexit",
    # entered in the middle as well: the first block resets the counter
    "mov %r0, 0\nmov %r1, 0\njeq %r0, 0, mid\nloop:\nmov %r1, 0\nmid:\nadd %r0, 1\n"
    "jlt %r1, 1000, loop\nexit",
    # an outer endless loop around a counted inner loop
    "mov %r0, 0\nouter:\nmov %r1, 0\nmov %r0, 0\ninner:\nadd %r1, 1\njlt %r1, 100, inner\n"
    "ja outer\nexit",
])
def test_loops_without_a_proven_bound_still_stop(asm):
    prog = code(asm)
    e = _fault(prog, budget=100000)
    assert e.status == vm.PBR_EBUDGET
    if "outer" not in asm:
        assert _counted(prog) == {}
    else:
        assert len(_counted(prog)) == 1


def test_counted_loop_exits_check_the_budget():
    """Every edge out of a counted loop checks what its iterations spent: an early exit
    (here after 300 of at most 1000 iterations) with too little budget stops."""
    prog = code("""
    mov %r0, 0
    mov %r1, 0
loop:
    add %r1, 1
    jeq %r1, 300, out
    jlt %r1, 1000, loop
    exit
out:
    mov %r0, 7
    exit
""")
    assert _counted(prog) == {4: 2}
    assert run_jit(prog, budget=400) == 7
    e = _fault(prog, budget=299)
    assert e.status == vm.PBR_EBUDGET and e.pc == 4


def test_recursion_stops_at_call_depth():
    prog = I(0x85, 0, 1, 0, -1) + I(0x95)  # calls itself
    e = _fault(prog)
    assert e.status == vm.PBR_EDEPTH


def test_unknown_helper_stops():
    e = _fault(I(0x85, 0, 0, 0, 77) + I(0x95), helpers=vm.conformance_helpers())
    assert e.status == vm.PBR_EHELPER and e.pc == 0


# ---------------------------------------------------------------- calls, callbacks, maps

def test_bpf_to_bpf_calls_keep_callee_saved_registers():
    prog = code("""
    mov %r6, 100
    mov %r1, 5
    call local f
    add %r0, %r6
    exit
f:
    mov %r6, 7
    stxdw [%r10-8], %r1
    ldxdw %r0, [%r10-8]
    mul %r0, %r6
    exit
""")
    assert run_jit(prog) == 135
    assert vm.run_program(prog) == 135


def _loop_harness(engine_run, prog, count):
    """A bpf_loop-like helper 10 in C-callable form calling run->invoke, like the real one."""
    f = jit.ffi()

    @f.callback("uint64_t(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, void *)")
    def loop_helper(n, func, ctx, flags, r5, run_p):
        run = f.cast("struct pbr_run *", run_p)
        done = 0
        for i in range(n):
            ret = run.invoke(run_p, func, i, ctx, 0, 0, 0)
            done += 1
            if run.status != 0 or ret:
                break
        return done

    table = f.new("pbr_helper_fn[256]")
    table[10] = f.cast("pbr_helper_fn", loop_helper)
    run = f.new("struct pbr_run *")
    run.helpers = table
    run.budget = 100_000
    r0 = engine_run(prog, run)
    return r0, run.status


CALLBACK = code("""
    stdw [%r10-8], 0
    mov %r1, COUNT
    lddw %r2, func(cb)
    mov %r3, %r10
    add %r3, -8
    mov %r4, 0
    call 10
    ldxdw %r0, [%r10-8]
    exit
cb:
    ldxdw %r3, [%r2]
    add %r3, %r1
    add %r3, 1
    stxdw [%r2], %r3
    mov %r0, 0
    exit
""".replace("COUNT", "5"))


def test_callbacks_through_invoke_match_the_interpreter():
    # lddw src=4 (function value): relative offset from the lddw, cb is at insn 10
    assert CALLBACK[2 * 8 + 1] >> 4 == 4
    assert 2 + 1 + struct.unpack_from("<i", CALLBACK, 2 * 8 + 4)[0] == 10
    prog = CALLBACK

    def on_jit(p, run):
        return jit.JitProgram(jit.jit_compile(p)).run(run, 0, 0)

    def on_interp(p, run):
        f = vm.ffi()
        buf = f.new("uint64_t[]", len(p) // 8)
        f.memmove(buf, p, len(p))
        return vm.lib().pbr_vm_exec(buf, len(p) // 8, f.cast("struct pbr_run *",
                                    int(jit.ffi().cast("uintptr_t", run))), 0, 0)

    assert _loop_harness(on_jit, prog, 5) == (15, 0)
    assert _loop_harness(on_interp, prog, 5) == (15, 0)


def test_map_pseudo_loads():
    f = vm.ffi()
    value = f.new("uint64_t[]", [11, 22, 33])
    vaddr = int(f.cast("uintptr_t", value))
    prog = (lddw(1, 1, src=1) +                                 # r1 = maps[1]
            I(0x18, 2, 2, 0, 0) + I(0, 0, 0, 0, 8) +            # r2 = map_values[0] + 8
            I(0x79, 0, 2, 0) + I(0x0F, 0, 1) + I(0x95))          # r0 = *r2 + r1
    p = jit.jit_vm(prog, maps=[0, 1000], map_values=[vaddr], verify_first=False)
    p.add_region(vaddr, 24, vm.PBR_PERM_RW)
    assert p() == 1022


def test_unwind_helper_returns_exit_value_from_nested_calls():
    prog = code("""
    call local f
    mov %r0, 99
    exit
f:
    mov %r1, 0
    call 5
    mov %r0, 1
    exit
""")
    assert run_jit(prog, helpers=vm.conformance_helpers()) == 0


def test_fallback_warns_and_returns_none():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert jit.try_jit(I(0x20, 0, 0, 0, 0) + I(0x95), "ldabs") is None  # legacy LD_ABS
    assert any("prog 'ldabs': JIT unavailable" in str(x.message) for x in w)


def test_batch_compilation_gives_independent_entries():
    progs = [I(0xB7, 0, 0, 0, k) + I(0x95) for k in range(5)]
    codes = jit.jit_compile_many(progs)
    f = jit.ffi()
    for k, c in enumerate(codes):
        run = f.new("struct pbr_run *")
        run.budget = 10
        assert jit.JitProgram(c).run(run, 0, 0) == k


# ---------------------------------------------------------------- the benchmark object

BENCH = "/work/shared/bench/vm/bench.bpf.o"


@pytest.mark.skipif(not os.path.exists(BENCH), reason="benchmark object missing")
def test_bench_object_results_on_the_jit():
    import pybpfc
    from pybpfc.backends.userspace import UserspaceBackend
    pkts = {n: open(f"/work/shared/bench/vm/{n}.bin", "rb").read() for n in ("pkt64", "pkt1024")}
    cases = [("xdp_pass", "pkt64", 2), ("xdp_loop_sum", "pkt64", 41748),
             ("xdp_bpf_loop", "pkt64", 41748), ("xdp_hash_lookup", "pkt64", 100),
             ("xdp_hash_update", "pkt64", 100), ("xdp_memcpy", "pkt64", 9835),
             ("xdp_memcpy", "pkt1024", 59051), ("xdp_parse_csum", "pkt64", 231),
             ("xdp_parse_csum", "pkt1024", 55175)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coll = pybpfc.load(BENCH, backend=UserspaceBackend(jit=True))
    try:
        for name, pkt, want in cases:
            p = getattr(coll.programs, name)
            assert p.raw.engine == "jit"
            p.test_run(pkts[pkt])  # the hash lookup program counts hits from its 2nd run
            assert p.test_run(pkts[pkt], repeat=3).retval == want, name
    finally:
        coll.close()

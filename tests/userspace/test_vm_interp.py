"""Interpreter safety and semantics beyond the conformance suite: faults stop the program with a
RuntimeFault naming reason and instruction, the process survives, helpers and callbacks work."""
import pytest

from pybpfc.asm import assemble
from pybpfc.backends.userspace import vm as V
from pybpfc.backends.userspace.vm import Vm, run_program
from pybpfc.errors import RuntimeFault


def fault(src, mem=b"", **kw):
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble(src), mem, verify_first=False, **kw)
    return e.value


def test_returns_and_writes_back():
    mem = bytearray(8)
    assert run_program(assemble("stw [%r1+4], 0x11223344\nmov %r0, %r2\nexit"), mem) == 8
    assert mem == bytes(4) + bytes.fromhex("44332211")


def test_stack_out_of_bounds_dynamic():
    e = fault("mov %r1, %r10\nadd %r1, -600\nldxdw %r0, [%r1]\nexit")
    assert e.status == V.PBR_EFAULT and e.pc == 2 and "insn 2" in str(e)
    e = fault("mov %r1, %r10\nstxdw [%r1], %r1\nexit")  # just above the frame
    assert e.status == V.PBR_EFAULT and e.pc == 1


def test_region_bounds_and_permissions():
    assert run_program(assemble("ldxw %r0, [%r1+4]\nexit"), b"\1\0\0\0\2\0\0\0") == 2
    e = fault("ldxdw %r0, [%r1+4]\nexit", b"\0" * 8)
    assert e.status == V.PBR_EFAULT and "insn 0" in str(e)
    # a read-only region: loads pass, stores fault
    buf = V.ffi().new("uint8_t[]", 16)
    addr = int(V.ffi().cast("uintptr_t", buf))
    ro = Vm(assemble(f"lddw %r1, {addr:#x}\nldxdw %r0, [%r1+8]\nstdw [%r1], 1\nexit"),
            verify_first=False)
    ro.add_region(addr, 16, V.PBR_PERM_R)
    with pytest.raises(RuntimeFault) as e:
        ro()
    assert e.value.pc == 3 and e.value.addr == addr


@pytest.mark.parametrize("ptr", ["0", "0xdeadbeef000", "0xffffffffffffffff"])
def test_wild_pointers(ptr):
    e = fault(f"lddw %r1, {ptr}\nldxb %r0, [%r1]\nexit")
    assert e.status == V.PBR_EFAULT and e.addr == int(ptr, 0)
    e = fault(f"lddw %r1, {ptr}\nstxdw [%r1+0], %r1\nexit")
    assert e.status == V.PBR_EFAULT


def test_misaligned_atomic_faults():
    e = fault("mov %r1, 1\nstxdw [%r10-16], %r1\nlock add [%r10-12], %r1\nexit")
    assert e.status == V.PBR_EFAULT and e.pc == 2


def test_endless_loop_stops_at_budget():
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble("mov %r0, 0\nL:\nadd %r0, 1\nja L\nexit"), budget=1000,
                    verify_first=False)
    assert e.value.status == V.PBR_EBUDGET
    # exactly the budget: 1 + 2*k instructions run
    assert run_program(assemble("mov %r0, 5\nexit"), budget=2) == 5
    with pytest.raises(RuntimeFault):
        run_program(assemble("mov %r0, 5\nexit"), budget=1)


def test_call_depth_limit():
    e = fault("call local f\nexit\nf:\ncall local f\nexit")
    assert e.status == V.PBR_EDEPTH
    # seven nested calls (eight frames) are fine
    src = "mov %r1, 0\ncall local f1\nexit\n" + "".join(
        f"f{i}:\nadd %r1, 1\n{'call local f%d' % (i + 1) if i < 7 else 'mov %r0, %r1'}\nexit\n"
        for i in range(1, 8))
    assert run_program(assemble(src)) == 7


def test_frames_are_separate_and_callee_sees_caller_stack():
    src = """
        stdw [%r10-8], 100
        mov %r1, %r10
        add %r1, -8
        call local f
        ldxdw %r0, [%r10-8]
        exit
    f:
        stdw [%r10-8], 7
        ldxdw %r2, [%r1]
        add %r2, 1
        stxdw [%r1], %r2
        mov %r0, 0
        exit
    """
    assert run_program(assemble(src)) == 101


def test_unknown_helper_at_run_time():
    e = fault("call 77\nexit")
    assert e.status == V.PBR_EHELPER and e.pc == 0


def test_python_helpers_and_invoke_callbacks():
    ffi = V.ffi()
    calls = []

    def bpf_loop(n, func, ctx, flags, _r5, run):
        for i in range(n):
            if run.invoke(run, func, i, ctx, 0, 0, 0):
                break
            if run.status:
                return 0
        calls.append(n)
        return n

    src = """
        stdw [%r10-8], 0
        mov %r1, 10
        lddw %r2, func(cb)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 181
        ldxdw %r0, [%r10-8]
        exit
    cb:
        ldxdw %r3, [%r2]
        add %r3, %r1
        add %r3, 1
        stxdw [%r2], %r3
        mov %r0, 0
        exit
    """
    assert run_program(assemble(src), helpers={181: bpf_loop}) == 55 and calls == [10]
    # a callback that faults stops the whole program, with the callback's pc
    bad = src.replace("ldxdw %r3, [%r2]", "ldxdw %r3, [%r2+4096]")
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble(bad), helpers={181: bpf_loop})
    assert e.value.status == V.PBR_EFAULT and e.value.pc == 10
    del ffi


def test_python_helper_exception_propagates():
    def boom(*a):
        raise ValueError("helper broke")
    with pytest.raises(ValueError, match="helper broke"):
        run_program(assemble("call 3\nexit"), helpers={3: boom})


def test_unwind_helper_stops_program():
    h = V.conformance_helpers()
    assert run_program(assemble("mov %r1, 0\ncall 5\nmov %r0, 2\nexit"), helpers=h) == 0
    assert run_program(assemble("mov %r1, 9\ncall 5\nmov %r0, 2\nexit"), helpers=h) == 2


def test_helper_pointer_checks():
    h = V.conformance_helpers()
    # memfrob on the stack works (the stack is a region during the run) ...
    src = "stdw [%r10-8], 0\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 1\nldxdw %r0, [%r10-8]\nexit"
    assert run_program(assemble(src), helpers=h) == int.from_bytes(b"\x2a" * 8, "little")
    # ... past the end of the mem block it faults instead of writing
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble("mov %r2, 100\ncall 1\nexit"), b"abcd", helpers=h)
    assert e.value.status == V.PBR_EFAULT


def test_prepared_lddw_maps():
    vals = V.ffi().new("uint64_t[]", [0, 0x1234])
    base = int(V.ffi().cast("uintptr_t", vals))
    vm = Vm(assemble("lddw %r1, map_value(0, 8)\nldxdw %r0, [%r1]\nlddw %r2, map_fd(1)\n"
                     "add %r0, %r2\nexit"), maps=[0, 0x100], map_values=[base])
    vm.add_region(base, 16, V.PBR_PERM_R)
    assert vm() == 0x1334


def test_nested_exec_from_a_helper_restores_the_outer_engine():
    """A helper running another program on the same run (how tail calls can be done) leaves
    the outer program's invoke working afterwards."""
    ffi = V.ffi()
    inner, n_inner = V._prog_buf(assemble("mov %r0, 40\nexit"))

    def run_inner(_1, _2, _3, _4, _5, run):
        return V.lib().pbr_vm_exec(inner, n_inner, run, 0, 0)

    def loop(n, func, ctx, _f, _r5, run):
        for i in range(n):
            run.invoke(run, func, i, ctx, 0, 0, 0)
        return n

    src = """
        call 1
        stxdw [%r10-8], %r0
        mov %r1, 2
        lddw %r2, func(cb)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 2
        ldxdw %r0, [%r10-8]
        exit
    cb:
        ldxdw %r3, [%r2]
        add %r3, 1
        stxdw [%r2], %r3
        mov %r0, 0
        exit
    """
    assert run_program(assemble(src), helpers={1: run_inner, 2: loop}) == 42
    del ffi


def test_region_dropped_by_a_helper_is_not_used_from_a_cache():
    """The interpreter caches the last matched region; a helper that drops it (as ring buffer
    submit does) must make the next access fault."""
    def drop(_1, _2, _3, _4, _5, run):
        run.regions[0].end = run.regions[0].start
        return 0

    src = "ldxw %r6, [%r1+0]\nstw [%r1+4], 1\ncall 1\nldxw %r0, [%r1+0]\nexit"
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble(src), bytes(8), helpers={1: drop}, verify_first=False)
    assert e.value.status == V.PBR_EFAULT and e.value.pc == 3
    src = "ldxw %r6, [%r1+0]\nstw [%r1+4], 1\ncall 1\nstw [%r1+0], 2\nexit"
    with pytest.raises(RuntimeFault) as e:
        run_program(assemble(src), bytes(8), helpers={1: drop}, verify_first=False)
    assert e.value.pc == 3


def test_accesses_at_region_edges():
    mem = bytes(range(16))
    assert run_program(assemble("ldxdw %r0, [%r1+8]\nexit"), mem) == int.from_bytes(mem[8:], "little")
    assert run_program(assemble("ldxb %r0, [%r1+15]\nexit"), mem) == 15
    for off, size in ((9, "dw"), (15, "h"), (16, "b"), (-1, "b")):
        with pytest.raises(RuntimeFault):
            run_program(assemble(f"ldx{size} %r0, [%r1{off:+d}]\nexit"), mem)
        with pytest.raises(RuntimeFault):
            run_program(assemble(f"ldxb %r0, [%r1+0]\nstx{size} [%r1{off:+d}], %r0\nexit"), mem)

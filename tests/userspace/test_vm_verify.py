"""The static verifier (runtime/verify.c): each rule refuses with "insn N: ..." and accepts the
nearest valid program, so every check is shown to be able to fail and to pass."""
import pytest

from pybpfc.asm import Insn, assemble
from pybpfc.backends.userspace.vm import verify
from pybpfc.errors import VerifierError

CASES = [
    # (name, bad program, message regex, good program)
    ("bad opcode", [Insn(0x8C), Insn(0x95)], r"insn 0: invalid opcode 0x8c",
     [Insn(0xB7), Insn(0x95)]),
    ("reserved field", [Insn(0xB7, off=1), Insn(0x95)], r"insn 0: nonzero offset",
     [Insn(0xB7), Insn(0x95)]),
    ("jump out of range", "mov %r0, 0\nja +5\nexit", r"insn 1: jump out of range",
     "mov %r0, 0\nja +0\nexit"),
    ("jump into lddw", "mov %r0, 0\njeq %r0, 0, +1\nlddw %r1, 5\nexit", r"insn 1: jump into the middle of lddw",
     "mov %r0, 0\njeq %r0, 0, +2\nlddw %r1, 5\nexit"),
    ("falls off the end", "mov %r0, 0", r"insn 0: the main program falls off its end",
     "mov %r0, 0\nexit"),
    ("uninitialised read", "add %r0, 1\nexit", r"insn 0: r0 is read before any write",
     "mov %r0, 1\nexit"),
    ("uninitialised on one path", "jeq %r1, 0, +1\nmov %r3, 1\nmov %r0, %r3\nexit",
     r"insn 2: r3 is read before", "mov %r3, 0\njeq %r1, 0, +1\nmov %r3, 1\nmov %r0, %r3\nexit"),
    ("clobbered by a call", "mov %r3, 1\ncall 1\nmov %r0, %r3\nexit", r"insn 2: r3 is read before",
     "mov %r6, 1\ncall 1\nmov %r0, %r6\nexit"),
    ("write to r10", "mov %r10, 0\nmov %r0, 0\nexit", r"insn 0: r10 is read-only",
     "mov %r9, 0\nmov %r0, 0\nexit"),
    ("unknown helper", "call 9\nexit", r"insn 0: unknown helper 9", "call 1\nexit"),
    ("map index", "lddw %r1, map_fd(2)\nmov %r0, 0\nexit", r"insn 0: map index 2 out of range",
     "lddw %r1, map_fd(1)\nmov %r0, 0\nexit"),
    ("stack below frame", "stdw [%r10-520], 1\nmov %r0, 0\nexit", r"insn 0: stack access \[r10-520\]",
     "stdw [%r10-512], 1\nmov %r0, 0\nexit"),
    ("stack above frame", "ldxw %r0, [%r10-2]\nexit", r"insn 0: stack access \[r10-2\] of 4 bytes",
     "ldxw %r0, [%r10-4]\nexit"),
    ("call target", [Insn(0x85, src=1, imm=5), Insn(0x95)], r"insn 0: call target 6 is outside",
     "call local f\nexit\nf:\nmov %r0, 0\nexit"),
    ("recursion", "call local f\nexit\nf:\ncall local f\nexit", r"insn 2: recursive call",
     "call local f\nexit\nf:\ncall local g\nexit\ng:\nmov %r0, 0\nexit"),
    ("jump between functions", "mov %r0, 0\nja g\ncall local f\nexit\nf:\nmov %r0, 0\ng:\nexit",
     r"insn 1: jump from the main program into another function",
     "mov %r0, 0\njeq %r0, 0, +1\ncall local f\nexit\nf:\nmov %r0, 0\nexit"),
    ("unreachable", "mov %r0, 0\nexit\nmov %r0, 1\nexit", r"insn 2: unreachable instruction",
     "mov %r0, 0\nexit"),
    ("kfunc", "call kfunc 5\nexit", r"insn 0: kfunc calls are not supported", "call 1\nexit"),
    ("unprepared pseudo", "lddw %r1, pseudo(5, 3)\nmov %r0, 0\nexit", r"insn 0: lddw pseudo source 5",
     "lddw %r1, map_fd(0)\nmov %r0, 0\nexit"),
    ("empty", b"", r"insn 0: empty program", "mov %r0, 0\nexit"),
]


def prog(p):
    return assemble(p) if isinstance(p, str) else p


@pytest.mark.parametrize("name,bad,msg,good", CASES, ids=[c[0] for c in CASES])
def test_rule(name, bad, msg, good):
    with pytest.raises(VerifierError, match=r"^prog 'p': " + msg):
        verify(prog(bad), helper_ok={1, 2}, nmaps=2, name="p")
    verify(prog(good), helper_ok={1, 2}, nmaps=2, name="p")


def test_call_chain_depth():
    def chain(k):  # main + k nested functions
        src = "mov %r1, 0\ncall local f1\nexit\n"
        for i in range(1, k + 1):
            nxt = f"call local f{i + 1}" if i < k else "mov %r0, 0"
            src += f"f{i}:\n{nxt}\nexit\n"
        return assemble(src)
    verify(chain(7))
    with pytest.raises(VerifierError, match=r"insn 0: call chain deeper than 8 frames"):
        verify(chain(8))
    # a very long chain is refused without deep recursion in the checker
    with pytest.raises(VerifierError, match=r"call chain deeper than 8 frames"):
        verify(chain(5_000))


def test_loop_dataflow_converges():
    src = """
        mov %r0, 0
        mov %r2, 10
    L:
        add %r0, %r2
        sub %r2, 1
        jne %r2, 0, L
        exit
    """
    verify(assemble(src))


# --- clang-built objects: the verifier must not refuse real programs -------------------------

BENCH = "/work/shared/bench/vm/bench.bpf.o"


def _prepared(spec, prog):
    """The program with map relocations in the prepared form of pybpfc_vm.h."""
    from pybpfc.asm import decode
    names = list(spec.maps)
    ins = decode(prog.insns)
    for r in prog.relocations:
        i = ins[r.insn]
        if r.kind == "map":
            ins[r.insn] = Insn(i.opcode, i.dst, 1, 0, names.index(r.target))
        elif r.kind == "map_value":
            ins[r.insn] = Insn(i.opcode, i.dst, 2, 0, names.index(r.target))
            ins[r.insn + 1] = Insn(0, 0, 0, 0, r.addend)
    return ins, names


@pytest.mark.parametrize("obj", [BENCH, "tests/objects/progs.bpf.o", "tests/objects/maps.bpf.o",
                                 "tests/objects/kinds.bpf.o"])
def test_clang_objects_accepted(obj):
    import os

    import pybpfc
    if not os.path.exists(obj):
        pytest.skip(f"{obj} missing")
    spec = pybpfc.read_spec(obj)
    assert spec.programs
    for name, prog in spec.programs.items():
        ins, names = _prepared(spec, prog)
        verify(ins, helper_ok=range(256), nmaps=len(names), name=name)


def test_bench_loop_sum_runs():
    """xdp_loop_sum from the clang benchmark object gives its documented result (41748),
    reading loop_n from its .data map value."""
    import os

    import pybpfc
    from pybpfc.backends.userspace import vm as V
    if not os.path.exists(BENCH):
        pytest.skip(f"{BENCH} missing")
    spec = pybpfc.read_spec(BENCH)
    ins, names = _prepared(spec, spec.programs["xdp_loop_sum"])
    data = V.ffi().new("uint8_t[]", spec.maps[".data"].data)
    values = [0] * len(names)
    values[names.index(".data")] = int(V.ffi().cast("uintptr_t", data))
    vm = V.Vm(ins, maps=[0] * len(names), map_values=values, name="xdp_loop_sum")
    vm.add_region(values[names.index(".data")], len(spec.maps[".data"].data), V.PBR_PERM_RW)
    assert vm() == 41748
    r0, ns = vm.bench(10)
    assert r0 == 41748 and ns > 0

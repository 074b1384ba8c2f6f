"""Differential testing: random valid programs must give identical r0 and final memory on
the interpreter, the JIT and (when root with kernel eBPF) the kernel. Long runs:
scripts/difftest.py --seed S --count N."""
import pytest

from pybpfc.backends.userspace import jit_difftest as D

SEEDS = range(0, 150)  # scripts/difftest.py does the long runs
SIZE = 12


@pytest.fixture(scope="module")
def kernel():
    why = D.kernel_available()
    if why:
        yield None  # interpreter vs JIT still runs; the kernel leg is reported as skipped
        return
    k = D.Kernel()
    yield k
    k.close()


def _check(seeds, kernel, size=SIZE, helpers=False):
    n, mism = D.run_seeds(seeds, kernel, size=size, helpers=helpers)
    assert n == len(seeds)
    assert not mism, f"{len(mism)} mismatches; first:\n" + "\n\n".join(
        m.describe() for m in mism[:2])


def test_generator_covers_the_isa():
    ops = set()
    for s in range(300):
        body = D.Generator(s, SIZE).program()
        ops.update((body[i], body[i + 1] >> 4 if body[i] == 0x85 else 0, 
                    int.from_bytes(body[i + 4:i + 8], "little") if body[i] in (0xC3, 0xDB) else 0)
                   for i in range(0, len(body), 8))
    opcodes = {o for o, _, _ in ops}
    # signed div/mod, movsx, bswap, jmp32, sign-extending loads, atomics, calls
    for must in (0x3F, 0x9C, 0xBF, 0xBC, 0xD7, 0xDC, 0xD4, 0x16, 0x3E, 0x91, 0x89, 0x81,
                 0xC3, 0xDB, 0x85, 0x18, 0x06):
        assert must in opcodes, hex(must)
    atomics = {imm for o, _, imm in ops if o in (0xC3, 0xDB)}
    assert atomics >= {0x00, 0x40, 0x50, 0xA0, 0x01, 0x41, 0x51, 0xA1, 0xE1, 0xF1}
    assert (0x85, 1, 0) in ops  # BPF-to-BPF call


def test_differential_fixed_seeds(kernel):
    if kernel is None:
        pytest.skip(f"kernel leg: {D.kernel_available()} (interp vs JIT: see next test)")
    _check(SEEDS, kernel)


def test_differential_interp_vs_jit_without_kernel():
    # Runs even without root; a smaller set since the kernel test covers the same seeds.
    if D.kernel_available() is None:
        _check(range(5000, 5050), None)
    else:
        _check(SEEDS, None)


def test_differential_with_helpers_interp_vs_jit():
    """Helper calls (conformance helpers, callx, unwind from nested functions, memfrob on the
    memory block): interpreter vs JIT only, the kernel has no such helpers."""
    _check(range(9000, 9080), None, helpers=True)


def test_differential_full_stack_with_bpf_loop():
    """wrapper + body loaded with pybpfc.load on the userspace backend (interpreter and JIT)
    and, when available, the kernel backend: array maps, test_run, bpf_loop calling a
    generated callback through run->invoke."""
    stacks = D.Stacks(kernel=D.kernel_available() is None)
    try:
        n, mism, kernel_bug = D.run_stack_seeds(range(30), stacks)
    finally:
        stacks.close()
    assert n == 30 and not kernel_bug
    assert not mism, f"{len(mism)} mismatches; first:\n" + "\n\n".join(
        m.describe() for m in mism[:2])


def test_differential_detects_a_difference(kernel):
    """The comparison can fail: a wrong memory image or r0 counts as a mismatch."""
    body = D.Generator(7, SIZE).program()
    mem = D.memory(7)
    a = D.run_interp(body, mem)
    b = D.Outcome(a.r0 ^ 1, a.mem)
    c = D.Outcome(a.r0, bytes([a.mem[0] ^ 1]) + a.mem[1:])
    assert len({a.key(), b.key()}) == 2 and len({a.key(), c.key()}) == 2


# Regression: a 32-bit cmpxchg must zero-extend the old value into r0 (RFC 9669). The kernel
# (6.18) skips the zero-extension on this verifier-pruned path (found by the VM owner's
# generator, tests/conformance/difftest.py); the interpreter and the JIT must not.
CMPXCHG32_PRUNED = """
lddw %r0, 0x7fffffffffffffff
lddw %r3, 0x558e9af0dc5e4d51
lddw %r4, 0xf85e20cca7f259d6
lddw %r5, 0xa49cf892681e4e8a
lddw %r7, 0xed9e3214483d3b16
stxdw [%r10-8], %r4
stxdw [%r10-16], %r4
stxdw [%r10-24], %r2
stxdw [%r10-32], %r0
stxdw [%r10-40], %r5
stxdw [%r10-48], %r3
stxdw [%r10-56], %r7
stxdw [%r10-64], %r5
lock cmpxchg32 [%r10-32], %r7
lsh32 %r7, %r7
jsge %r3, %r7, done
call local sub
mov %r2, 1702597145
done:
exit
sub:
ldxdw %r0, [%r1+8]
add %r0, %r2
mul %r0, 255
stxdw [%r1+8], %r0
exit
"""


def test_cmpxchg32_zero_extends_r0_on_interpreter_and_jit():
    from pybpfc.asm import assemble
    body = b"".join(i.encode() for i in assemble(CMPXCHG32_PRUNED))
    mem = bytes(D.MEM)
    assert D.run_interp(body, mem).r0 == 0xFFFFFFFF
    assert D.run_jit_batch([body], [mem])[0].r0 == 0xFFFFFFFF


# Found by scripts/difftest.py (seed 301844 of --size 30, reduced by hand): a 2-byte load from a
# spilled constant through a register that holds fp + 62 (a constant reached through `and`)
# must give the slot's top bytes (0xffff). Interpreter and JIT do; Linux 6.18's verifier
# tracks a wrong value for it, decides the jge statically and runs the wrong branch.
KERNEL_STACK_FILL = """
mov %r9, %r1
mov %r1, -1475614283
stxdw [%r10-8], %r1
mov %r7, 255
mov %r6, %r7
and %r6, 62
add %r6, %r10
ldxh %r1, [%r6-64]
lsh %r1, 27
lddw %r4, 0x7746907f
jge %r4, %r1, big
mov %r0, 1
exit
big:
mov %r0, 2
exit
"""


def test_partial_fill_of_spilled_constant(kernel):
    from pybpfc.asm import assemble
    body = b"".join(i.encode() for i in assemble(KERNEL_STACK_FILL))
    mem = bytes(D.MEM)
    assert D.run_interp(body, mem).r0 == 1
    assert D.run_jit_batch([body], [mem])[0].r0 == 1
    if kernel is None:
        pytest.skip("kernel leg: " + str(D.kernel_available()))
    r0 = kernel.run(body, mem).r0
    if r0 == 2:
        pytest.xfail("Linux verifier mis-tracks a partial fill through fp+const register "
                     "and takes the wrong branch (reported, not hidden)")
    assert r0 == 1


# Found with the full-stack mode: bpf_loop with a constant 0 iterations. Linux 6.18 never
# explores the callback, removes it as dead code and then refuses the program with "verifier
# bug: No program to jit at insn N (subprog < 0)". The userspace engines run it (r0 = 0
# iterations, the slot unchanged).
BPF_LOOP_ZERO = """
mov %r9, %r1
stdw [%r10-8], 7
mov %r1, 0
lddw %r2, func(cb)
mov %r3, %r10
add %r3, -8
mov %r4, 0
call 181
ldxdw %r1, [%r10-8]
add %r0, %r1
exit
cb:
mov %r0, 0
exit
"""


def test_bpf_loop_zero_iterations():
    from pybpfc.asm import assemble
    body = b"".join(i.encode() for i in assemble(BPF_LOOP_ZERO))
    stacks = D.Stacks(kernel=D.kernel_available() is None)
    try:
        res = stacks.run(body, bytes(D.MEM))
    finally:
        stacks.close()
    assert res["interp"].r0 == 7 and res["jit"].r0 == 7
    if "kernel" not in res:
        pytest.skip("kernel leg: " + str(D.kernel_available()))
    if res["kernel"].error and D.KERNEL_VERIFIER_BUG in res["kernel"].error:
        pytest.xfail("Linux refuses bpf_loop(0, cb, ...): 'verifier bug: No program to jit'")
    assert res["kernel"].r0 == 7

"""Fixed-seed differential run: random valid programs (ALU, branches, stack and memory traffic,
atomics, calls) give the same r0 and memory on the interpreter, the kernel and the JIT.
Long runs: tests/conformance/difftest.py --count N --seed S [--jit]."""
import pytest

from difftest import KERNEL_CMPXCHG32, Engines, check, generate

from pybpfc.asm import assemble

KERNEL_PROGRAMS = 2000   # interpreter vs kernel: fast (about 3 ms per program)
JIT_PROGRAMS = 60        # LLVM compiles take about 50 ms each


@pytest.fixture(scope="module")
def engines():
    return Engines(kernel=True, jit=True)


def test_generator_is_deterministic():
    assert generate(42) == generate(42) and generate(42) != generate(43)


def test_interpreter_vs_kernel(engines):
    if engines.kernel is None:
        pytest.skip("kernel eBPF unavailable (needs root and BPF_PROG_LOAD)")
    bad = [r for r in (check(s, engines) for s in range(1, KERNEL_PROGRAMS + 1)) if r]
    assert not bad, f"{len(bad)} disagreements; first:\n{bad[0]}"


def test_interpreter_vs_jit(engines):
    if engines.jit is None:
        pytest.skip("JIT not available")
    bad = [r for r in (check(s, engines, jit=True) for s in range(50_001, 50_001 + JIT_PROGRAMS))
           if r]
    assert not bad, f"{len(bad)} disagreements; first:\n{bad[0]}"


def test_cmpxchg32_zero_extends_r0(engines):
    """The interpreter follows RFC 9669; the kernel deviates on this pruned path (see
    difftest.KERNEL_CMPXCHG32): reported, not hidden."""
    insns = assemble(KERNEL_CMPXCHG32)
    assert engines.interp(insns, bytes(64))[0] == 0xFFFFFFFF
    if engines.kernel is None:
        pytest.skip("kernel eBPF unavailable")
    r0 = engines.on_kernel(insns, bytes(64))[0]
    if r0 == 0x7FFFFFFFFFFFFFFF:
        pytest.xfail("kernel keeps r0's upper half after this cmpxchg32 (not zero-extended)")
    assert r0 == 0xFFFFFFFF

"""Every conformance test on the kernel (XDP + BPF_PROG_TEST_RUN), r0 compared with the suite."""
import glob
import os

import pytest

from pybpfc.asm import parse_test

from conformance_kernel import KernelLoadError, kernel_available, run_on_kernel

SUITE = "/work/shared/conformance"
TESTS = sorted(glob.glob(os.path.join(SUITE, "tests", "*.data")))

_SHIFT = ("the kernel verifier refuses an immediate shift count outside 0..width-1 "
          "(the ISA masks it; the interpreter runs these)")
# Tests the kernel cannot run, with why. Entries marked refused=True are checked to still be
# refused, so this list cannot silently go stale.
KERNEL_SKIPS = {
    **{f"{op}{w}-imm-{k}.data": (_SHIFT, True)
       for op in ("lsh", "rsh", "arsh") for w in ("32", "64") for k in ("high", "neg")},
    "callx.data": ("the kernel has no call-by-register (BPF_CALL|BPF_X) for BPF programs", True),
    "call_unwind_fail.data": ("uses the suite's helper 5 (unwind); kernel helper 5 is "
                              "bpf_ktime_get_ns, so a kernel run would not test the same thing",
                              False),
}

_reason = kernel_available() if TESTS else "conformance suite missing"
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.mark.parametrize("path", TESTS, ids=os.path.basename)
def test_kernel(path):
    t = parse_test(path)
    skip = KERNEL_SKIPS.get(t.name)
    if skip and not skip[1]:
        pytest.skip(skip[0])
    if skip:
        with pytest.raises(KernelLoadError):
            run_on_kernel(t.insns, t.mem, t.name)
        pytest.skip(skip[0])
    try:
        r0 = run_on_kernel(t.insns, t.mem, t.name)
    except KernelLoadError as e:
        pytest.fail(f"{t.name}: {e}\n{e.log[-2000:]}")
    if t.error is not None:
        pytest.fail(f"{t.name}: expected an error, the kernel ran it (r0={r0:#x})")
    assert r0 == t.result, f"{t.name}: kernel r0={r0:#x}, expected {t.result:#x}"

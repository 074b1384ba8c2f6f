"""Every conformance test on the interpreter: verified, run with the suite's helpers, r0 checked."""
import glob
import os

import pytest

from pybpfc.asm import parse_test
from pybpfc.backends.userspace.vm import Vm, conformance_helpers
from pybpfc.errors import RuntimeFault, VerifierError

SUITE = "/work/shared/conformance"
TESTS = sorted(glob.glob(os.path.join(SUITE, "tests", "*.data")))

pytestmark = pytest.mark.skipif(not TESTS, reason=f"conformance suite missing at {SUITE}")


def run_test(path):
    t = parse_test(path)
    try:
        vm = Vm(t.insns, helpers=conformance_helpers(), name=t.name)
        return t, vm(bytearray(t.mem)), None
    except (VerifierError, RuntimeFault) as e:
        return t, None, e


@pytest.mark.parametrize("path", TESTS, ids=os.path.basename)
def test_interpreter(path):
    t, r0, err = run_test(path)
    if t.error is not None:
        assert err is not None, f"{t.name}: expected an error, got r0={r0:#x}"
        return
    assert err is None, str(err)
    assert r0 == t.result, f"{t.name}: r0={r0:#x}, expected {t.result:#x}"


def test_negative_semantic():
    # the two negative files that assemble: one refused by the verifier, one giving another r0
    t, r0, err = run_test(os.path.join(SUITE, "negative", "error.data"))
    assert isinstance(err, VerifierError) and "insn 0: r0 is read before" in str(err)
    t, r0, err = run_test(os.path.join(SUITE, "negative", "incorrect_return_value_high_bits.data"))
    assert err is None and r0 != t.result and r0 == 0x8877665544332211

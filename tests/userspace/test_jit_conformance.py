"""Every conformance-suite test (../shared/conformance/tests) on the LLVM JIT, with the suite's
helpers from the runtime (runtime/conformance_helpers.c)."""
import glob
import os

import pytest

from pybpfc.asm import testdata
from pybpfc.backends.userspace import jit, vm

SUITE = "/work/shared/conformance/tests"
FILES = sorted(glob.glob(os.path.join(SUITE, "*.data")))


def _cases():
    out = []
    for path in FILES:
        t = testdata.parse(path)
        if t.error is None and t.result is not None:
            out.append(pytest.param(t, id=t.name[:-5]))
    return out


@pytest.fixture(scope="module")
def helpers():
    return vm.conformance_helpers()


def test_suite_present():
    assert len(FILES) > 250


@pytest.mark.parametrize("case", _cases())
def test_conformance_jit(case, helpers):
    prog = jit.jit_vm(case.insns, helpers=helpers, name=case.name)
    mem = bytearray(case.mem)
    assert prog(mem) == case.result & 0xFFFFFFFFFFFFFFFF

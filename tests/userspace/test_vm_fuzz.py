"""Mutated programs never crash the verifier or the interpreter: verification either accepts or
refuses with a message, and unverified runs end normally or with a fault status. The fuzz loop
runs in a child process so a crash shows up as a failed test instead of killing pytest."""
import glob
import os
import subprocess
import sys

import pytest

SUITE = "/work/shared/conformance/tests"

CHILD = r"""
import glob, random, sys
from pybpfc.asm import Insn, parse_test
from pybpfc.backends.userspace import vm as V
from pybpfc.errors import RuntimeFault, VerifierError

rng = random.Random(int(sys.argv[1]))
progs = [parse_test(p) for p in sorted(glob.glob(sys.argv[2] + "/*.data"))]
helpers = V.conformance_helpers()
stats = {"accepted": 0, "refused": 0, "ran": 0, "faulted": 0}
for k in range(int(sys.argv[3])):
    t = rng.choice(progs)
    words = bytearray(b"".join(i.encode() for i in t.insns))
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(words))
        words[pos] = rng.randrange(256) if rng.random() < 0.7 else words[pos] ^ (1 << rng.randrange(8))
    if rng.random() < 0.1:
        words += bytes(rng.randrange(256) for _ in range(8))
    try:
        V.verify(bytes(words), helper_ok=range(6))
        stats["accepted"] += 1
    except VerifierError as e:
        assert str(e).startswith("prog 'prog': insn "), e
        stats["refused"] += 1
    try:
        V.run_program(bytes(words), bytearray(t.mem), helpers=helpers, budget=20000,
                      verify_first=False)
        stats["ran"] += 1
    except RuntimeFault:
        stats["faulted"] += 1
print(stats)
"""


@pytest.mark.skipif(not glob.glob(SUITE + "/*.data"), reason="conformance suite missing")
def test_mutations_never_crash():
    r = subprocess.run([sys.executable, "-c", CHILD, "7", SUITE, "4000"], capture_output=True,
                       text=True, timeout=120, cwd=os.getcwd())
    assert r.returncode == 0, f"child died ({r.returncode}):\n{r.stderr[-3000:]}"
    stats = eval(r.stdout.strip().splitlines()[-1])
    # the mutations exercise both outcomes of both stages
    assert min(stats.values()) > 50, stats

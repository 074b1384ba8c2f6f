"""`pybpfc check prog.py`: compile, then load every program into the kernel verifier where this
process may; a rejection prints the verifier log with instructions mapped to Python lines."""
from __future__ import annotations

import sys

from .build import add_compile_options, compile_options


def add_parser(sub):
    p = sub.add_parser("check", help="compile and run the kernel verifier on every program",
                       description=__doc__)
    p.add_argument("source", help="the Python module with the BPF programs")
    p.add_argument("--no-kernel", action="store_true", help="only compile (skip the kernel verifier)")
    add_compile_options(p)
    return p


def run(args) -> int:
    from .. import api
    from ..codegen import compile_file
    from ..elf import read_elf
    from ..errors import VerifierError

    obj = compile_file(args.source, **compile_options(args))
    spec = read_elf(obj, source=args.source)
    names = ", ".join(spec.programs)
    print(f"{args.source}: compiled {len(spec.programs)} program(s): {names}")
    if args.no_kernel:
        return 0
    try:
        from ..backends.kernel import kernel_available
        ok = kernel_available()
    except ImportError:
        ok = False
    if not ok:
        print("kernel verifier not available here (needs root/CAP_BPF); compiled only")
        return 0
    try:
        with api.load(spec, backend="kernel") as coll:
            for name, prog in spec.programs.items():
                raw = getattr(coll.programs, name).raw
                try:
                    n = raw.info().xlated_prog_len // 8   # after the verifier's rewrites
                except Exception:  # noqa: BLE001 - the count is informational only
                    n = prog.insn_count
                print(f"  {name:<24} {prog.section:<36} verified ({n} insns)")
    except VerifierError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0

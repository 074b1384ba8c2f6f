"""`pybpfc build prog.py [-o out.o] [--emit obj|ir|asm] [-O N] [--mcpu v1..v4]`: compile to a BPF ELF object."""
from __future__ import annotations

import os
import sys


def add_compile_options(p):
    p.add_argument("-O", dest="opt_level", type=int, default=2, choices=[0, 1, 2, 3],
                   help="LLVM optimisation level (default 2)")
    p.add_argument("--mcpu", default="v3", choices=["v1", "v2", "v3", "v4"],
                   help="BPF instruction set version (default v3)")
    p.add_argument("--tracepoint-formats", metavar="DIR",
                   help="saved tracepoint format files (DIR/CAT/NAME/format) instead of tracefs, for cross builds")


def add_parser(sub):
    p = sub.add_parser("build", help="compile a pybpfc module to a BPF ELF object",
                       description=__doc__)
    p.add_argument("source", help="the Python module with the BPF programs")
    p.add_argument("-o", "--output", help="output file ('-' for stdout; default: SOURCE.bpf.o / .ll / .s)")
    p.add_argument("--emit", choices=["obj", "ir", "asm"], default="obj",
                   help="object file (default), LLVM IR, or BPF assembly")
    add_compile_options(p)
    return p


def compile_options(args) -> dict:
    return {"opt_level": args.opt_level, "mcpu": args.mcpu, "tracepoint_formats": args.tracepoint_formats}


def run(args) -> int:
    from ..codegen import compile_file  # (GC thresholds for the build: see cli.main)

    data = compile_file(args.source, emit=args.emit, **compile_options(args))
    out = args.output
    if out is None:
        base = os.path.splitext(args.source)[0]
        out = base + {"obj": ".bpf.o", "ir": ".ll", "asm": ".s"}[args.emit]
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    with open(out, "wb") as f:
        f.write(data)
    print(f"wrote {out} ({len(data)} bytes)", file=sys.stderr)
    return 0

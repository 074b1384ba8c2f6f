"""`pybpfc asm`: assemble, disassemble and run BPF in the conformance suite's syntax."""
from __future__ import annotations

import sys

from ..errors import AssemblerError


def add_parser(sub):
    p = sub.add_parser("asm", help="assemble / disassemble / run BPF assembly",
                       description="Assemble FILE (assembly text or a conformance .data file) "
                                   "to raw instructions, or with -d disassemble FILE (raw "
                                   "instructions, a .data file or a BPF ELF object).")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="write raw instructions here (default: hex to stdout)")
    p.add_argument("-d", "--disassemble", action="store_true")
    p.add_argument("-p", "--program", help="with -d on an object: only this program")
    p.add_argument("--run", action="store_true",
                   help="run on the interpreter with the suite's helpers and print r0")
    p.add_argument("--mem", default=None, help="memory block as hex bytes (default: the .data "
                                               "file's -- mem)")
    p.add_argument("--budget", type=int, default=None)


def _load(path):
    """(insns, mem) from a .data file or assembly text."""
    from ..asm import assemble, parse_test
    if path.endswith(".data"):
        t = parse_test(path)
        return t.insns, t.mem
    try:
        with open(path, encoding="utf-8") as f:
            return assemble(f.read(), path), b""
    except UnicodeDecodeError:
        raise AssemblerError(f"{path}: not text; use -d to disassemble raw instructions") from None


def run(args) -> int:
    from ..asm import decode, disassemble, encode
    if args.disassemble:
        with open(args.file, "rb") as f:
            data = f.read()
        if data[:4] == b"\x7fELF":
            from .. import api
            spec = api.read_spec(args.file)
            for name, prog in spec.programs.items():
                if args.program and name != args.program:
                    continue
                print(f"{name}:  # section {prog.section}")
                print(disassemble(decode(prog.insns), addresses=True), end="")
            return 0
        if args.file.endswith(".data"):
            insns, _ = _load(args.file)
        else:
            if len(data) % 8:
                raise AssemblerError(f"{args.file}: {len(data)} bytes is not a whole number of "
                                     "8-byte instructions")
            insns = decode(data)
        print(disassemble(insns, addresses=True), end="")
        return 0
    insns, mem = _load(args.file)
    if args.run:
        from ..backends.userspace import vm
        if args.mem is not None:
            mem = bytes.fromhex(args.mem.replace(" ", ""))
        kw = {"budget": args.budget} if args.budget else {}
        buf = bytearray(mem)
        r0 = vm.run_program(insns, buf, helpers=vm.conformance_helpers(), name=args.file, **kw)
        print(f"r0 = {r0:#x} ({r0})")
        if buf:
            print(f"mem = {buf.hex(' ')}")
        return 0
    raw = encode(insns)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(raw)
    else:
        for i in range(0, len(raw), 8):
            sys.stdout.write(raw[i:i + 8].hex(" ") + "\n")
    return 0

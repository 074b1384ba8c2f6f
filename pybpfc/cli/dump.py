"""`pybpfc dump prog.py [--ir | --asm | --btf | --types]`: BPF disassembly with the Python source
lines interleaved (default), the optimised LLVM IR, the object's BTF, or the checked program's types."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from .build import add_compile_options, compile_options

OBJDUMP = ("llvm-objdump-19", "llvm-objdump")


def add_parser(sub):
    p = sub.add_parser("dump", help="show disassembly with source lines, LLVM IR or BTF", description=__doc__)
    p.add_argument("source", help="the Python module with the BPF programs")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ir", action="store_true", help="optimised LLVM IR")
    g.add_argument("--asm", action="store_true", help="BPF assembly as LLVM prints it")
    g.add_argument("--btf", action="store_true", help="the object's BTF (bpftool's format when available)")
    g.add_argument("--types", action="store_true", help="the checked program: functions, locals' types, maps")
    add_compile_options(p)
    return p


def run(args) -> int:
    from ..codegen import compile_file

    opts = compile_options(args)
    if args.types:
        from ..frontend.typer import describe_types   # the typed program: no lowering needed

        sys.stdout.write(describe_types(args.source, opts["tracepoint_formats"]))
        return 0
    if args.ir or args.asm:
        sys.stdout.write(compile_file(args.source, emit="ir" if args.ir else "asm", **opts).decode())
        return 0
    obj = compile_file(args.source, **opts)
    if args.btf:
        return _btf(obj)
    return _disasm(obj, args.source)


def _btf(obj: bytes) -> int:
    tool = shutil.which("bpftool")
    if tool:
        with tempfile.NamedTemporaryFile(suffix=".o") as f:
            f.write(obj)
            f.flush()
            r = subprocess.run([tool, "btf", "dump", "file", f.name], capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        return r.returncode
    from ..elf import read_elf

    spec = read_elf(obj)
    for tid, t in enumerate(spec.btf or [], start=1):
        print(f"[{tid}] {t!r}")
    return 0


def _disasm(obj: bytes, source: str) -> int:
    tool = next((shutil.which(t) for t in OBJDUMP if shutil.which(t)), None)
    if tool:
        with tempfile.NamedTemporaryFile(suffix=".o") as f:
            f.write(obj)
            f.flush()
            r = subprocess.run([tool, "-d", "-l", "-S", "--no-show-raw-insn", f.name], capture_output=True, text=True)
        sys.stdout.write(r.stdout.replace(f.name, os.path.basename(source)))
        return r.returncode
    # no LLVM tools: our disassembler, with each ProgramSpec line_info entry before its instruction
    from ..asm.disasm import insn_text
    from ..asm.insn import decode
    from ..elf import read_elf

    spec = read_elf(obj, source=source)
    for name, p in spec.programs.items():
        print(f"{name} ({p.section}):")
        insns = decode(p.insns)
        lines = {li.insn: li for li in p.line_info}
        for i in range(len(insns)):
            li = lines.get(i)
            if li is not None:
                print(f"; {os.path.basename(li.file)}:{li.line}: {li.source.strip()}")
            print(f"  {i:4}: {insn_text(insns, i)}")
        print()
    return 0

"""Hand-built specs for kernel backend tests: assembler text with `lddw %rN, map:NAME` and
`lddw %rN, map_value:NAME+OFF` placeholders becomes a ProgramSpec with relocations."""
import os
import re

import pytest

from pybpfc import uapi as U
from pybpfc.asm import assemble, encode
from pybpfc.elf.spec import CollectionSpec, LineInfo, MapSpec, ProgramSpec, Relocation

_REF = re.compile(r"^\s*lddw\s+(%r\d+),\s*(map|map_value):([\w.]+)(?:\+(\d+))?\s*$")


def kernel_or_skip():
    if os.geteuid() != 0:
        pytest.skip("needs root for bpf(2)")
    from pybpfc.backends.kernel import kernel_available

    if not kernel_available():
        pytest.skip("kernel eBPF is not available to this process")


def prog(name, text, type=U.BPF_PROG_TYPE_XDP, section="xdp", kind="xdp", lines=None, **kw):
    out, relocs = [], []
    for line in text.strip().splitlines():
        m = _REF.match(line)
        if m:
            reg, kindr, target, off = m.groups()
            line = f"lddw {reg}, 0"
        if m:
            relocs.append(Relocation(insn=_slots(out), kind=kindr, target=target,
                                     addend=int(off or 0)))
        out.append(line)
    insns = encode(assemble("\n".join(out)))
    return ProgramSpec(name=name, section=section, type=type, kind=kind, insns=insns,
                       relocations=relocs, line_info=lines or [], **kw)


def _slots(lines):
    """Instruction slots the lines take: lddw 2, labels/comments/blank 0, others 1."""
    n = 0
    for l in lines:
        l = l.split("#")[0].strip()
        if not l or l.endswith(":"):
            continue
        n += 2 if l.startswith("lddw") else 1
    return n


def collection(maps=(), progs=()):
    return CollectionSpec(maps={m.name: m for m in maps}, programs={p.name: p for p in progs})

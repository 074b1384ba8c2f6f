"""Reader for the conformance suite's `.data` files (format: /work/shared/conformance/README.md)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import AssemblerError
from . import insn as I
from .assembler import assemble
from .insn import Insn

_KNOWN = {"asm", "raw", "mem", "result", "error", "c", "no register offset"}


@dataclass
class ConformanceTest:
    name: str
    path: str
    insns: list[Insn]
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    asm: str | None = None
    raw: list[Insn] | None = None
    sections: dict = field(default_factory=dict)


def _raw(lines, path) -> list[Insn]:
    out = []
    for lineno, text in lines:
        t = text.split("#", 1)[0].strip()
        if not t:
            continue
        try:
            if re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}", t):
                out.append(Insn.from_word(int(t, 16)))
            else:
                bs = bytes(int(b, 16) for b in t.split())
                if len(bs) != 8:
                    raise ValueError(f"expected 8 bytes, got {len(bs)}")
                out.append(Insn.decode(bs))
        except ValueError as e:
            raise AssemblerError(f"{path}:{lineno}: bad raw instruction: {e}") from None
    return out


def parse(path: str) -> ConformanceTest:
    """Reads one test; any malformed part raises AssemblerError naming file and line."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    name = os.path.basename(path)
    sections: dict[str, list[tuple[int, str]]] = {}
    cur = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("--"):
            key = line[2:].strip()
            if key not in _KNOWN:
                raise AssemblerError(f"{path}:{lineno}: unknown directive {line.strip()!r}")
            if key in sections:
                raise AssemblerError(f"{path}:{lineno}: section {line.strip()!r} given twice")
            cur = sections[key] = []
            continue
        if cur is not None:
            cur.append((lineno, line))
    if "asm" not in sections and "raw" not in sections:
        raise AssemblerError(f"{path}:1: no '-- asm' or '-- raw' section: nothing to run")
    asm = raw = None
    if "asm" in sections:
        body = sections["asm"]
        first = body[0][0] if body else 1
        asm = "\n".join(t for _, t in body)
        insns = assemble(asm, path, first)
    if "raw" in sections:
        raw = _raw(sections["raw"], path)
        if not raw:
            raise AssemblerError(f"{path}:1: empty '-- raw' section")
        probs = I.check(raw)
        if probs:
            slot, msg = probs[0]
            lines = [ln for ln, t in sections["raw"] if t.split("#", 1)[0].strip()]
            raise AssemblerError(f"{path}:{lines[slot]}: insn {slot}: {msg}")
        if asm is None:
            insns = raw
    mem = b""
    if "mem" in sections:
        try:
            mem = bytes(int(b, 16) for _, t in sections["mem"] for b in t.split("#", 1)[0].split())
        except ValueError as e:
            raise AssemblerError(f"{path}:{sections['mem'][0][0]}: bad mem byte: {e}") from None
    result = None
    if "result" in sections:
        vals = [(ln, t.strip()) for ln, t in sections["result"] if t.strip()]
        if len(vals) != 1:
            raise AssemblerError(f"{path}: '-- result' needs exactly one value")
        try:
            result = int(vals[0][1], 0) & (2**64 - 1)
        except ValueError:
            raise AssemblerError(f"{path}:{vals[0][0]}: bad result {vals[0][1]!r}") from None
    error = None
    if "error" in sections:
        error = "\n".join(t for _, t in sections["error"]).strip()
    if result is None and "error" not in sections:
        raise AssemblerError(f"{path}:1: neither '-- result' nor '-- error': nothing to check")
    return ConformanceTest(name, path, insns, mem, result, error, asm, raw,
                           {k: "\n".join(t for _, t in v) for k, v in sections.items()})

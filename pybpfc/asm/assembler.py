"""Assembler for the syntax of the BPF conformance suite (uBPF style).

    mov32 %r0, 0          ldxw %r0, [%r1+4]      stxdw [%r10-8], %r1    stw [%r1], 7
    lddw %r0, 0x1122334455667788                 jne %r0, %r1, label    ja +2   ja32 label
    call 5    call %r2 (callx)    call local func    lock fetch add32 [%r10-4], %r1    exit

Extensions (so every prepared program can be written down and disassembled back):
`lddw %r1, map_fd(IDX)`, `lddw %r1, map_value(IDX, OFF)`, `lddw %r1, func(+N|label)`,
`lddw %r1, pseudo(SRC, IMM64)`, `call kfunc ID`. A jump to the undefined label `exit` goes to
the next exit instruction (the suite's tests use it that way).
"""
from __future__ import annotations

import re

from ..errors import AssemblerError
from . import insn as I
from .insn import Insn

_ALU = {"add": I.ADD, "sub": I.SUB, "mul": I.MUL, "div": I.DIV, "or": I.OR, "and": I.AND,
        "lsh": I.LSH, "rsh": I.RSH, "mod": I.MOD, "xor": I.XOR, "mov": I.MOV, "arsh": I.ARSH,
        "sdiv": I.DIV, "smod": I.MOD}
_JMP = {"jeq": I.JEQ, "jgt": I.JGT, "jge": I.JGE, "jset": I.JSET, "jne": I.JNE, "jsgt": I.JSGT,
        "jsge": I.JSGE, "jlt": I.JLT, "jle": I.JLE, "jslt": I.JSLT, "jsle": I.JSLE}
_SIZES = {"b": I.B, "h": I.H, "w": I.W, "dw": I.DW}
_ATOMIC = {"add": I.ADD, "or": I.OR, "and": I.AND, "xor": I.XOR}
_MOVSX = {"movsx832": (I.ALU, 8), "movsx1632": (I.ALU, 16), "movsx864": (I.ALU64, 8),
          "movsx1664": (I.ALU64, 16), "movsx3264": (I.ALU64, 32)}

_REG = re.compile(r"^%r(\d+)$")
_MEM = re.compile(r"^\[\s*(%r\d+)\s*(?:([+-])\s*([0-9a-fA-Fx]+))?\s*\]$")
_LABEL = re.compile(r"^[A-Za-z_.][\w.]*$")
_PSEUDO = re.compile(r"^(map_fd|map_value|func|pseudo)\((.*)\)$")


class _Line:
    __slots__ = ("lineno", "text")

    def __init__(self, lineno, text):
        self.lineno, self.text = lineno, text


def _int(tok: str) -> int:
    t = tok.strip()
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|\d+)", t)
    if not m:
        raise ValueError(f"expected a number, got {tok!r}")
    v = int(m.group(2), 0)
    return -v if m.group(1) == "-" else v


def _ranged(tok: str, bits: int, what: str) -> int:
    """A signed `bits`-wide field; hex may also be written unsigned (0xffffffff == -1)."""
    v = _int(tok)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if "x" in tok.lower():
        hi = (1 << bits) - 1
    if not lo <= v <= hi:
        raise ValueError(f"{what} {tok.strip()} out of {bits}-bit range")
    if v > (1 << (bits - 1)) - 1:
        v -= 1 << bits
    return v


def _reg(tok: str) -> int:
    m = _REG.match(tok.strip())
    if not m:
        raise ValueError(f"expected a register %r0..%r10, got {tok.strip()!r}")
    r = int(m.group(1))
    if r > 10:
        raise ValueError(f"invalid register {tok.strip()} (registers are %r0..%r10)")
    return r


def _mem(tok: str) -> tuple[int, int]:
    m = _MEM.match(tok.strip())
    if not m:
        raise ValueError(f"expected a memory operand [%rN+off], got {tok.strip()!r}")
    reg = _reg(m.group(1))
    off = 0
    if m.group(3) is not None:
        off = _ranged(m.group(2) + m.group(3), 16, "offset")
    return reg, off


def _ops(text: str, n: int, mnem: str) -> list[str]:
    ops = [o.strip() for o in text.split(",")] if text.strip() else []
    if len(ops) != n or any(not o for o in ops):
        raise ValueError(f"{mnem} takes {n} operand{'s' if n != 1 else ''}, got {len(ops)}")
    return ops


def assemble(text: str, name: str = "<asm>", first_line: int = 1) -> list[Insn]:
    """Assembles `text`; errors raise AssemblerError("name:line: ...")."""
    lines, labels = [], {}
    slot = 0
    for k, raw in enumerate(text.splitlines()):
        lineno = first_line + k
        t = raw.split("#", 1)[0].strip()
        while True:
            m = re.match(r"^([A-Za-z_.][\w.]*)\s*:(.*)$", t)
            if not m:
                break
            if m.group(1) in labels:
                raise AssemblerError(f"{name}:{lineno}: label {m.group(1)!r} defined twice")
            labels[m.group(1)] = slot
            t = m.group(2).strip()
        if not t:
            continue
        lines.append((slot, _Line(lineno, t)))
        slot += 2 if t.split(None, 1)[0].lower() == "lddw" else 1
    if not lines:
        raise AssemblerError(f"{name}:{first_line}: empty program (no instructions)")
    exits = [s for s, ln in lines if ln.text.lower() == "exit"]
    out: list[Insn] = []
    for s, ln in lines:
        try:
            out.extend(_one(ln.text, s, labels, exits))
        except ValueError as e:
            raise AssemblerError(f"{name}:{ln.lineno}: {e}: {ln.text!r}") from None
    return out


def _target(tok: str, here: int, labels, exits, bits: int = 16) -> int:
    tok = tok.strip()
    if tok in labels:
        off = labels[tok] - here - 1
    elif tok == "exit":
        nxt = [e for e in exits if e > here]
        if not nxt:
            raise ValueError("jump to 'exit' with no exit instruction after it")
        off = nxt[0] - here - 1
    elif re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", tok):
        return _ranged(tok, bits, "jump offset")
    elif _LABEL.match(tok):
        raise ValueError(f"undefined label {tok!r}")
    else:
        raise ValueError(f"expected a label or +offset, got {tok!r}")
    if not -(1 << (bits - 1)) <= off < (1 << (bits - 1)):
        raise ValueError(f"jump to {tok!r} out of {bits}-bit range")
    return off


def _one(text: str, here: int, labels, exits) -> list[Insn]:
    parts = text.split(None, 1)
    mnem, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
    if mnem == "exit":
        _ops(rest, 0, mnem)
        return [Insn(I.JMP | I.EXIT)]
    if mnem in ("ja", "ja32"):
        (t,) = _ops(rest, 1, mnem)
        if mnem == "ja":
            return [Insn(I.JMP | I.JA, off=_target(t, here, labels, exits))]
        return [Insn(I.JMP32 | I.JA, imm=_target(t, here, labels, exits, 32))]
    if mnem == "call":
        words = rest.split()
        if len(words) == 2 and words[0] == "local":
            return [Insn(I.JMP | I.CALL, src=I.PSEUDO_CALL,
                         imm=_target(words[1], here, labels, exits, 32))]
        if len(words) == 2 and words[0] == "kfunc":
            return [Insn(I.JMP | I.CALL, src=I.PSEUDO_KFUNC_CALL, imm=_ranged(words[1], 32, "id"))]
        (t,) = _ops(rest, 1, mnem)
        if t.startswith("%"):
            return [Insn(I.JMP | I.CALL | I.X, dst=_reg(t))]
        return [Insn(I.JMP | I.CALL, imm=_ranged(t, 32, "helper id"))]
    if mnem == "lddw":
        d, _, v = rest.partition(",")  # the value may hold commas: map_value(i, off)
        d, v = _ops(d + "," + v.replace(",", ";"), 2, mnem) if v.strip() else _ops(rest, 2, mnem)
        v = v.replace(";", ",")
        dst = _reg(d)
        src, val = 0, None
        m = _PSEUDO.match(v.replace(" ", ""))
        if m:
            kind, args = m.group(1), m.group(2).split(",")
            if kind == "map_fd" and len(args) == 1:
                src, val = I.PSEUDO_MAP_FD, _ranged(args[0], 32, "map index") & 0xFFFFFFFF
            elif kind == "map_value" and len(args) == 2:
                src = I.PSEUDO_MAP_VALUE
                val = (_ranged(args[0], 32, "map index") & 0xFFFFFFFF) | \
                      ((_ranged(args[1], 32, "offset") & 0xFFFFFFFF) << 32)
            elif kind == "func" and len(args) == 1:
                src = I.PSEUDO_FUNC
                val = _target(args[0], here, labels, exits, 32) & 0xFFFFFFFF
            elif kind == "pseudo" and len(args) == 2:
                src = _int(args[0])
                if not 0 <= src <= 15:
                    raise ValueError(f"pseudo source {src} out of range")
                val = _int(args[1])
            else:
                raise ValueError(f"bad {kind}(...) operand")
        else:
            val = _int(v)
        if not -(1 << 63) <= val < (1 << 64):
            raise ValueError(f"immediate {v} out of 64-bit range")
        val &= (1 << 64) - 1
        lo, hi = val & 0xFFFFFFFF, val >> 32
        s32 = lambda x: x - (1 << 32) if x >= (1 << 31) else x  # noqa: E731
        return [Insn(I.LDDW, dst=dst, src=src, imm=s32(lo)), Insn(0, imm=s32(hi))]
    if mnem == "lock":
        words = rest.split(None, 1)
        fetch = False
        if words and words[0].lower() == "fetch":
            fetch = True
            words = words[1].split(None, 1) if len(words) > 1 else []
        if len(words) != 2:
            raise ValueError("Invalid number of operands for lock: expected "
                             "'lock [fetch] OP[32] [%rN+off], %rM'")
        op = words[0].lower()
        size = I.DW
        if op.endswith("32"):
            size, op = I.W, op[:-2]
        elif op.endswith("64"):
            op = op[:-2]
        if op in _ATOMIC:
            imm = _ATOMIC[op] | (I.FETCH if fetch else 0)
        elif op in ("xchg", "cmpxchg") and not fetch:
            imm = I.XCHG if op == "xchg" else I.CMPXCHG
        else:
            raise ValueError(f"unknown atomic operation {'fetch ' if fetch else ''}{op!r}")
        m, r = _ops(words[1], 2, "lock " + words[0])
        dst, off = _mem(m)
        return [Insn(I.STX | I.ATOMIC | size, dst=dst, src=_reg(r), off=off, imm=imm)]
    if mnem in _MOVSX:
        c, bits = _MOVSX[mnem]
        d, s = _ops(rest, 2, mnem)
        return [Insn(c | I.MOV | I.X, dst=_reg(d), src=_reg(s), off=bits)]
    m = re.fullmatch(r"(le|be|bswap|swap)(16|32|64)", mnem)
    if m:
        (d,) = _ops(rest, 1, mnem)
        if m.group(1) in ("le", "be"):
            op = I.ALU | I.END | (I.TO_LE if m.group(1) == "le" else I.TO_BE)
        else:
            op = I.ALU64 | I.END
        return [Insn(op, dst=_reg(d), imm=int(m.group(2)))]
    m = re.fullmatch(r"neg(32|64)?", mnem)
    if m:
        (d,) = _ops(rest, 1, mnem)
        return [Insn((I.ALU if m.group(1) == "32" else I.ALU64) | I.NEG, dst=_reg(d))]
    m = re.fullmatch(r"([a-z]+?)(32|64)?", mnem)
    if m and m.group(1) in _ALU:
        c = I.ALU if m.group(2) == "32" else I.ALU64
        d, s = _ops(rest, 2, mnem)
        off = 1 if m.group(1) in ("sdiv", "smod") else 0
        op = c | _ALU[m.group(1)]
        if s.startswith("%"):
            return [Insn(op | I.X, dst=_reg(d), src=_reg(s), off=off)]
        return [Insn(op | I.K, dst=_reg(d), off=off, imm=_ranged(s, 32, "immediate"))]
    if m and m.group(1) in _JMP:
        c = I.JMP32 if m.group(2) == "32" else I.JMP
        d, s, t = _ops(rest, 3, mnem)
        op = c | _JMP[m.group(1)]
        off = _target(t, here, labels, exits)
        if s.startswith("%"):
            return [Insn(op | I.X, dst=_reg(d), src=_reg(s), off=off)]
        return [Insn(op | I.K, dst=_reg(d), off=off, imm=_ranged(s, 32, "immediate"))]
    m = re.fullmatch(r"(ldxs|ldx|stx|st)(b|h|w|dw)", mnem)
    if m:
        kind, size = m.group(1), _SIZES[m.group(2)]
        a, b = _ops(rest, 2, mnem)
        if kind in ("ldx", "ldxs"):
            if kind == "ldxs" and size == I.DW:
                raise ValueError("unknown mnemonic 'ldxsdw' (sign-extending loads are b/h/w)")
            src, off = _mem(b)
            return [Insn(I.LDX | (I.MEMSX if kind == "ldxs" else I.MEM) | size, dst=_reg(a),
                         src=src, off=off)]
        dst, off = _mem(a)
        if kind == "stx":
            return [Insn(I.STX | I.MEM | size, dst=dst, src=_reg(b), off=off)]
        return [Insn(I.ST | I.MEM | size, dst=dst, off=off, imm=_ranged(b, 32, "immediate"))]
    raise ValueError(f"unknown mnemonic {mnem!r}")

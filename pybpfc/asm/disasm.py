"""Disassembler to the assembler's syntax: `assemble(disassemble(p)) == p` for valid programs."""
from __future__ import annotations

from . import insn as I
from .insn import Insn

_ALU = {v: k for k, v in {"add": I.ADD, "sub": I.SUB, "mul": I.MUL, "div": I.DIV, "or": I.OR,
                          "and": I.AND, "lsh": I.LSH, "rsh": I.RSH, "mod": I.MOD, "xor": I.XOR,
                          "mov": I.MOV, "arsh": I.ARSH}.items()}
_JMP = {I.JEQ: "jeq", I.JGT: "jgt", I.JGE: "jge", I.JSET: "jset", I.JNE: "jne", I.JSGT: "jsgt",
        I.JSGE: "jsge", I.JLT: "jlt", I.JLE: "jle", I.JSLT: "jslt", I.JSLE: "jsle"}
_SZ = {I.B: "b", I.H: "h", I.W: "w", I.DW: "dw"}
_ATOMIC = {I.ADD: "add", I.OR: "or", I.AND: "and", I.XOR: "xor"}


def _off(v: int) -> str:
    return f"+{v}" if v >= 0 else str(v)


def _mem(reg: int, off: int) -> str:
    return f"[%r{reg}{_off(off)}]"


def insn_text(insns, i: int) -> str:
    """Text of the instruction starting at slot i (lddw consumes slot i+1 too)."""
    ins: Insn = insns[i]
    op, c = ins.opcode, I.cls(ins.opcode)
    d, s = f"%r{ins.dst}", f"%r{ins.src}"
    if c in (I.ALU, I.ALU64):
        o, x = op & 0xF0, op & 0x08
        sfx = "32" if c == I.ALU else ""
        if o == I.END:
            if c == I.ALU64:
                return f"bswap{ins.imm} {d}"
            return f"{'be' if x else 'le'}{ins.imm} {d}"
        if o == I.NEG:
            return f"neg{sfx} {d}"
        if o == I.MOV and x and ins.off:
            return f"movsx{ins.off}{'32' if c == I.ALU else '64'} {d}, {s}"
        name = _ALU.get(o)
        if name is None:
            return f".raw {ins.word():#018x}"
        if o in (I.DIV, I.MOD) and ins.off == 1:
            name = "s" + name
        return f"{name}{sfx} {d}, {s if x else ins.imm}"
    if c in (I.JMP, I.JMP32):
        o, x = op & 0xF0, op & 0x08
        if o == I.JA:
            return f"ja {_off(ins.off)}" if c == I.JMP else f"ja32 {_off(ins.imm)}"
        if o == I.EXIT:
            return "exit"
        if o == I.CALL:
            if x:
                return f"call {d}"
            if ins.src == I.PSEUDO_CALL:
                return f"call local {_off(ins.imm)}"
            if ins.src == I.PSEUDO_KFUNC_CALL:
                return f"call kfunc {ins.imm}"
            return f"call {ins.imm}"
        name = _JMP.get(o)
        if name is None:
            return f".raw {ins.word():#018x}"
        sfx = "32" if c == I.JMP32 else ""
        return f"{name}{sfx} {d}, {s if x else ins.imm}, {_off(ins.off)}"
    mode, size = op & 0xE0, op & 0x18
    if op == I.LDDW and i + 1 < len(insns):
        val = I.lddw_value(ins, insns[i + 1])
        hi = insns[i + 1].imm
        if ins.src == 0:
            return f"lddw {d}, {val:#x}"
        if ins.src == I.PSEUDO_MAP_FD and hi == 0:
            return f"lddw {d}, map_fd({ins.imm})"
        if ins.src == I.PSEUDO_MAP_VALUE:
            return f"lddw {d}, map_value({ins.imm}, {hi})"
        if ins.src == I.PSEUDO_FUNC and hi == 0:
            return f"lddw {d}, func({_off(ins.imm)})"
        return f"lddw {d}, pseudo({ins.src}, {val:#x})"
    if c == I.LDX and mode in (I.MEM, I.MEMSX):
        return f"ldx{'s' if mode == I.MEMSX else ''}{_SZ[size]} {d}, {_mem(ins.src, ins.off)}"
    if c == I.ST and mode == I.MEM:
        return f"st{_SZ[size]} {_mem(ins.dst, ins.off)}, {ins.imm}"
    if c == I.STX and mode == I.MEM:
        return f"stx{_SZ[size]} {_mem(ins.dst, ins.off)}, {s}"
    if c == I.STX and mode == I.ATOMIC and size in (I.W, I.DW):
        sfx = "32" if size == I.W else ""
        m = _mem(ins.dst, ins.off)
        if ins.imm == I.XCHG:
            return f"lock xchg{sfx} {m}, {s}"
        if ins.imm == I.CMPXCHG:
            return f"lock cmpxchg{sfx} {m}, {s}"
        name = _ATOMIC.get(ins.imm & ~I.FETCH)
        if name is not None and ins.imm & ~0xF1 == 0:
            return f"lock {'fetch ' if ins.imm & I.FETCH else ''}{name}{sfx} {m}, {s}"
    return f".raw {ins.word():#018x}"


def disassemble(insns, *, addresses: bool = False) -> str:
    """One instruction per line; jump offsets stay numeric (+N) so the text reassembles."""
    if isinstance(insns, (bytes, bytearray, memoryview)):
        insns = I.decode(bytes(insns))
    out, i = [], 0
    while i < len(insns):
        t = insn_text(insns, i)
        out.append(f"{i:5d}: {t}" if addresses else t)
        i += 2 if insns[i].opcode == I.LDDW else 1
    return "\n".join(out) + "\n"

"""BPF instruction encoding (RFC 9669, linux/bpf_common.h + linux/bpf.h numbers).

An `Insn` is one 8-byte slot; lddw takes two slots (the second has opcode 0 and carries the
high 32 bits of the immediate in `imm`). `check(insns)` enforces the ISA's field rules
(reserved fields zero, valid opcodes) and is shared by the raw-section reader and the tests.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

# classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# ALU ops
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
# JMP ops
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
K, X = 0x00, 0x08
TO_LE, TO_BE = 0x00, 0x08
# sizes and modes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
# atomic imm
FETCH, XCHG, CMPXCHG = 0x01, 0xE0 | 0x01, 0xF0 | 0x01
ATOMIC_OPS = {ADD, OR, AND, XOR, ADD | FETCH, OR | FETCH, AND | FETCH, XOR | FETCH, XCHG, CMPXCHG}
# lddw src_reg values and call kinds (linux/bpf.h)
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC = 1, 2, 3, 4
PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = 5, 6
PSEUDO_CALL, PSEUDO_KFUNC_CALL = 1, 2

LDDW = LD | IMM | DW  # 0x18
SIZE_BYTES = {B: 1, H: 2, W: 4, DW: 8}


def cls(op: int) -> int:
    return op & 0x07


@dataclass(frozen=True)
class Insn:
    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0   # signed 16
    imm: int = 0   # signed 32

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.opcode, (self.src << 4) | self.dst, self.off, self.imm)

    def word(self) -> int:
        return int.from_bytes(self.encode(), "little")

    @classmethod
    def decode(cls_, data: bytes, at: int = 0) -> "Insn":
        op, regs, off, imm = struct.unpack_from("<BBhi", data, at)
        return cls_(op, regs & 0xF, regs >> 4, off, imm)

    @classmethod
    def from_word(cls_, w: int) -> "Insn":
        return cls_.decode((w & (2**64 - 1)).to_bytes(8, "little"))


def encode(insns) -> bytes:
    return b"".join(i.encode() for i in insns)


def decode(data: bytes) -> list[Insn]:
    if len(data) % 8:
        raise ValueError(f"program length {len(data)} is not a multiple of 8")
    return [Insn.decode(data, i) for i in range(0, len(data), 8)]


def lddw_value(lo: Insn, hi: Insn) -> int:
    return (lo.imm & 0xFFFFFFFF) | ((hi.imm & 0xFFFFFFFF) << 32)


def problem(insns, i: int) -> str | None:
    """Why slot i (a first slot) breaks the ISA's encoding rules, or None if it is valid."""
    ins = insns[i]
    op, c = ins.opcode, cls(ins.opcode)
    if ins.dst > 10 or ins.src > 10:
        return f"invalid register r{max(ins.dst, ins.src)}"
    if c in (ALU, ALU64):
        o, s = op & 0xF0, op & 0x08
        if o == END:
            if c == ALU64 and s:
                return f"invalid opcode {op:#04x}"
            if ins.src or ins.off:
                return "byte swap with nonzero src or offset"
            if ins.imm not in (16, 32, 64):
                return f"byte swap width {ins.imm} (must be 16, 32 or 64)"
            return None
        if o > END:
            return f"invalid opcode {op:#04x}"
        if o == NEG:
            if s:
                return f"invalid opcode {op:#04x}"
            if ins.src or ins.off or ins.imm:
                return "neg with nonzero src, offset or imm"
            return None
        okoff = {0}
        if o in (DIV, MOD):
            okoff = {0, 1}
        elif o == MOV and s:
            okoff = {0, 8, 16, 32} if c == ALU64 else {0, 8, 16}
        if ins.off not in okoff:
            return f"invalid offset {ins.off} for this ALU operation"
        if s and ins.imm:
            return "register-source ALU with nonzero imm"
        if not s and ins.src:
            return "immediate-source ALU with nonzero src"
        return None
    if c in (JMP, JMP32):
        o, s = op & 0xF0, op & 0x08
        if o == JA:
            if s or ins.dst or ins.src:
                return "ja with a register operand"
            if c == JMP and ins.imm:
                return "ja with nonzero imm (use ja32 for a 32-bit offset)"
            if c == JMP32 and ins.off:
                return "ja32 with nonzero offset"
            return None
        if o == CALL:
            if c != JMP:
                return f"invalid opcode {op:#04x}"
            if s:  # callx: the register is in dst
                if ins.src or ins.off or ins.imm:
                    return "callx with nonzero src, offset or imm"
                return None
            if ins.dst or ins.off:
                return "call with nonzero dst or offset"
            if ins.src not in (0, PSEUDO_CALL, PSEUDO_KFUNC_CALL):
                return f"call with invalid src {ins.src}"
            return None
        if o == EXIT:
            if c != JMP or s:
                return f"invalid opcode {op:#04x}"
            if ins.dst or ins.src or ins.off or ins.imm:
                return "exit with a nonzero field"
            return None
        if o > JSLE:
            return f"invalid opcode {op:#04x}"
        if s and ins.imm:
            return "register-source jump with nonzero imm"
        if not s and ins.src:
            return "immediate-source jump with nonzero src"
        return None
    mode, size = op & 0xE0, op & 0x18
    if c == LD:
        if op != LDDW:
            return f"invalid or unsupported opcode {op:#04x} (legacy packet loads are not supported)"
        if ins.off:
            return "lddw with nonzero offset"
        if ins.src > PSEUDO_MAP_IDX_VALUE:
            return f"lddw with invalid src {ins.src}"
        if i + 1 >= len(insns):
            return "lddw without its second slot"
        nxt = insns[i + 1]
        if nxt.opcode or nxt.dst or nxt.src or nxt.off:
            return "lddw second slot has nonzero opcode/registers/offset"
        return None
    if c == LDX:
        if mode not in (MEM, MEMSX) or (mode == MEMSX and size == DW):
            return f"invalid opcode {op:#04x}"
        if ins.imm:
            return "load with nonzero imm"
        return None
    if c == ST:
        if mode != MEM:
            return f"invalid opcode {op:#04x}"
        if ins.src:
            return "store-immediate with nonzero src"
        return None
    # STX
    if mode == MEM:
        if ins.imm:
            return "store with nonzero imm"
        return None
    if mode == ATOMIC:
        if size not in (W, DW):
            return f"atomic operation of size {SIZE_BYTES[size]} (must be 4 or 8)"
        if ins.imm not in ATOMIC_OPS:
            return f"invalid atomic operation {ins.imm:#x}"
        return None
    return f"invalid opcode {op:#04x}"


def check(insns) -> list[tuple[int, str]]:
    """All encoding problems as (slot index, message)."""
    out, i = [], 0
    while i < len(insns):
        p = problem(insns, i)
        if p:
            out.append((i, p))
        i += 2 if insns[i].opcode == LDDW else 1
    return out

"""CO-RE relocations applied in Python (what libbpf does before BPF_PROG_LOAD).

The kernel can apply CO-RE itself (BPF_PROG_LOAD core_relos, see ProgramSpec.core_relos_raw);
this is for loaders that patch instructions themselves or want to see the resolved values.
Implemented: field byte offset/size/exists/signed/lshift/rshift, local/target type id, type
exists/size, enum value exists/value. Not: TYPE_MATCHES (libbpf's deep type matching).

Matching follows libbpf: candidates in the target BTF have the same "essential" name (the
local name up to a "___flavor" suffix) and a compatible kind; members are found by name,
through anonymous structs/unions; arrays are indexed with the target's element sizes.
"""
from __future__ import annotations

import struct

from ..errors import LoadError
from .btf import (
    INT_SIGNED, KIND_ARRAY, KIND_ENUM, KIND_ENUM64, KIND_FWD, KIND_INT, KIND_PTR, KIND_STRUCT,
    KIND_UNION, BTF,
)

(FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS, FIELD_SIGNED, FIELD_LSHIFT_U64,
 FIELD_RSHIFT_U64, TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, ENUMVAL_EXISTS,
 ENUMVAL_VALUE, TYPE_MATCHES) = range(13)
KIND_NAMES = ["field_byte_offset", "field_byte_size", "field_exists", "field_signed",
              "field_lshift_u64", "field_rshift_u64", "type_id_local", "type_id_target",
              "type_exists", "type_size", "enumval_exists", "enumval_value", "type_matches"]
_FIELD = range(FIELD_BYTE_OFFSET, FIELD_RSHIFT_U64 + 1)
_TYPE = range(TYPE_ID_LOCAL, TYPE_SIZE + 1)
POISON = 0xBAD2310  # libbpf's marker call imm for a relocation that could not be resolved


def essential_name(name: str) -> str:
    i = name.find("___")
    return name[:i] if i > 0 else name


class _NoMatch(Exception):
    pass


def _field(btf: BTF, root: int, access: list, names: list | None):
    """Walk an access path. Returns (bit_offset, member type id, bitfield size) in `btf`.

    names: member names to follow (target side); None: follow the indices (local side) and
    record the names into the returned list.
    """
    t = btf.resolve(root)
    bit = access[0] * btf.size_of(root) * 8 if access[0] else 0
    tid = root
    walked = []
    bitfield = 0
    for depth, idx in enumerate(access[1:]):
        t = btf.resolve(tid)
        if t.kind in (KIND_STRUCT, KIND_UNION):
            if names is None:
                if idx >= len(t.members):
                    raise _NoMatch(f"member #{idx} of {btf.type_name(t.id)} out of range")
                m = t.members[idx]
                walked.append(m.name)
                bit += m.offset
                tid, bitfield = m.type, m.bitfield_size
            else:
                found = _find_member(btf, t, names[depth])
                if found is None:
                    raise _NoMatch(f"{btf.type_name(t.id)} has no member '{names[depth]}'")
                off, m = found
                bit += off
                tid, bitfield = m.type, m.bitfield_size
        elif t.kind == KIND_ARRAY:
            if names is None:
                walked.append(None)
            elif names[depth] is not None:
                raise _NoMatch("array where a struct was expected")
            if t.nelems and idx >= t.nelems and depth != len(access) - 2:
                raise _NoMatch(f"index {idx} past the end of {btf.type_name(t.id)}")
            bit += idx * btf.size_of(t.type) * 8
            tid, bitfield = t.type, 0
        else:
            raise _NoMatch(f"cannot index into {btf.type_name(t.id)}")
    if names is None:
        return bit, tid, bitfield, walked
    return bit, tid, bitfield, None


def _find_member(btf: BTF, t, name: str, depth: int = 0):
    """(bit offset, member) of `name` in struct/union t, looking through anonymous members."""
    for m in t.members:
        if m.name == name:
            return m.offset, m
    if depth > 32:
        return None
    for m in t.members:
        if not m.name:
            inner = btf.resolve(m.type)
            if inner.kind in (KIND_STRUCT, KIND_UNION):
                r = _find_member(btf, inner, name, depth + 1)
                if r is not None:
                    return m.offset + r[0], r[1]
    return None


def _compatible(lt, tt) -> bool:
    lk, tk = lt.kind, tt.kind
    if lk in (KIND_ENUM, KIND_ENUM64):
        return tk in (KIND_ENUM, KIND_ENUM64)
    if lk == KIND_FWD or tk == KIND_FWD:
        return True
    return lk == tk


def _candidates(local: BTF, lt, target: BTF):
    name = essential_name(lt.name)
    if not name:
        return []
    out = []
    seen = set()
    for t in target.find_all(name):
        if t.id not in seen and _compatible(lt, target.resolve(t.id)):
            seen.add(t.id)
            out.append(t)
    return out


def _field_value(kind, bit, tid, bitfield, btf: BTF):
    size = btf.size_of(tid)
    if kind == FIELD_BYTE_OFFSET:
        return (bit // 8) if not bitfield else (bit // 8) // size * size
    if kind == FIELD_BYTE_SIZE:
        return size
    if kind == FIELD_SIGNED:
        t = btf.resolve(tid)
        return int(t.kind == KIND_INT and bool(t.encoding & INT_SIGNED) or
                   t.kind in (KIND_ENUM, KIND_ENUM64) and bool(t.kind_flag))
    if kind in (FIELD_LSHIFT_U64, FIELD_RSHIFT_U64):
        bits = bitfield or size * 8
        load_off = (bit // 8) // size * size if bitfield else bit // 8
        lshift = 64 - (bit - load_off * 8 + bits)  # little-endian
        return lshift if kind == FIELD_LSHIFT_U64 else 64 - bits
    raise AssertionError(kind)


def resolve(local: BTF, target: BTF, type_id: int, access: str, kind: int):
    """(local value, target value or None when absent) of one relocation."""
    lt = local.resolve(type_id)
    try:
        acc = [int(x) for x in access.split(":")]
    except ValueError:
        raise LoadError(f"CO-RE: bad access string {access!r}") from None
    if kind == TYPE_ID_LOCAL:
        return type_id, type_id
    if kind in _TYPE:
        cands = _candidates(local, lt, target)
        if kind == TYPE_EXISTS:
            return 1, int(bool(cands))
        if not cands:
            return (type_id if kind == TYPE_ID_TARGET else local.size_of(type_id)), None
        c = cands[0]
        if kind == TYPE_ID_TARGET:
            return type_id, c.id
        return local.size_of(type_id), target.size_of(c.id)
    if kind in (ENUMVAL_EXISTS, ENUMVAL_VALUE):
        if lt.kind not in (KIND_ENUM, KIND_ENUM64) or acc[0] >= len(lt.members):
            raise LoadError(f"CO-RE: enum value access {access} on {local.type_name(type_id)}")
        name = lt.members[acc[0]].name
        lval = lt.members[acc[0]].value
        for c in _candidates(local, lt, target):
            for m in target.resolve(c.id).members:
                if m.name == name:
                    return (1, 1) if kind == ENUMVAL_EXISTS else (lval, m.value)
        return (1, 0) if kind == ENUMVAL_EXISTS else (lval, None)
    if kind in _FIELD:
        try:
            lbit, ltid, lbf, names = _field(local, type_id, acc, None)
        except _NoMatch as e:
            raise LoadError(f"CO-RE: local access {access} of {local.type_name(type_id)}: {e}") from None
        lval = 1 if kind == FIELD_EXISTS else _field_value(kind, lbit, ltid, lbf, local)
        for c in _candidates(local, lt, target):
            try:
                bit, tid, bf, _ = _field(target, c.id, acc, names)
            except _NoMatch:
                continue
            return lval, (1 if kind == FIELD_EXISTS else _field_value(kind, bit, tid, bf, target))
        return lval, (0 if kind == FIELD_EXISTS else None)
    raise LoadError(f"CO-RE: relocation kind {kind} ({KIND_NAMES[kind] if kind < 13 else '?'}) "
                    "is not supported")


def apply(prog, local: BTF, target: BTF) -> bytes:
    """prog.insns with every CO-RE relocation applied against `target` (e.g. btf.vmlinux())."""
    insns = bytearray(prog.insns)
    for r in prog.core_relos:
        lval, tval = resolve(local, target, r.type_id, r.access, r.kind)
        at = r.insn * 8
        if not 0 <= at < len(insns):
            raise LoadError(f"prog '{prog.name}': CO-RE relocation at instruction {r.insn} is out of range")
        op = insns[at]
        if tval is None:
            # As libbpf: make the instruction fail verification with a recognisable call,
            # unless a guard (bpf_core_field_exists) keeps it dead. Both halves of an lddw, or
            # the verifier reports its lone second half as "unknown opcode 00" even when dead.
            struct.pack_into("<BBhi", insns, at, 0x85, 0, 0, POISON)
            if op == 0x18 and at + 16 <= len(insns):
                struct.pack_into("<BBhi", insns, at + 8, 0x85, 0, 0, POISON)
            continue
        cls = op & 0x07
        _, _, off, imm = struct.unpack_from("<BBhi", insns, at)
        what = f"prog '{prog.name}': CO-RE {KIND_NAMES[r.kind]} relocation on instruction {r.insn}"
        if op == 0x18:  # lddw: 64-bit immediate
            struct.pack_into("<I", insns, at + 4, tval & 0xFFFFFFFF)
            struct.pack_into("<I", insns, at + 12, (tval >> 32) & 0xFFFFFFFF)
        elif cls in (0x04, 0x07) and not op & 0x08:  # ALU/ALU64 with an immediate
            if imm != _s32(lval):
                raise LoadError(f"{what}: immediate {imm} is not the local value {lval}")
            struct.pack_into("<i", insns, at + 4, _s32(tval))
        elif cls in (0x01, 0x02, 0x03) and r.kind == FIELD_BYTE_OFFSET:  # LDX/ST/STX offset
            if off != lval:
                raise LoadError(f"{what}: offset {off} is not the local value {lval}")
            struct.pack_into("<h", insns, at + 2, tval)
        else:
            raise LoadError(f"{what} (opcode {op:#04x}) cannot be patched")
    return bytes(insns)


def _s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


__all__ = ["apply", "resolve", "essential_name", "KIND_NAMES"]

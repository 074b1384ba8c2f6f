"""BTF parser, encoder, loader fix-ups and conversion to pybpfc.lang types.

Format facts from include/uapi/linux/btf.h (kernel) and Documentation/bpf/btf.rst.
"""
from __future__ import annotations

import struct

from ..errors import BTFError

BTF_MAGIC = 0xEB9F
HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
TYPE_HDR = struct.Struct("<III")  # name_off, info, size|type

(KIND_UNKN, KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD,
 KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR,
 KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64) = range(20)

KIND_NAMES = ["UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF",
              "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT",
              "DECL_TAG", "TYPE_TAG", "ENUM64"]

# BTF_INT_* encoding bits
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
# VAR linkage
VAR_STATIC, VAR_GLOBAL_ALLOCATED, VAR_GLOBAL_EXTERN = 0, 1, 2
FUNC_STATIC, FUNC_GLOBAL, FUNC_EXTERN = 0, 1, 2

# bytes following the 12-byte header: (fixed, per vlen item)
_EXTRA = {
    KIND_UNKN: (0, 0), KIND_INT: (4, 0), KIND_PTR: (0, 0), KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12), KIND_UNION: (0, 12), KIND_ENUM: (0, 8), KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0), KIND_VOLATILE: (0, 0), KIND_CONST: (0, 0), KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
    KIND_FLOAT: (0, 0), KIND_DECL_TAG: (4, 0), KIND_TYPE_TAG: (0, 0), KIND_ENUM64: (0, 12),
}
_EXTRA_LIST = [_EXTRA[k] for k in range(20)]
# kinds whose third header word is a size (the rest: a type id)
_SIZED = {KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_DATASEC, KIND_FLOAT, KIND_ENUM64}
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class Member:
    """A struct/union member, an enum value, a func_proto param or a DATASEC entry."""

    __slots__ = ("name", "name_off", "type", "offset", "bitfield_size", "value", "size")

    def __init__(self, name="", name_off=0, type=0, offset=0, bitfield_size=0, value=0, size=0):
        self.name, self.name_off, self.type = name, name_off, type
        self.offset, self.bitfield_size, self.value, self.size = offset, bitfield_size, value, size

    def __repr__(self):
        return f"Member({self.name!r}, type={self.type}, offset={self.offset}, size={self.size}, value={self.value})"


class BTFType:
    """One decoded type record. Fields not meaningful for a kind stay 0/empty.

    size: INT/STRUCT/UNION/ENUM/ENUM64/DATASEC/FLOAT byte size.
    type: referenced type for PTR/TYPEDEF/CV/FUNC/VAR/DECL_TAG/TYPE_TAG, return type for
      FUNC_PROTO, element type for ARRAY.
    members: STRUCT/UNION members (offset in bits), ENUM values, FUNC_PROTO params,
      DATASEC entries (offset, size in bytes).
    """

    __slots__ = ("id", "kind", "name", "name_off", "kind_flag", "vlen", "size", "type",
                 "encoding", "bits_offset", "nr_bits", "index_type", "nelems", "members",
                 "linkage", "component_idx")

    def __init__(self, id=0, kind=KIND_UNKN, name="", name_off=0, kind_flag=0, vlen=0, size=0,
                 type=0):
        self.id, self.kind, self.name, self.name_off = id, kind, name, name_off
        self.kind_flag, self.vlen, self.size, self.type = kind_flag, vlen, size, type
        self.encoding = self.bits_offset = self.nr_bits = 0
        self.index_type = self.nelems = 0
        self.members: list = []
        self.linkage = 0
        self.component_idx = -1

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def __repr__(self):
        return f"<BTF [{self.id}] {self.kind_name} {self.name!r}>"

    def encode(self) -> bytes:
        k = self.kind
        vlen = len(self.members) if k in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FUNC_PROTO,
                                          KIND_DATASEC, KIND_ENUM64) else self.vlen
        info = (vlen & 0xFFFF) | (k << 24) | ((1 << 31) if self.kind_flag else 0)
        third = self.size if k in _SIZED else 0 if k == KIND_ARRAY else self.type
        out = [TYPE_HDR.pack(self.name_off, info, third)]
        if k == KIND_INT:
            out.append(struct.pack("<I", (self.encoding << 24) | (self.bits_offset << 16) | self.nr_bits))
        elif k == KIND_ARRAY:
            out.append(struct.pack("<III", self.type, self.index_type, self.nelems))
        elif k in (KIND_STRUCT, KIND_UNION):
            for m in self.members:
                off = (m.bitfield_size << 24 | m.offset) if self.kind_flag else m.offset
                out.append(struct.pack("<III", m.name_off, m.type, off))
        elif k == KIND_ENUM:
            for m in self.members:
                out.append(struct.pack("<Ii", m.name_off, _s32(m.value)))
        elif k == KIND_ENUM64:
            for m in self.members:
                v = m.value & 0xFFFFFFFFFFFFFFFF
                out.append(struct.pack("<III", m.name_off, v & 0xFFFFFFFF, v >> 32))
        elif k == KIND_FUNC_PROTO:
            for m in self.members:
                out.append(struct.pack("<II", m.name_off, m.type))
        elif k == KIND_VAR:
            out.append(struct.pack("<I", self.linkage))
        elif k == KIND_DATASEC:
            for m in self.members:
                out.append(struct.pack("<III", m.type, m.offset, m.size))
        elif k == KIND_DECL_TAG:
            out.append(struct.pack("<i", self.component_idx))
        return b"".join(out)


def _s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


VOID = BTFType(0, KIND_UNKN, "void")
_STRUCTS: dict = {}
MAX_DEPTH = 64  # real types nest a few levels; deeper means a reference loop


class BTF:
    """Parsed BTF. Types are numbered from 1 (0 is void); decoded on first access."""

    def __init__(self, raw: bytes, source: str = "BTF"):
        self.source = source
        raw = bytes(raw)
        if len(raw) < HDR.size:
            raise BTFError(f"{source}: truncated BTF header ({len(raw)} bytes)")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HDR.unpack_from(raw)
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BTFError(f"{source}: big-endian BTF is not supported")
            raise BTFError(f"{source}: bad BTF magic {magic:#x}")
        if version != 1:
            raise BTFError(f"{source}: unsupported BTF version {version}")
        if hdr_len < HDR.size or hdr_len > len(raw):
            raise BTFError(f"{source}: bad BTF header length {hdr_len}")
        end = len(raw) - hdr_len
        if type_off + type_len > end or str_off + str_len > end or type_off % 4:
            raise BTFError(f"{source}: BTF type/string sections ({type_off}+{type_len}, "
                           f"{str_off}+{str_len}) exceed the {end} bytes after the header")
        self.flags = flags
        self._types_raw = raw[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = bytearray(raw[hdr_len + str_off: hdr_len + str_off + str_len])
        if self.strings and self.strings[-1] != 0:
            raise BTFError(f"{source}: BTF string section is not NUL-terminated")
        self._orig_raw = raw
        self._offsets = self._scan()
        self._cache: dict = {}
        self._extra: list = []          # types added by add_type()
        self._dirty = False
        self._by_name = None
        self._tags = None
        self._lang: dict = {}
        self._str_cache: dict = {}

    def __eq__(self, other):
        return isinstance(other, BTF) and self.raw == other.raw

    __hash__ = None

    def __repr__(self):
        return f"<BTF {self.source}: {len(self) - 1} types>"

    # ---- parsing ----------------------------------------------------------------------
    def _scan(self):
        data, n = self._types_raw, len(self._types_raw)
        offs, off = [], 0
        unpack, extra = TYPE_HDR.unpack_from, _EXTRA_LIST
        append = offs.append
        while off < n:
            if off + 12 > n:
                raise BTFError(f"{self.source}: truncated type record [{len(offs) + 1}]")
            _, info, _ = unpack(data, off)
            kind = (info >> 24) & 0x1F
            if kind >= 20:
                raise BTFError(f"{self.source}: type [{len(offs) + 1}] has unknown kind {kind}")
            fixed, per = extra[kind]
            append(off)
            off += 12 + fixed + per * (info & 0xFFFF)
        if off != n:
            raise BTFError(f"{self.source}: truncated type record [{len(offs)}]")
        return offs

    def str_at(self, off: int) -> str:
        s = self._str_cache.get(off)
        if s is not None:
            return s
        if off < 0 or off >= len(self.strings) and off != 0:
            raise BTFError(f"{self.source}: string offset {off} outside the string section "
                           f"({len(self.strings)} bytes)")
        end = self.strings.find(b"\0", off)
        if end < 0:
            end = len(self.strings)
        s = self.strings[off:end].decode("utf-8", "replace")
        self._str_cache[off] = s
        return s

    def add_string(self, s: str) -> int:
        """Offset of `s` in the string section, appending it if absent."""
        b = s.encode() + b"\0"
        if s == "":
            return 0
        i = self.strings.find(b"\0" + b)
        if i >= 0:
            return i + 1
        off = len(self.strings)
        self.strings += b
        self._dirty = True
        return off

    def __len__(self):
        """Number of type ids including void (ids are 0 .. len-1)."""
        return len(self._offsets) + len(self._extra) + 1

    def __iter__(self):
        for i in range(1, len(self)):
            yield self[i]

    def __getitem__(self, tid: int) -> BTFType:
        if tid == 0:
            return VOID
        t = self._cache.get(tid)
        if t is not None:
            return t
        if not isinstance(tid, int) or tid < 0 or tid >= len(self):
            raise BTFError(f"{self.source}: type id {tid} out of range (0..{len(self) - 1})")
        if tid > len(self._offsets):
            return self._extra[tid - len(self._offsets) - 1]
        t = self._decode(tid)
        self._cache[tid] = t
        return t

    def _decode(self, tid: int) -> BTFType:
        data, off = self._types_raw, self._offsets[tid - 1]
        name_off, info, third = TYPE_HDR.unpack_from(data, off)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        t = BTFType(tid, kind, self.str_at(name_off), name_off, kflag, vlen)
        if kind in _SIZED:
            t.size = third
        else:
            t.type = third
        p = off + 12
        if kind == KIND_INT:
            (v,) = struct.unpack_from("<I", data, p)
            t.encoding, t.bits_offset, t.nr_bits = (v >> 24) & 0xF, (v >> 16) & 0xFF, v & 0xFF
        elif kind == KIND_ARRAY:
            t.type, t.index_type, t.nelems = struct.unpack_from("<III", data, p)
        elif kind in (KIND_STRUCT, KIND_UNION):
            for i in range(vlen):
                mn, mt, mo = struct.unpack_from("<III", data, p + 12 * i)
                bf = 0
                if kflag:
                    bf, mo = mo >> 24, mo & 0xFFFFFF
                t.members.append(Member(self.str_at(mn), mn, mt, mo, bf))
        elif kind == KIND_ENUM:
            for i in range(vlen):
                mn, v = struct.unpack_from("<Ii" if kflag else "<II", data, p + 8 * i)
                t.members.append(Member(self.str_at(mn), mn, value=v))
        elif kind == KIND_ENUM64:
            for i in range(vlen):
                mn, lo, hi = struct.unpack_from("<III", data, p + 12 * i)
                v = hi << 32 | lo
                if kflag and v >> 63:
                    v -= 1 << 64
                t.members.append(Member(self.str_at(mn), mn, value=v))
        elif kind == KIND_FUNC_PROTO:
            for i in range(vlen):
                mn, mt = struct.unpack_from("<II", data, p + 8 * i)
                t.members.append(Member(self.str_at(mn), mn, mt))
        elif kind == KIND_VAR:
            (t.linkage,) = struct.unpack_from("<I", data, p)
        elif kind == KIND_DATASEC:
            for i in range(vlen):
                vt, vo, vs = struct.unpack_from("<III", data, p + 12 * i)
                t.members.append(Member(type=vt, offset=vo, size=vs))
        elif kind == KIND_DECL_TAG:
            (t.component_idx,) = struct.unpack_from("<i", data, p)
        elif kind == KIND_FUNC:
            t.linkage = vlen
        return t

    # ---- lookup -----------------------------------------------------------------------
    def _name_index(self):
        if self._by_name is None:
            idx: dict = {}
            data, unpack = self._types_raw, TYPE_HDR.unpack_from
            for i, off in enumerate(self._offsets, 1):
                no = unpack(data, off)[0]
                if no:
                    idx.setdefault(no, []).append(i)
            by_name: dict = {}
            for no, ids in idx.items():
                by_name.setdefault(self.str_at(no), []).extend(ids)
            for t in self._extra:
                if t.name:
                    by_name.setdefault(t.name, []).append(t.id)
            self._by_name = by_name
        return self._by_name

    def find_all(self, name: str, kind: int | None = None) -> list:
        ids = self._name_index().get(name, [])
        return [self[i] for i in ids if kind is None or self[i].kind == kind]

    def find(self, name: str, kind: int | None = None) -> BTFType | None:
        """The first type named `name` (of `kind` if given); None if absent."""
        r = self.find_all(name, kind)
        return r[0] if r else None

    def resolve(self, tid: int) -> BTFType:
        """Skip typedefs, cv-qualifiers and type tags."""
        seen = 0
        t = self[tid]
        while t.kind in _MODIFIERS:
            t = self[t.type]
            seen += 1
            if seen > MAX_DEPTH:
                raise BTFError(f"{self.source}: type [{tid}] has a modifier loop")
        return t

    def size_of(self, tid: int, _depth: int = 0) -> int:
        if _depth > MAX_DEPTH:
            raise BTFError(f"{self.source}: type [{tid}] nests deeper than {MAX_DEPTH} levels (a loop?)")
        t = self.resolve(tid)
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_DATASEC):
            return t.size
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            return t.nelems * self.size_of(t.type, _depth + 1)
        if t.kind == KIND_VAR:
            return self.size_of(t.type, _depth + 1)
        raise BTFError(f"{self.source}: type [{tid}] ({t.kind_name}) has no size")

    def decl_tags(self, tid: int, component_idx: int = -1) -> list:
        """The DECL_TAG strings attached to type `tid` (to one member/param if component_idx >= 0)."""
        if self._tags is None:
            tags: dict = {}
            for i, off in enumerate(self._offsets, 1):
                info = TYPE_HDR.unpack_from(self._types_raw, off)[1]
                if (info >> 24) & 0x1F == KIND_DECL_TAG:
                    t = self[i]
                    tags.setdefault((t.type, t.component_idx), []).append(t.name)
            self._tags = tags
        return list(self._tags.get((tid, component_idx), []))

    def type_name(self, tid: int, _depth: int = 0) -> str:
        """A C-like spelling for messages."""
        if _depth > MAX_DEPTH:
            return "..."
        t = self[tid]
        k = t.kind
        if k == KIND_UNKN:
            return "void"
        if k == KIND_PTR:
            return self.type_name(t.type, _depth + 1) + " *"
        if k == KIND_ARRAY:
            return f"{self.type_name(t.type, _depth + 1)}[{t.nelems}]"
        if k in (KIND_CONST, KIND_VOLATILE, KIND_RESTRICT):
            return f"{KIND_NAMES[k].lower()} {self.type_name(t.type, _depth + 1)}"
        if k in (KIND_STRUCT, KIND_UNION):
            return f"{KIND_NAMES[k].lower()} {t.name or '(anon)'}"
        if k in (KIND_ENUM, KIND_ENUM64):
            return f"enum {t.name or '(anon)'}"
        return t.name or f"({t.kind_name.lower()})"

    # ---- conversion to pybpfc.lang --------------------------------------------------------
    def to_lang_type(self, tid: int):
        """The pybpfc.lang type for BTF type `tid`; None for void/functions/forward decls."""
        if tid in self._lang:
            return self._lang[tid]
        self._lang[tid] = None  # guards against (invalid) recursive value types
        r = self._to_lang(tid)
        self._lang[tid] = r
        return r

    def _to_lang(self, tid: int):
        from ..lang import types as L

        t = self[tid]
        k = t.kind
        if k in _MODIFIERS or k == KIND_VAR:
            return self.to_lang_type(t.type)
        if k == KIND_INT:
            if t.encoding & INT_BOOL and t.size == 1:
                return L.bool_
            return _int_of(t.size, bool(t.encoding & INT_SIGNED))
        if k in (KIND_ENUM, KIND_ENUM64):
            return _int_of(t.size, bool(t.kind_flag))
        if k == KIND_FLOAT:
            return _int_of(t.size, False)  # raw bits: pybpfc has no float type
        if k == KIND_PTR:
            return L.u64
        if k == KIND_ARRAY:
            et = self[t.type]
            while et.kind in (KIND_CONST, KIND_VOLATILE, KIND_TYPE_TAG):
                et = self[et.type]
            # Str[N] is spelled char[N]; other byte arrays (__u8[N], unsigned char[N]) stay lists.
            if et.kind == KIND_INT and et.size == 1 and et.name == "char":
                return L.Str[t.nelems]
            elem = self.to_lang_type(t.type)
            if elem is None:
                return None
            return L.Array[elem, t.nelems]
        if k in (KIND_STRUCT, KIND_UNION):
            return self._struct_to_lang(t)
        return None

    def _struct_to_lang(self, t: BTFType):
        from ..lang import types as L

        fields, offsets = [], []

        def add(members, base, is_union, depth=0):
            if depth > MAX_DEPTH:
                raise BTFError(f"{self.source}: struct [{t.id}] nests anonymous members deeper "
                               f"than {MAX_DEPTH} levels (a loop?)")
            if is_union and members:
                # pybpfc Structs cannot overlap fields: keep the (first) largest union member.
                sized = [(self._member_size(m), i) for i, m in enumerate(members)]
                best = max(sized, key=lambda x: (x[0], -x[1]))[1]
                members = [members[best]]
            for m in members:
                if m.bitfield_size or m.offset % 8:
                    continue  # bitfields are not expressible as pybpfc fields
                off = base + m.offset // 8
                if not m.name:
                    inner = self.resolve(m.type)
                    if inner.kind in (KIND_STRUCT, KIND_UNION):
                        add(inner.members, off, inner.kind == KIND_UNION, depth + 1)
                    continue
                lt = self.to_lang_type(m.type)
                if lt is None:
                    continue
                fields.append((_py_name(m.name, fields), lt))
                offsets.append(off)

        add(t.members, 0, t.kind == KIND_UNION)
        name = t.name if t.name and t.name.isidentifier() else f"anon_{t.id}"
        # Same name and layout -> the same class, so two reads of an object give equal specs.
        key = (name, tuple(fields), tuple(offsets), t.size)
        cls = _STRUCTS.get(key)
        if cls is None:
            cls = _STRUCTS[key] = L.make_struct(name, fields, size=t.size, offsets=offsets or None)
        return cls

    def _member_size(self, m):
        try:
            return self.size_of(m.type)
        except BTFError:
            return 0

    def structs(self) -> dict:
        """Named structs as pybpfc Struct classes, keyed by name (first definition wins)."""
        out = {}
        for i, off in enumerate(self._offsets, 1):
            name_off, info, _ = TYPE_HDR.unpack_from(self._types_raw, off)
            if (info >> 24) & 0x1F == KIND_STRUCT and name_off:
                name = self.str_at(name_off)
                if name not in out:
                    out[name] = self.to_lang_type(i)
        return out

    # ---- writing ----------------------------------------------------------------------
    def add_type(self, t: BTFType) -> int:
        """Append a type (name given as string); returns its id."""
        t.id = len(self)
        t.name_off = self.add_string(t.name) if t.name else 0
        for m in t.members:
            if m.name and not m.name_off:
                m.name_off = self.add_string(m.name)
        self._extra.append(t)
        self._cache[t.id] = t
        self._dirty = True
        if self._by_name is not None and t.name:
            self._by_name.setdefault(t.name, []).append(t.id)
        return t.id

    def mark_dirty(self):
        self._dirty = True

    def encode(self) -> bytes:
        """The BTF bytes: header, types (with any edits), strings."""
        parts = []
        for i in range(1, len(self)):
            if i in self._cache or i > len(self._offsets):
                parts.append(self[i].encode())
            else:
                off = self._offsets[i - 1]
                nxt = self._offsets[i] if i < len(self._offsets) else len(self._types_raw)
                parts.append(self._types_raw[off:nxt])
        types = b"".join(parts)
        strs = bytes(self.strings)
        return HDR.pack(BTF_MAGIC, 1, 0, HDR.size, 0, len(types), len(types), len(strs)) + types + strs

    @property
    def raw(self) -> bytes:
        """Bytes to hand to BPF_BTF_LOAD (re-encoded when fix-ups changed anything)."""
        if not self._dirty:
            return self._orig_raw
        return self.encode()

    # ---- loader fix-ups ---------------------------------------------------------------
    def fixup_for_kernel(self, section_sizes: dict, symbol_offsets: dict):
        """Do what libbpf does to object BTF before BPF_BTF_LOAD.

        section_sizes: ELF section name -> size. symbol_offsets: (section, symbol) -> st_value.
        LLVM leaves DATASEC sizes (and some VAR offsets) 0; the kernel rejects those. Extern
        variables/functions (.ksyms, .kconfig) have no ELF section: they become allocated int-like
        VARs laid out back to back, as libbpf does, so the kernel accepts the DATASEC.
        """
        int_id = None
        for t in list(self):
            if t.kind != KIND_DATASEC:
                continue
            sec = t.name
            changed = False
            if sec in section_sizes:
                for m in t.members:
                    v = self[m.type]
                    if v.kind != KIND_VAR:
                        raise BTFError(f"{self.source}: DATASEC '{sec}' entry [{m.type}] is "
                                       f"{v.kind_name}, not VAR")
                    if v.linkage == VAR_GLOBAL_EXTERN:
                        continue
                    off = symbol_offsets.get((sec, v.name))
                    if off is not None and off != m.offset:
                        m.offset, changed = off, True
                if t.size != section_sizes[sec]:
                    t.size, changed = section_sizes[sec], True
            else:
                # No ELF section: extern .kconfig/.ksyms variables. Like libbpf, .ksyms entries
                # become int VARs (kfuncs included: a DATASEC may hold only VARs) and all become
                # allocated VARs laid out back to back.
                ksyms = sec == ".ksyms"
                off = 0
                for m in t.members:
                    v = self[m.type]
                    if v.kind == KIND_FUNC or (ksyms and v.kind == KIND_VAR):
                        if int_id is None:
                            int_id = self._int_type_id()
                        v.kind, v.type, v.linkage, v.vlen = KIND_VAR, int_id, VAR_GLOBAL_ALLOCATED, 0
                    elif v.kind == KIND_VAR and v.linkage == VAR_GLOBAL_EXTERN:
                        v.linkage = VAR_GLOBAL_ALLOCATED
                    else:
                        continue
                    size = self.size_of(v.type)
                    align = min(size, 8) or 1
                    off = (off + align - 1) // align * align
                    m.offset, m.size = off, size
                    off += size
                    changed = True
                if changed:
                    t.size = max(off, 1)
            if changed:
                t.members.sort(key=lambda m: m.offset)
                self._dirty = True
        return self

    def _int_type_id(self) -> int:
        for t in self.find_all("int", KIND_INT):
            if t.size == 4:
                return t.id
        it = BTFType(kind=KIND_INT, name="int", size=4)
        it.encoding, it.nr_bits = INT_SIGNED, 32
        return self.add_type(it)


def _int_of(size: int, signed: bool):
    from ..lang import types as L

    table = {1: (L.u8, L.i8), 2: (L.u16, L.i16), 4: (L.u32, L.i32), 8: (L.u64, L.i64)}
    if size in table:
        return table[size][signed]
    if size and size % 8 == 0:
        return L.Array[L.u64, size // 8]  # __int128 and wider: raw 64-bit limbs
    return L.Array[L.u8, size] if size else None


def _py_name(name: str, fields) -> str:
    n = name if name.isidentifier() else "f_" + "".join(c if c.isalnum() else "_" for c in name)
    taken = {f[0] for f in fields}
    base, i = n, 1
    while n in taken:
        n, i = f"{base}_{i}", i + 1
    return n


# ---- .BTF.ext ------------------------------------------------------------------------------
EXT_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, func_off, func_len, line_off, line_len


def parse_btf_ext(raw: bytes, btf: BTF, source: str = ".BTF.ext") -> dict:
    """Decode .BTF.ext func_info and line_info, grouped by ELF section name.

    Returns {"func_info": {sec: [(byte_off, type_id)]},
             "line_info": {sec: [(byte_off, file_name_off, line_off, line_col)]},
             "core_relo": {sec: [(byte_off, type_id, access_str_off, kind)]}}.
    Offsets stay in bytes relative to the section, as LLVM writes them.
    """
    raw = bytes(raw)
    if len(raw) < EXT_HDR.size:
        raise BTFError(f"{source}: truncated header ({len(raw)} bytes)")
    magic, version, _flags, hdr_len, f_off, f_len, l_off, l_len = EXT_HDR.unpack_from(raw)
    if magic != BTF_MAGIC:
        raise BTFError(f"{source}: bad magic {magic:#x}")
    if version != 1:
        raise BTFError(f"{source}: unsupported version {version}")
    if hdr_len < EXT_HDR.size or hdr_len > len(raw):
        raise BTFError(f"{source}: bad header length {hdr_len}")
    body = raw[hdr_len:]

    def section(off, length, min_rec, fmt, what):
        out: dict = {}
        if length == 0:
            return out
        if off + length > len(body) or length < 4:
            raise BTFError(f"{source}: {what} ({off}+{length}) exceeds the section")
        data = body[off: off + length]
        (rec_size,) = struct.unpack_from("<I", data)
        if rec_size < min_rec:
            raise BTFError(f"{source}: {what} record size {rec_size} < {min_rec}")
        p = 4
        while p < len(data):
            if p + 8 > len(data):
                raise BTFError(f"{source}: truncated {what} section header")
            sec_off, n = struct.unpack_from("<II", data, p)
            p += 8
            if n == 0 or p + n * rec_size > len(data):
                raise BTFError(f"{source}: {what} for section at string {sec_off}: "
                               f"{n} records exceed the data")
            sec = btf.str_at(sec_off)
            recs = out.setdefault(sec, [])
            for i in range(n):
                recs.append(struct.unpack_from(fmt, data, p + i * rec_size))
            p += n * rec_size
        return out

    out = {
        "func_info": section(f_off, f_len, 8, "<II", "func_info"),
        "line_info": section(l_off, l_len, 16, "<IIII", "line_info"),
        "core_relo": {},
    }
    if hdr_len >= EXT_HDR.size + 8:
        c_off, c_len = struct.unpack_from("<II", raw, EXT_HDR.size)
        out["core_relo"] = section(c_off, c_len, 16, "<IIII", "core_relo")
    return out

"""Read a libbpf-style BPF ELF object (clang's or pybpfc's) into a CollectionSpec.

Pure: no syscalls beyond reading the file. Semantics follow libbpf where it defines them:
section names -> program types (sections.py), BTF-defined maps in ".maps", global data
sections as one-entry array maps, subprograms appended to each program that calls them.
"""
from __future__ import annotations

import io
import os
import struct
from typing import Optional

from elftools.common.exceptions import ELFError as _PyELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from .. import uapi as U
from ..btf import BTF, parse_btf_ext
from ..btf.btf import (
    KIND_ARRAY, KIND_DATASEC, KIND_FUNC, KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_UNKN, KIND_VAR,
)
from ..errors import BTFError, ELFError
from .sections import parse_section
from .spec import CollectionSpec, CoreRelo, LineInfo, MapSpec, ProgramSpec, Relocation

EM_BPF = 247
SHF_EXECINSTR = 0x4
INSN = struct.Struct("<BBhi")     # code, regs (dst low nibble, src high nibble), off, imm
MAX_NOBITS = 1 << 26              # far above the kernel's largest map value
LDDW = 0x18                       # BPF_LD | BPF_IMM | BPF_DW
CALL = 0x85                       # BPF_JMP | BPF_CALL
R_BPF_64_64, R_BPF_64_32 = 1, 10  # llvm/BinaryFormat/ELFRelocs/BPF.def

# libbpf's "maps" section struct bpf_map_def: type, key_size, value_size, max_entries, map_flags
LEGACY_MAP_DEF = struct.Struct("<IIIII")


def _is_data_section(name: str) -> bool:
    return name in (".rodata", ".data", ".bss") or name.startswith((".rodata.", ".data."))


class _Func:
    """A function symbol inside an executable section."""

    __slots__ = ("name", "section", "start", "end", "is_global")

    def __init__(self, name, section, start, end, is_global):
        self.name, self.section, self.start, self.end, self.is_global = name, section, start, end, is_global


def read_elf(obj, source: str = "") -> CollectionSpec:
    """Read a BPF ELF object (path, bytes or binary file) into a CollectionSpec."""
    if isinstance(obj, (str, os.PathLike)):
        source = source or str(obj)
        try:
            with open(obj, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ELFError(f"{source}: {e.strerror or e}") from None
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
    elif hasattr(obj, "read"):
        data = obj.read()
        source = source or getattr(obj, "name", "") or ""
    else:
        raise ELFError(f"read_elf: expected a path, bytes or a file, not {type(obj).__name__}")
    source = source or "<bytes>"
    try:
        return _Reader(data, source).read()
    except (ELFError, BTFError):
        raise
    except (_PyELFError, struct.error) as e:  # pyelftools' own reports of malformed input
        raise ELFError(f"{source}: malformed ELF object: {e}") from None
    except (OverflowError, ValueError, IndexError, KeyError, UnicodeDecodeError, AssertionError) as e:
        if not _raised_in_pyelftools(e):
            raise
        # pyelftools trusts header fields (offsets, sizes) and fails in generic ways on garbage.
        raise ELFError(f"{source}: malformed ELF object: {type(e).__name__}: {e}") from None


def _raised_in_pyelftools(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}elftools{os.sep}" in tb.tb_frame.f_code.co_filename


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data = data
        self.src = source
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise ELFError(f"{source}: not an ELF file")
        self.elf = ELFFile(io.BytesIO(data))
        if self.elf.elfclass != 64 or not self.elf.little_endian:
            raise ELFError(f"{source}: expected a 64-bit little-endian BPF object")
        if self.elf["e_machine"] not in ("EM_BPF", EM_BPF):
            raise ELFError(f"{source}: not a BPF object (machine {self.elf['e_machine']})")
        self.sections = {}
        self.by_index = {}
        for i, s in enumerate(self.elf.iter_sections()):
            self.by_index[i] = s
            self.sections.setdefault(s.name, s)
        self.symbols = []
        symtab = self.elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise ELFError(f"{source}: no .symtab (was the object stripped?)")
        self.symtab = symtab
        self.symbols = list(symtab.iter_symbols())
        self.btf: Optional[BTF] = None
        self.ext = None

    def err(self, msg):
        return ELFError(f"{self.src}: {msg}")

    def section_data(self, s) -> bytes:
        if s["sh_type"] == "SHT_NOBITS":
            if s["sh_size"] > MAX_NOBITS:
                raise self.err(f"section '{s.name}': size {s['sh_size']} is larger than any BPF "
                               f"map value ({MAX_NOBITS} bytes)")
            return bytes(s["sh_size"])
        off, size = s["sh_offset"], s["sh_size"]
        if off + size > len(self.data):
            raise self.err(f"section '{s.name}' ({off}+{size}) extends past the end of the file")
        return self.data[off: off + size]

    def sym_section(self, sym):
        shndx = sym["st_shndx"]
        if not isinstance(shndx, int):
            return None
        return self.by_index.get(shndx)

    # ------------------------------------------------------------------------------------
    def read(self) -> CollectionSpec:
        spec = CollectionSpec(source=self.src)
        lic = self.sections.get("license")
        if lic is not None:
            spec.license = self.section_data(lic).split(b"\0", 1)[0].decode("ascii", "replace")
        ver = self.sections.get("version")
        if ver is not None:
            d = self.section_data(ver)
            if len(d) != 4:
                raise self.err(f"section 'version': expected 4 bytes, got {len(d)}")
            spec.kern_version = struct.unpack("<I", d)[0]
        for name in self.sections:
            # Sections whose meaning a loader must act on but this reader does not model: refuse
            # rather than hand over a collection that silently lacks them.
            if name.startswith((".struct_ops", ".addr_space.")):
                raise self.err(f"section '{name}': "
                               f"{'struct_ops maps' if name.startswith('.struct_ops') else 'BPF arena data'}"
                               " are not supported")
        self._read_btf()
        spec.btf = self.btf
        self._read_externs(spec)
        self._read_maps(spec)
        self._read_data_sections(spec)
        self._read_programs(spec)
        if self.btf is not None:
            # map definitions (`struct { __uint(type, ...); ... } name SEC(".maps")`) are not
            # value types
            defs = {self.btf.resolve(v.type).name for v in self._map_vars().values()}
            spec.types = {n: t for n, t in self.btf.structs().items() if n not in defs}
        return spec

    def _read_externs(self, spec: CollectionSpec):
        """__kconfig/__ksym externs (from the .kconfig/.ksyms DATASECs) and the BTF fix-up.

        self.externs: name -> (kind, offset in .kconfig, weak) with kind "kconfig", "ksym"
        (typed kernel variable: BTF id), "ksym_addr" (typeless: kallsyms address) or "kfunc".
        """
        self.externs = {}
        if self.btf is None:
            return
        weak = {sym.name for sym in self.symbols
                if sym["st_shndx"] == "SHN_UNDEF" and sym["st_info"]["bind"] == "STB_WEAK"}
        kinds = {}
        for ds in self.btf.find_all(".ksyms", KIND_DATASEC):
            for m in ds.members:
                v = self.btf[m.type]
                if v.kind == KIND_FUNC:
                    kinds[v.name] = "kfunc"
                elif v.kind == KIND_VAR:
                    typed = self.btf.resolve(v.type).kind != KIND_UNKN
                    kinds[v.name] = "ksym" if typed else "ksym_addr"
        # Fix-up now: it lays out .kconfig, whose offsets the relocations below need.
        secs = {s.name: s["sh_size"] for s in self.by_index.values() if s.name}
        offs = {}
        for sym in self.symbols:
            s = self.sym_section(sym)
            if s is not None and sym.name and sym["st_info"]["type"] in ("STT_OBJECT", "STT_NOTYPE"):
                offs[(s.name, sym.name)] = sym["st_value"]
        self.btf.fixup_for_kernel(secs, offs)
        for name, kind in kinds.items():
            self.externs[name] = (kind, 0, name in weak)
        kc = self.btf.find(".kconfig", KIND_DATASEC)
        if kc is not None and kc.members:
            variables = {}
            for m in kc.members:
                v = self.btf[m.type]
                self.externs[v.name] = ("kconfig", m.offset, v.name in weak)
                variables[v.name] = (m.offset, m.size, self.btf.to_lang_type(v.type))
            w = sorted(n for n in variables if n in weak)
            # The loader fills `data` from the running kernel's config (pybpfc.btf.kernel).
            spec.maps[".kconfig"] = MapSpec(
                ".kconfig", U.BPF_MAP_TYPE_ARRAY, 4, kc.size, 1, flags=U.BPF_F_RDONLY_PROG,
                data=bytes(kc.size), readonly=True, variables=variables, section=".kconfig",
                tags={"kconfig": "1", **({"weak": ",".join(w)} if w else {})})

    def _read_btf(self):
        s = self.sections.get(".BTF")
        if s is None:
            return
        self.btf = BTF(self.section_data(s), source=f"{self.src}: .BTF")
        e = self.sections.get(".BTF.ext")
        if e is not None:
            self.ext = parse_btf_ext(self.section_data(e), self.btf, source=f"{self.src}: .BTF.ext")

    # ---- maps ---------------------------------------------------------------------------
    def _map_vars(self) -> dict:
        """BTF VARs of the .maps DATASEC by name."""
        out = {}
        if self.btf is None:
            return out
        for t in self.btf.find_all(".maps", KIND_DATASEC):
            for m in t.members:
                v = self.btf[m.type]
                if v.kind == KIND_VAR:
                    out[v.name] = v
        return out

    def _read_maps(self, spec: CollectionSpec):
        sec = self.sections.get(".maps")
        if sec is not None:
            shndx = self._index_of(sec)
            if self.btf is None:
                raise self.err("section '.maps' needs BTF (compile with -g)")
            vars_ = self._map_vars()
            relocs = self._relocs_for(sec)
            data = self.section_data(sec)
            for sym in self.symbols:
                if sym["st_shndx"] != shndx or sym["st_info"]["type"] != "STT_OBJECT":
                    continue
                name = sym.name
                v = vars_.get(name)
                if v is None:
                    raise ELFError(f"map '{name}': no BTF variable in DATASEC '.maps'")
                start, size = sym["st_value"], sym["st_size"]
                m = self._btf_map(name, v.type, start, size, relocs, spec, data)
                m.section = ".maps"
                for tag in self.btf.decl_tags(v.id):
                    self._apply_tag(m, tag)
                spec.maps[name] = m
        legacy = self.sections.get("maps")
        if legacy is not None:
            shndx = self._index_of(legacy)
            data = self.section_data(legacy)
            for sym in self.symbols:
                if sym["st_shndx"] != shndx or sym["st_info"]["type"] not in ("STT_OBJECT", "STT_NOTYPE") \
                        or not sym.name:
                    continue
                off = sym["st_value"]
                if off + LEGACY_MAP_DEF.size > len(data):
                    raise ELFError(f"map '{sym.name}': legacy map definition at {off} is truncated")
                t, ks, vs, me, fl = LEGACY_MAP_DEF.unpack_from(data, off)
                spec.maps[sym.name] = MapSpec(sym.name, t, ks, vs, me, flags=fl, section="maps")

    def _index_of(self, sec):
        for i, s in self.by_index.items():
            if s is sec:
                return i
        return -1

    def _apply_tag(self, m: MapSpec, tag: str):
        if not tag.startswith("pybpfc:") or "=" not in tag:
            return
        k, val = tag[len("pybpfc:"):].split("=", 1)
        if k == "event":
            # a struct name, or a typedef of a (possibly anonymous) struct
            found = [self.btf.resolve(t.id) for t in self.btf.find_all(val)]
            found = [t for t in found if t.kind in (KIND_STRUCT, KIND_UNION)]
            if not found:
                raise ELFError(f"map '{m.name}': event type '{val}' named by a pybpfc:event tag "
                               "is not a struct in the object's BTF")
            m.event_type = self.btf.to_lang_type(found[0].id)
        else:
            m.tags[k] = val

    def _int_member(self, mapname, member) -> int:
        """__uint(name, N) is `int (*name)[N]`: N is the array's element count."""
        p = self.btf.resolve(member.type)
        if p.kind != KIND_PTR:
            raise ELFError(f"map '{mapname}': attribute '{member.name}' is not a pointer "
                           f"(a __uint() field), it is {self.btf.type_name(member.type)}")
        a = self.btf.resolve(p.type)
        if a.kind != KIND_ARRAY:
            raise ELFError(f"map '{mapname}': attribute '{member.name}' is not a __uint() "
                           f"array pointer ({self.btf.type_name(member.type)})")
        return a.nelems

    def _btf_map(self, name, tid, start, size, relocs, spec, data, inner=False) -> MapSpec:
        btf = self.btf
        st = btf.resolve(tid)
        if st.kind != KIND_STRUCT:
            raise ELFError(f"map '{name}': definition must be a struct, got {btf.type_name(tid)}")
        m = MapSpec(name, 0, 0, 0, 0)
        key_tid = value_tid = 0
        values_member = None
        for mem in st.members:
            n = mem.name
            if n == "type":
                m.type = self._int_member(name, mem)
            elif n == "max_entries":
                m.max_entries = self._int_member(name, mem)
            elif n == "map_flags":
                m.flags = self._int_member(name, mem)
            elif n == "numa_node":
                m.numa_node = self._int_member(name, mem)
            elif n == "map_extra":
                m.map_extra = self._int_member(name, mem)
            elif n == "pinning":
                m.pinning = self._int_member(name, mem)
                if m.pinning not in (0, 1):
                    raise ELFError(f"map '{name}': unsupported pinning {m.pinning} "
                                   "(0 none, 1 LIBBPF_PIN_BY_NAME)")
            elif n == "key_size":
                m.key_size = self._int_member(name, mem)
            elif n == "value_size":
                m.value_size = self._int_member(name, mem)
            elif n == "key":
                p = btf.resolve(mem.type)
                if p.kind != KIND_PTR:
                    raise ELFError(f"map '{name}': 'key' must be a __type() pointer")
                key_tid = p.type
            elif n == "value":
                p = btf.resolve(mem.type)
                if p.kind != KIND_PTR:
                    raise ELFError(f"map '{name}': 'value' must be a __type() pointer")
                value_tid = p.type
            elif n == "values":
                values_member = mem
            else:
                raise ELFError(f"map '{name}': unknown map attribute '{n}'")
        for which, t in (("key", key_tid), ("value", value_tid)):
            if not t:
                continue
            try:
                sz = btf.size_of(t)
            except BTFError as e:
                raise ELFError(f"map '{name}': {which} type {btf.type_name(t)} has no size ({e})") from None
            declared = m.key_size if which == "key" else m.value_size
            if declared and declared != sz:
                raise ELFError(f"map '{name}': {which}_size {declared} conflicts with "
                               f"{which} type {btf.type_name(t)} of size {sz}")
            lt = btf.to_lang_type(t)
            if which == "key":
                m.key_size, m.btf_key_type_id, m.key_type = sz, t, lt
            else:
                m.value_size, m.btf_value_type_id, m.value_type = sz, t, lt
        if values_member is not None:
            self._map_values(m, values_member, start, size, relocs, spec, data)
        if m.type in (U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS) \
                and not m.value_size:
            m.value_size = 4
        if m.type in (U.BPF_MAP_TYPE_PERF_EVENT_ARRAY,) and not m.key_size:
            m.key_size = m.value_size = 4
        if m.type == 0 and not inner:
            raise ELFError(f"map '{name}': no map type (missing __uint(type, ...))")
        return m

    def _map_values(self, m, mem, start, size, relocs, spec, data):
        """__array(values, ...): inner map definition and initial slots from .rel.maps."""
        btf = self.btf
        arr = btf.resolve(mem.type)
        if arr.kind != KIND_ARRAY:
            raise ELFError(f"map '{m.name}': 'values' must be an __array()")
        p = btf.resolve(arr.type)
        if p.kind != KIND_PTR:
            raise ELFError(f"map '{m.name}': 'values' elements must be pointers")
        target = btf.resolve(p.type)
        is_prog = m.type == U.BPF_MAP_TYPE_PROG_ARRAY
        if m.type in (U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS):
            if target.kind != KIND_STRUCT:
                raise ELFError(f"map '{m.name}': inner map definition must be a struct")
            m.inner_map = self._btf_map(m.name + ".inner", target.id, 0, 0, [], spec, data, inner=True)
        elif not is_prog:
            raise ELFError(f"map '{m.name}': 'values' is only valid for prog arrays and maps of maps")
        base = start + mem.offset // 8
        for off, sym, rtype in relocs:
            if not (start <= off < start + size):
                continue
            if off < base or (off - base) % 8:
                raise ELFError(f"map '{m.name}': relocation at offset {off - start} is not a 'values' slot")
            slot = (off - base) // 8
            if m.max_entries and slot >= m.max_entries:
                raise ELFError(f"map '{m.name}': initial value slot {slot} >= max_entries {m.max_entries}")
            tsec = self.sym_section(sym)
            if is_prog:
                if tsec is None or not tsec["sh_flags"] & SHF_EXECINSTR or sym["st_info"]["type"] != "STT_FUNC":
                    raise ELFError(f"map '{m.name}': slot {slot} refers to '{sym.name}', not a program")
            elif tsec is None or tsec.name != ".maps":
                raise ELFError(f"map '{m.name}': slot {slot} refers to '{sym.name}', not a map")
            m.contents.append((struct.pack("<I", slot), sym.name))

    def _relocs_for(self, sec):
        """[(offset, symbol, type)] of the relocation section applying to `sec`."""
        target = self._index_of(sec)
        out = []
        for s in self.by_index.values():
            if isinstance(s, RelocationSection) and s["sh_info"] == target:
                if s.is_RELA():
                    raise self.err(f"section '{s.name}': RELA relocations are not used by BPF objects")
                for r in s.iter_relocations():
                    si = r["r_info_sym"]
                    if si >= len(self.symbols):
                        raise self.err(f"section '{s.name}': relocation refers to symbol #{si}, "
                                       f"the symbol table has {len(self.symbols)}")
                    out.append((r["r_offset"], self.symbols[si], r["r_info_type"]))
        out.sort(key=lambda x: x[0])
        return out

    # ---- global data ------------------------------------------------------------------
    def _read_data_sections(self, spec: CollectionSpec):
        for idx, s in sorted(self.by_index.items()):
            name = s.name
            if not _is_data_section(name) or s["sh_flags"] & SHF_EXECINSTR:
                continue
            size = s["sh_size"]
            if size == 0:
                continue
            data = self.section_data(s)
            m = MapSpec(name, U.BPF_MAP_TYPE_ARRAY, 4, size, 1, data=bytes(data),
                        readonly=name.startswith(".rodata"), section=name)
            if m.readonly:
                m.flags = U.BPF_F_RDONLY_PROG
            m.variables = self._variables(name, idx, size)
            if name in spec.maps:
                raise ELFError(f"map '{name}': a map and a data section share this name")
            spec.maps[name] = m

    def _variables(self, secname, shndx, size) -> dict:
        out = {}
        syms = {}
        for sym in self.symbols:
            if sym["st_shndx"] == shndx and sym["st_info"]["type"] == "STT_OBJECT" and sym.name:
                syms[sym.name] = sym
        btf_vars = {}
        if self.btf is not None:
            for t in self.btf.find_all(secname, KIND_DATASEC):
                for mem in t.members:
                    v = self.btf[mem.type]
                    if v.kind == KIND_VAR:
                        btf_vars[v.name] = (v, mem)
        for name in sorted(set(syms) | set(btf_vars), key=lambda n: (syms[n]["st_value"] if n in syms
                                                                   else btf_vars[n][1].offset, n)):
            if name in syms:
                off, sz = syms[name]["st_value"], syms[name]["st_size"]
            else:
                off, sz = btf_vars[name][1].offset, btf_vars[name][1].size
            lt = None
            if name in btf_vars:
                lt = self.btf.to_lang_type(btf_vars[name][0].type)
                sz = sz or btf_vars[name][1].size
            if off + sz > size:
                raise ELFError(f"map '{secname}': variable '{name}' ({off}+{sz}) lies outside the "
                               f"{size}-byte section")
            out[name] = (off, sz, lt)
        return out

    # ---- programs -----------------------------------------------------------------------
    def _funcs(self):
        """Function symbols per executable section index, sorted by start."""
        funcs: dict = {}
        for sym in self.symbols:
            if sym["st_info"]["type"] != "STT_FUNC":
                continue
            sec = self.sym_section(sym)
            if sec is None:
                continue  # extern function (kfunc): relocated by the loader
            if not sec["sh_flags"] & SHF_EXECINSTR:
                raise self.err(f"function '{sym.name}' is in non-executable section '{sec.name}'")
            shndx = sym["st_shndx"]
            start, sz = sym["st_value"], sym["st_size"]
            if start % 8 or sz % 8 or start + sz > sec["sh_size"]:
                raise self.err(f"prog '{sym.name}': bad bounds {start}+{sz} in section '{sec.name}' "
                               f"of {sec['sh_size']} bytes")
            funcs.setdefault(shndx, []).append(
                _Func(sym.name, sec, start // 8, (start + sz) // 8, sym["st_info"]["bind"] != "STB_LOCAL"))
        for fl in funcs.values():
            fl.sort(key=lambda f: f.start)
        return funcs

    def _read_programs(self, spec: CollectionSpec):
        self.funcs = self._funcs()
        self.sec_insns = {}
        self.sec_relocs = {}
        for shndx, fl in sorted(self.funcs.items()):
            sec = self.by_index[shndx]
            if sec["sh_size"] % 8:
                raise self.err(f"section '{sec.name}': size {sec['sh_size']} is not a multiple of 8")
            self.sec_insns[shndx] = bytearray(self.section_data(sec))
            relocs = {}
            for off, sym, rt in self._relocs_for(sec):
                if rt not in (R_BPF_64_64, R_BPF_64_32) or off % 8 or off >= sec["sh_size"]:
                    raise self.err(f"section '{sec.name}': unsupported relocation (type {rt}) against "
                                   f"'{sym.name}' at offset {off}")
                relocs[off // 8] = (off, sym, rt)
            self.sec_relocs[shndx] = relocs
        for shndx, fl in sorted(self.funcs.items()):
            sec = self.by_index[shndx]
            if sec.name == ".text":
                continue
            info = parse_section(sec.name)
            if info is None and sec.name.startswith("?") and parse_section(sec.name[1:]):
                raise ELFError(f"prog '{fl[0].name}': section '{sec.name}': programs that are not "
                               "loaded by default ('?' prefix) are not supported")
            if info is None:
                raise ELFError(f"prog '{fl[0].name}': unknown program section '{sec.name}'")
            entries = [f for f in fl if f.is_global]
            if not entries:
                raise ELFError(f"prog '{fl[0].name}': section '{sec.name}' has only static "
                               "functions; a program must be a global function")
            for f in entries:
                # static functions in a program section are subprograms (libbpf refuses them)
                if f.name in spec.programs:
                    raise ELFError(f"prog '{f.name}': defined twice")
                p = ProgramSpec(f.name, sec.name, info.prog_type, info.expected_attach_type,
                                kind=info.kind, attach_to=info.target, license=spec.license,
                                kern_version=spec.kern_version, sleepable=info.sleepable)
                if info.sleepable:
                    p.flags |= U.BPF_F_SLEEPABLE
                if sec.name.startswith("xdp.frags"):
                    p.flags |= U.BPF_F_XDP_HAS_FRAGS
                self._link(p, shndx, f, spec)
                spec.programs[f.name] = p

    def _func_at(self, shndx, insn, prog, what):
        for f in self.funcs.get(shndx, []):
            if f.start == insn:
                return f
        sec = self.by_index.get(shndx)
        raise ELFError(f"prog '{prog}': {what} targets instruction {insn} of section "
                       f"'{sec.name if sec is not None else shndx}', which is not the start of a function")

    def _link(self, p: ProgramSpec, shndx: int, entry: _Func, spec: CollectionSpec):
        """Copy the entry function, then append every subprogram it (transitively) uses."""
        out = bytearray()
        placed = {}                 # (shndx, start) -> index in out
        pieces = []                 # (func, new_start)
        queue = [(shndx, entry)]
        relocs = []
        while queue:
            sh, f = queue.pop(0)
            key = (sh, f.start)
            if key in placed:
                continue
            placed[key] = len(out) // 8
            pieces.append((sh, f, len(out) // 8))
            out += self.sec_insns[sh][f.start * 8: f.end * 8]
            # Discover callees of this piece now so their order is deterministic (BFS).
            for i in range(f.start, f.end):
                try:
                    tgt = self._branch_target(p.name, sh, i, f)
                except ELFError as e:
                    raise ELFError(f"{e}{self._where(sh, i)}") from None
                if tgt is not None:
                    tsh, tf = tgt
                    queue.append((tsh, tf))
        # Second pass: fix call/func-pointer immediates and record map relocations.
        for sh, f, base in pieces:
            code = self.sec_insns[sh]
            srel = self.sec_relocs[sh]
            i = f.start
            while i < f.end:
                try:
                    i = self._link_insn(p, sh, f, i, base, out, placed, relocs, spec)
                except ELFError as e:
                    raise ELFError(f"{e}{self._where(sh, i)}") from None
        p.insns = bytes(out)
        p.relocations = relocs
        self._btf_ext_for(p, pieces)

    def _link_insn(self, p, sh, f, i, base, out, placed, relocs, spec) -> int:
        """Fix up instruction i of function f (copied at `base`); returns the next index."""
        code, srel = self.sec_insns[sh], self.sec_relocs[sh]
        new = base + (i - f.start)
        op, regs, off, imm = INSN.unpack_from(code, i * 8)
        r = srel.get(i)
        tgt = self._branch_target(p.name, sh, i, f)
        if tgt is not None:
            tsh, tf = tgt
            rel = placed[(tsh, tf.start)] - new - 1
            src = U.BPF_PSEUDO_CALL if op == CALL else U.BPF_PSEUDO_FUNC
            struct.pack_into("<BBhi", out, new * 8, op, (regs & 0x0F) | (src << 4), off, rel)
            if op != CALL:
                relocs.append(Relocation(new, "func", tf.name))
        elif r is not None and op == CALL:
            relocs.append(self._kfunc_call(p.name, out, new, i, r))
        elif r is not None:
            relocs.append(self._data_reloc(p.name, out, new, code, i, r, spec))
        if op == LDDW:
            i += 1
            if i >= f.end:
                raise ELFError(f"prog '{p.name}': lddw at instruction {i - 1} of section "
                               f"'{self.by_index[sh].name}' is cut off by the end of function '{f.name}'")
            if srel.get(i) is not None:
                raise ELFError(f"prog '{p.name}': relocation on the second half of a lddw")
        return i + 1

    def _where(self, sh, i) -> str:
        """" (at file:line:col: source)" for instruction i of section sh, from BTF line info."""
        if self.ext is None or self.btf is None:
            return ""
        best = None
        for boff, file_off, line_off, line_col in self.ext["line_info"].get(self.by_index[sh].name, []):
            if boff <= i * 8 and (best is None or boff >= best[0]):
                best = (boff, file_off, line_off, line_col)
        if best is None:
            return ""
        try:
            file, src = self.btf.str_at(best[1]), self.btf.str_at(best[2]).strip()
        except BTFError:
            return ""
        return f" (at {os.path.basename(file)}:{best[3] >> 10}:{best[3] & 0x3FF}{': ' + src if src else ''})"

    def _branch_target(self, prog, sh, i, f):
        """(section, function) called or referenced as a callback by insn i, or None."""
        code = self.sec_insns[sh]
        op, regs, _off, imm = INSN.unpack_from(code, i * 8)
        src = regs >> 4
        r = self.sec_relocs[sh].get(i)
        if op == CALL and src == U.BPF_PSEUDO_CALL:
            if r is None:
                tsh, t = sh, i + imm + 1
            else:
                _, sym, _ = r
                tsec = self.sym_section(sym)
                if tsec is None:
                    return None  # a kfunc: _kfunc_call
                if not tsec["sh_flags"] & SHF_EXECINSTR:
                    raise ELFError(f"prog '{prog}': call relocation against '{sym.name}' in "
                                   f"non-executable section '{tsec.name}'")
                tsh = self._index_of(tsec)
                if sym["st_value"] % 8:
                    raise ELFError(f"prog '{prog}': call target '{sym.name}' is not instruction aligned")
                t = sym["st_value"] // 8 + imm + 1
            return tsh, self._func_at(tsh, t, prog, f"call at instruction {i} of '{f.name}'")
        if op == LDDW and r is not None:
            _, sym, _ = r
            tsec = self.sym_section(sym)
            if tsec is not None and tsec["sh_flags"] & SHF_EXECINSTR:
                # Address of a subprogram (bpf_loop & co. callbacks): imm is a byte offset.
                tsh = self._index_of(tsec)
                byte = sym["st_value"] + imm
                if byte % 8:
                    raise ELFError(f"prog '{prog}': function pointer to '{sym.name}'+{imm} is not "
                                   "instruction aligned")
                return tsh, self._func_at(tsh, byte // 8, prog, f"function pointer at instruction {i} of '{f.name}'")
        elif op == LDDW and src == U.BPF_PSEUDO_FUNC:
            return sh, self._func_at(sh, i + imm + 1, prog, f"function pointer at instruction {i}")
        return None

    def _data_reloc(self, prog, out, new, code, i, r, spec):
        roff, sym, rtype = r
        op, regs, off, imm = INSN.unpack_from(code, i * 8)
        if op != LDDW:
            raise ELFError(f"prog '{prog}': relocation against '{sym.name}' on instruction {i} "
                           f"(opcode {op:#04x}) of section, expected a lddw")
        tsec = self.sym_section(sym)
        if tsec is None:
            kind, koff, weak = self.externs.get(sym.name, (None, 0, False))
            if kind == "kconfig":
                struct.pack_into("<BBhi", out, new * 8, op, regs & 0x0F, off, 0)
                struct.pack_into("<i", out, new * 8 + 12, koff + imm)
                return Relocation(new, "kconfig", ".kconfig", koff + imm)
            if kind in ("ksym", "ksym_addr"):
                struct.pack_into("<BBhi", out, new * 8, op, regs & 0x0F, off, 0)
                return Relocation(new, kind, sym.name, 1 if weak else 0)
            if kind == "kfunc":
                raise ELFError(f"prog '{prog}': taking the address of kfunc '{sym.name}' "
                               "(bpf_ksym_exists) is not supported")
            raise ELFError(f"prog '{prog}': reference to undefined symbol '{sym.name}' "
                           "(not a __kconfig or __ksym extern)")
        if tsec.name in (".maps", "maps"):
            if sym["st_info"]["type"] == "STT_SECTION":
                # relocation against the section symbol: imm selects the map by offset
                name = self._map_at(tsec, imm, prog)
            else:
                name = sym.name
            if name not in spec.maps:
                raise ELFError(f"prog '{prog}': reference to unknown map '{name}'")
            struct.pack_into("<BBhi", out, new * 8, op, regs & 0x0F, off, 0)
            return Relocation(new, "map", name)
        if _is_data_section(tsec.name):
            if tsec.name not in spec.maps:
                raise ELFError(f"prog '{prog}': reference to empty data section '{tsec.name}'")
            addend = sym["st_value"] + imm
            if not 0 <= addend < max(tsec["sh_size"], 1):
                raise ELFError(f"prog '{prog}': reference to '{sym.name}'+{imm} outside section "
                               f"'{tsec.name}' ({tsec['sh_size']} bytes)")
            struct.pack_into("<BBhi", out, new * 8, op, regs & 0x0F, off, 0)
            struct.pack_into("<i", out, new * 8 + 12, addend)
            return Relocation(new, "map_value", tsec.name, addend)
        raise ELFError(f"prog '{prog}': relocation against '{sym.name}' in section '{tsec.name}', "
                       "which is neither a map nor global data")

    def _kfunc_call(self, prog, out, new, i, r):
        _, sym, _ = r
        kind, _, weak = self.externs.get(sym.name, (None, 0, False))
        if kind != "kfunc":
            raise ELFError(f"prog '{prog}': call at instruction {i} to undefined function "
                           f"'{sym.name}' (not declared __ksym)")
        op, regs, _off, _imm = INSN.unpack_from(out, new * 8)
        struct.pack_into("<BBhi", out, new * 8, op, (regs & 0x0F) | (U.BPF_PSEUDO_KFUNC_CALL << 4), 0, 0)
        return Relocation(new, "kfunc", sym.name, 1 if weak else 0)

    def _map_at(self, sec, off, prog):
        shndx = self._index_of(sec)
        for sym in self.symbols:
            if sym["st_shndx"] == shndx and sym["st_info"]["type"] in ("STT_OBJECT", "STT_NOTYPE") \
                    and sym.name and sym["st_value"] == off:
                return sym.name
        raise ELFError(f"prog '{prog}': no map at offset {off} of '.maps'")

    def _btf_ext_for(self, p: ProgramSpec, pieces):
        if self.ext is None or self.btf is None:
            return
        fi, li = [], []
        for sh, f, base in pieces:
            secname = self.by_index[sh].name
            for boff, tid in self.ext["func_info"].get(secname, []):
                insn = boff // 8
                if f.start <= insn < f.end:
                    fi.append((base + insn - f.start, tid))
            for boff, file_off, line_off, line_col in self.ext["line_info"].get(secname, []):
                insn = boff // 8
                if f.start <= insn < f.end:
                    li.append((base + insn - f.start, file_off, line_off, line_col))
        cr = []
        for sh, f, base in pieces:
            for boff, tid, acc, kind in self.ext["core_relo"].get(self.by_index[sh].name, []):
                insn = boff // 8
                if f.start <= insn < f.end:
                    cr.append((base + insn - f.start, tid, acc, kind))
        cr.sort()
        p.core_relos = [CoreRelo(i, t, self.btf.str_at(a), k) for i, t, a, k in cr]
        p.core_relos_raw = b"".join(struct.pack("<IIII", i * 8, t, a, k) for i, t, a, k in cr)
        fi.sort()
        li.sort(key=lambda r: r[0])
        p.func_info = fi
        p.func_info_raw = b"".join(struct.pack("<II", i, t) for i, t in fi)
        p.line_info_raw = b"".join(struct.pack("<IIII", *r) for r in li)
        btf = self.btf
        p.line_info = [LineInfo(i, btf.str_at(fo), lc >> 10, lc & 0x3FF, btf.str_at(lo))
                       for i, fo, lo, lc in li]

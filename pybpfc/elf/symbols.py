"""Uprobe targets: library names to paths, symbols to the file offsets the kernel's uprobe wants.

Pure functions over files (no ptrace, no dlopen): the shared-library cache /etc/ld.so.cache,
the target's .dynsym/.symtab with GNU symbol versions, and its PT_LOAD program headers.
"""
from __future__ import annotations

import functools
import os
import struct
import warnings
from dataclasses import dataclass

from elftools.common.exceptions import ELFError as _PyELFError
from elftools.elf.elffile import ELFFile

from ..errors import AttachError, ELFError

LD_SO_CACHE = "/etc/ld.so.cache"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
# ld.so.cache entry flags (glibc elf/cache.h): FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
_FLAG_X86_64_LIBC6 = 0x0303
_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
             "/lib", "/usr/lib", "/usr/local/lib")
STT_GNU_IFUNC = 10


class SymbolError(ELFError, AttachError):
    """A library or symbol could not be resolved (an ELFError and an AttachError)."""


@dataclass(frozen=True)
class SymbolInfo:
    name: str
    version: str          # "" when unversioned
    default: bool         # the default version (name@@VER) or unversioned
    address: int          # st_value (virtual address in the ELF)
    size: int
    file_offset: int      # what a uprobe needs
    ifunc: bool           # STT_GNU_IFUNC: a probe here fires in the resolver, not the implementation
    table: str            # ".dynsym" or ".symtab"


def _ld_cache_entries(path: str = LD_SO_CACHE):
    """[(soname, path, flags)] from glibc's ld.so.cache (new format, possibly after the old one)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    base = data.find(_NEW_MAGIC)
    if base < 0:
        return []
    try:
        nlibs, _strlen = struct.unpack_from("<II", data, base + 20)
        entries = []
        p = base + 48  # header: magic+version (20), nlibs, len_strings, flags/pad, ext offset, 3 unused
        for _ in range(nlibs):
            flags, key, value = struct.unpack_from("<iII", data, p)
            p += 24
            # string offsets are relative to the start of the new-format cache
            k = data[base + key: data.index(b"\0", base + key)].decode()
            v = data[base + value: data.index(b"\0", base + value)].decode()
            entries.append((k, v, flags))
        return entries
    except (struct.error, ValueError, UnicodeDecodeError):
        return []


def _name_matches(soname: str, name: str) -> int:
    """0 = no match, higher = better (exact soname best)."""
    if soname == name:
        return 3
    stem = name if name.startswith("lib") else "lib" + name
    if soname == stem + ".so":
        return 2
    if soname.startswith(stem + ".so."):
        return 1
    return 0


def _mapped(name: str, maps_path: str):
    try:
        with open(maps_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/"):
                    if _name_matches(os.path.basename(parts[5]), name):
                        return parts[5]
    except OSError:
        pass
    return None


def resolve_library(name: str, pid: int | None = None) -> str:
    """A library name ("libc", "c", "libc.so.6", "/abs/path") -> the real file path.

    With `pid`, the library that process has mapped wins (seen through /proc/PID/root, so
    processes in other mount namespaces resolve to their own file).
    """
    if not name:
        raise SymbolError("uprobe: empty library name")
    if "/" in name:
        if not os.path.exists(name):
            raise SymbolError(f"uprobe: '{name}': no such file")
        return os.path.realpath(name)
    if pid is not None:
        p = _mapped(name, f"/proc/{pid}/maps")
        if p is not None:
            q = f"/proc/{pid}/root{p}"
            return q if os.path.exists(q) and os.path.realpath(f"/proc/{pid}/root") != "/" else p
    best = (0, "")
    for soname, path, flags in _ld_cache_entries():
        score = _name_matches(soname, name)
        if score and (flags & 0xFFFF) == _FLAG_X86_64_LIBC6 and score > best[0] and os.path.exists(path):
            best = (score, path)
    if best[1]:
        return os.path.realpath(best[1])
    # Not in the cache: a library this process has mapped, then the usual directories.
    p = _mapped(name, "/proc/self/maps")
    if p is not None and os.path.exists(p):
        return os.path.realpath(p)
    for d in _LIB_DIRS:
        try:
            files = sorted(os.listdir(d))
        except OSError:
            continue
        scored = sorted((-_name_matches(f, name), f) for f in files if _name_matches(f, name))
        if scored:
            return os.path.realpath(os.path.join(d, scored[0][1]))
    raise SymbolError(f"uprobe: library '{name}' not found in {LD_SO_CACHE}, the process's "
                      "mappings or the standard library directories")


def resolve_binary(binary: str, pid: int | None = None) -> str:
    """A path, a library name, or an executable on $PATH -> the real file path."""
    if "/" in binary:
        return resolve_library(binary)
    try:
        return resolve_library(binary, pid)
    except SymbolError:
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
            p = os.path.join(d, binary)
            if d and os.path.isfile(p) and os.access(p, os.X_OK):
                return os.path.realpath(p)
        raise


@functools.lru_cache(maxsize=32)
def _symbols(path: str, _ino: int, _mtime: int, _size: int):
    """All defined function symbols of an ELF file, with file offsets (cached per file version)."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            loads = [(s["p_vaddr"], s["p_memsz"], s["p_offset"]) for s in elf.iter_segments()
                     if s["p_type"] == "PT_LOAD"]
            secs = [(s["sh_addr"], s["sh_size"], s["sh_offset"]) for s in elf.iter_sections()]
            out = []
            for table in (".dynsym", ".symtab"):
                st = elf.get_section_by_name(table)
                if st is None or not hasattr(st, "iter_symbols"):
                    continue
                versym, vernames = None, {}
                if table == ".dynsym":
                    vs = elf.get_section_by_name(".gnu.version")
                    # an Elf64_Versym (u16) per .dynsym entry; read as one array
                    versym = memoryview(vs.data()).cast("H") if vs is not None else None
                    verdef = elf.get_section_by_name(".gnu.version_d")
                    if verdef is not None:
                        for vd, auxs in verdef.iter_versions():
                            aux = next(iter(auxs), None)
                            vernames[vd["vd_ndx"]] = aux.name if aux is not None else ""
                for i, sym in enumerate(st.iter_symbols()):
                    info = sym["st_info"]
                    stype = info["type"]
                    ifunc = stype in ("STT_LOOS", "STT_GNU_IFUNC", STT_GNU_IFUNC)
                    if not (stype == "STT_FUNC" or ifunc) or sym["st_shndx"] == "SHN_UNDEF" or not sym.name:
                        continue
                    name, version, default = sym.name, "", True
                    if "@" in name:  # .symtab spells versions into the name
                        name, _, version = name.partition("@")
                        default = version.startswith("@")
                        version = version.lstrip("@")
                    elif versym is not None and vernames:
                        ndx = versym[i] if i < len(versym) else 0
                        if (ndx & 0x7FFF) >= 2:
                            version = vernames.get(ndx & 0x7FFF, "")
                            default = not ndx & 0x8000
                    addr = sym["st_value"]
                    out.append(SymbolInfo(name, version, default, addr, sym["st_size"],
                                          _file_offset(addr, loads, secs), ifunc, table))
            return tuple(out)
    except (OSError, _PyELFError, struct.error, ValueError) as e:
        raise SymbolError(f"uprobe: '{path}': cannot read ELF symbols: {e}") from None


def _file_offset(addr: int, loads, secs) -> int:
    for vaddr, memsz, off in loads:
        if vaddr <= addr < vaddr + memsz:
            return addr - vaddr + off
    for sh_addr, size, off in secs:  # objects without program headers
        if sh_addr and sh_addr <= addr < sh_addr + size:
            return addr - sh_addr + off
    return addr


def symbols(path: str):
    st = os.stat(path)
    return _symbols(os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)


def lookup_symbol(path: str, symbol: str) -> SymbolInfo:
    """Find `symbol` ("malloc", "malloc@@GLIBC_2.2.5", "memcpy@GLIBC_2.2.5") in the ELF at path."""
    name, _, ver = symbol.partition("@")
    want_default = ver.startswith("@")
    ver = ver.lstrip("@")
    cands = [s for s in symbols(path) if s.name == name and (not ver or s.version == ver)]
    if ver and want_default:
        cands = [s for s in cands if s.default]
    if not cands:
        raise SymbolError(f"uprobe: symbol '{symbol}' not found in {path}")
    if len({s.address for s in cands}) > 1:
        # Unversioned request with several versions: the default one is what the dynamic
        # linker binds new references to.
        defaults = [s for s in cands if s.default and (s.version or s.table == ".dynsym")]
        if len({s.address for s in defaults}) == 1:
            cands = defaults
        else:
            spelled = ", ".join(sorted({f"{s.name}{'@@' if s.default else '@'}{s.version}" for s in cands}))
            raise SymbolError(f"uprobe: symbol '{symbol}' is ambiguous in {path}: {spelled}")
    # prefer .dynsym (versioned) entries for reporting; addresses are equal
    cands.sort(key=lambda s: (s.table != ".dynsym", not s.default))
    return cands[0]


def resolve_uprobe(binary: str, symbol: str | None, offset: int = 0, pid: int | None = None) -> tuple:
    """(path, file_offset) for a uprobe on binary:symbol(+offset).

    binary: a path, a library name ("libc", "libc.so.6") or a program on $PATH.
    symbol: a function name, optionally versioned or "+off"-suffixed; None/"" means `offset`
    is already a file offset. A probe on an ifunc warns: it fires in the resolver.
    pid: resolve library names to what that process has mapped.
    """
    path = resolve_binary(binary, pid)
    if not symbol:
        return path, offset
    if "+" in symbol:
        symbol, _, extra = symbol.partition("+")
        try:
            offset += int(extra, 0)
        except ValueError:
            raise SymbolError(f"uprobe: bad offset in '{symbol}+{extra}'") from None
    info = lookup_symbol(path, symbol)
    if info.ifunc:
        warnings.warn(f"uprobe: '{symbol}' in {path} is an ifunc: the probe fires in its resolver, "
                      "not in the implementation chosen at run time", stacklevel=2)
    if info.size and offset >= info.size:
        raise SymbolError(f"uprobe: offset {offset} is past the end of '{symbol}' ({info.size} bytes)")
    return path, info.file_offset + offset


__all__ = ["SymbolError", "SymbolInfo", "lookup_symbol", "resolve_binary", "resolve_library",
           "resolve_uprobe", "symbols"]

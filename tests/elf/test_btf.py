"""BTF parser, encoder and fix-ups, checked against bpftool's decoding and the kernel."""
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

from pybpfc.btf import BTF, vmlinux
from pybpfc.btf.btf import KIND_NAMES, VAR_GLOBAL_ALLOCATED
from pybpfc.errors import BTFError
from pybpfc.lang.types import Array, IntType, Str, bool_, Struct, i32, u32, u64

HERE = os.path.dirname(__file__)
OBJ = os.path.join(HERE, "..", "objects")
OBJECTS = sorted(os.path.join(OBJ, f) for f in os.listdir(OBJ) if f.endswith(".bpf.o"))
VMLINUX = "/sys/kernel/btf/vmlinux"
BPFTOOL = shutil.which("bpftool")

sys.path.insert(0, HERE)
import _bpfsys  # noqa: E402

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf(2)")
has_vmlinux = pytest.mark.skipif(not os.path.exists(VMLINUX), reason="kernel has no BTF")


def elf_btf(path, name=".BTF"):
    with open(path, "rb") as f:
        return ELFFile(f).get_section_by_name(name).data()


_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINK = {0: "static", 1: "global", 2: "extern"}


def as_bpftool(b: BTF, t):
    """One of our decoded types in bpftool's JSON shape."""
    k = KIND_NAMES[t.kind]
    d = {"id": t.id, "kind": k, "name": t.name or "(anon)"}
    if k == "INT":
        d.update(size=t.size, bits_offset=t.bits_offset, nr_bits=t.nr_bits, encoding=_ENC[t.encoding])
    elif k in ("PTR", "TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        d["type_id"] = t.type
    elif k == "ARRAY":
        d.update(type_id=t.type, index_type_id=t.index_type, nr_elems=t.nelems)
    elif k in ("STRUCT", "UNION"):
        d.update(size=t.size, vlen=len(t.members))
        d["members"] = []
        for m in t.members:
            md = {"name": m.name or "(anon)", "type_id": m.type, "bits_offset": m.offset}
            if m.bitfield_size:
                md["bitfield_size"] = m.bitfield_size
            d["members"].append(md)
    elif k in ("ENUM", "ENUM64"):
        d.update(encoding="SIGNED" if t.kind_flag else "UNSIGNED", size=t.size, vlen=len(t.members),
                 values=[{"name": m.name, "val": m.value} for m in t.members])
    elif k == "FWD":
        d["fwd_kind"] = "union" if t.kind_flag else "struct"
    elif k == "FUNC":
        d.update(type_id=t.type, linkage=_LINK[t.linkage])
    elif k == "FUNC_PROTO":
        d.update(ret_type_id=t.type, vlen=len(t.members),
                 params=[{"name": m.name or "(anon)", "type_id": m.type} for m in t.members])
    elif k == "VAR":
        d.update(type_id=t.type, linkage=_LINK[t.linkage])
    elif k == "DATASEC":
        d.update(size=t.size, vlen=len(t.members),
                 vars=[{"type_id": m.type, "offset": m.offset, "size": m.size} for m in t.members])
    elif k == "FLOAT":
        d["size"] = t.size
    elif k == "DECL_TAG":
        d.update(type_id=t.type, component_idx=t.component_idx)
    return d


def bpftool_types(path):
    out = subprocess.run([BPFTOOL, "-j", "btf", "dump", "file", path], check=True, capture_output=True).stdout
    return json.loads(out)["types"]


@pytest.mark.skipif(not BPFTOOL, reason="bpftool not installed")
@pytest.mark.parametrize("path", OBJECTS + ([VMLINUX] if os.path.exists(VMLINUX) else []),
                         ids=os.path.basename)
def test_decode_matches_bpftool(path):
    want = bpftool_types(path)
    b = BTF(elf_btf(path) if path.endswith(".o") else open(path, "rb").read())
    assert len(b) - 1 == len(want)
    kinds = set()
    for w in want:
        got = as_bpftool(b, b[w["id"]])
        if w["kind"] == "ENUM":  # bpftool sign-extends unsigned 32-bit enumerators to 64 bits
            for v in w["values"]:
                v["val"] = v["val"] & 0xFFFFFFFF if w["encoding"] == "UNSIGNED" else v["val"]
        kinds.add(got["kind"])
        # bpftool prints a few extra keys for some kinds (e.g. FWD without kflag): every key
        # we produce must match, and every key bpftool has that we know must be there.
        for key, val in got.items():
            assert w.get(key, val) == val, (w, got)
        assert set(w) - set(got) <= {"type"}, (w, got)
    if path.endswith("kinds.bpf.o"):
        assert {"ENUM", "ENUM64", "FLOAT", "UNION", "TYPE_TAG", "DECL_TAG", "DATASEC", "VAR",
                "FUNC", "FUNC_PROTO", "CONST", "VOLATILE", "TYPEDEF", "ARRAY", "PTR", "INT"} <= kinds


@pytest.mark.parametrize("path", OBJECTS + ([VMLINUX] if os.path.exists(VMLINUX) else []),
                         ids=os.path.basename)
def test_encode_roundtrip(path):
    raw = elf_btf(path) if path.endswith(".o") else open(path, "rb").read()
    b = BTF(raw)
    for t in b:  # decode everything so encode() takes the re-encoding path for every type
        pass
    assert b.encode() == raw
    assert BTF(b.encode()).encode() == raw


@has_vmlinux
def test_vmlinux_task_struct():
    b = vmlinux()
    assert vmlinux() is b  # cached
    ts = b.find("task_struct")
    assert ts is not None and ts.size > 1000
    mem = {m.name: m for m in ts.members}
    assert {"pid", "tgid", "comm", "real_parent", "mm"} <= set(mem)
    offs = [m.offset for m in ts.members]
    assert offs == sorted(offs) and offs[-1] // 8 < ts.size
    T = b.to_lang_type(ts.id)
    f = {n: (t, o) for n, t, o in T._fields_}
    assert T._size == ts.size
    assert f["pid"] == (i32, mem["pid"].offset // 8) and f["tgid"][0] is i32
    assert f["comm"] == (Str[16], mem["comm"].offset // 8)
    assert f["real_parent"][0] is u64  # pointers are addresses
    # lookups by name of other kinds
    assert b.find("BPF_MAP_TYPE_RINGBUF") is None  # enumerators are not types
    assert b.find("bpf_map_type").kind_name in ("ENUM", "ENUM64")
    xdp = b.to_lang_type(b.find("xdp_md").id)
    assert [n for n, _, _ in xdp._fields_][:3] == ["data", "data_end", "data_meta"] and xdp._size == 24


def test_object_btf_lookup_and_lang_types():
    b = BTF(elf_btf(os.path.join(OBJ, "maps.bpf.o")))
    ev = b.find("event")
    E = b.to_lang_type(ev.id)
    assert issubclass(E, Struct) and E._size == 32
    assert [(n, t, o) for n, t, o in E._fields_] == [("pid", u32, 0), ("ts", u64, 8), ("comm", Str[16], 16)]
    assert b.type_name(b.find("flow_key").id) == "struct flow_key"
    seen = [t for t in b if t.name == "seen"][0]
    assert b.to_lang_type(seen.id) is Array[u32, 4]
    assert b.decl_tags(b.find("events").id) == ["pybpfc:event=event"]
    with pytest.raises(BTFError, match="out of range"):
        b[len(b)]


def test_datasec_fixup_from_elf():
    from pybpfc.elf import read_elf

    path = os.path.join(OBJ, "maps.bpf.o")
    raw = elf_btf(path)
    assert BTF(raw).find(".rodata").size == 0  # what LLVM leaves
    s = read_elf(path)
    for sec in (".rodata", ".data", ".bss"):
        ds = s.btf.find(sec)
        assert ds.size == s.maps[sec].value_size
        for m in ds.members:
            v = s.btf[m.type]
            assert (m.offset, m.size) == s.maps[sec].variables[v.name][:2]
    # the fixed-up bytes parse back to the same fixed-up view
    again = BTF(s.btf.raw)
    assert again.find(".bss").size == s.maps[".bss"].value_size


@root
def test_kernel_rejects_raw_and_accepts_fixed_btf():
    path = os.path.join(OBJ, "maps.bpf.o")
    from pybpfc.elf import read_elf

    fd, _ = _bpfsys.btf_load(elf_btf(path))
    assert fd < 0  # DATASEC size 0: the fix-up is needed
    s = read_elf(path)
    fd, log = _bpfsys.btf_load(s.btf.raw)
    assert fd >= 0, log
    os.close(fd)


@root
def test_extern_datasec_fixup_loads():
    raw = elf_btf(os.path.join(OBJ, "externs.bpf.o"))
    assert _bpfsys.btf_load(raw)[0] < 0
    b = BTF(raw)
    with open(os.path.join(OBJ, "externs.bpf.o"), "rb") as f:
        elf = ELFFile(f)
        sizes = {s.name: s["sh_size"] for s in elf.iter_sections()}
    b.fixup_for_kernel(sizes, {})
    ks = b.find(".ksyms")
    assert ks.size == 12 and [(m.offset, m.size) for m in ks.members] == [(0, 4), (4, 4), (8, 4)]
    assert all(b[m.type].kind_name == "VAR" and b[m.type].linkage == VAR_GLOBAL_ALLOCATED for m in ks.members)
    assert b.find(".kconfig").size == 16
    fd, log = _bpfsys.btf_load(b.raw)
    assert fd >= 0, log
    os.close(fd)


def test_writer_add_type():
    from pybpfc.btf.btf import KIND_INT, KIND_PTR, BTFType

    b = BTF(elf_btf(os.path.join(OBJ, "progs.bpf.o")))
    n = len(b)
    it = BTFType(kind=KIND_INT, name="pybpfc_u128", size=16)
    it.nr_bits = 128
    tid = b.add_type(it)
    pid = b.add_type(BTFType(kind=KIND_PTR, type=tid))
    assert (tid, pid) == (n, n + 1)
    again = BTF(b.encode())
    assert len(again) == n + 2 and again[tid].name == "pybpfc_u128" and again[tid].size == 16
    assert again[pid].type == tid and again.find("pybpfc_u128").id == tid


@pytest.mark.parametrize("bad,msg", [
    (b"", "truncated BTF header"),
    (b"\x00" * 24, "bad BTF magic"),
    (struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 0), "unsupported BTF version"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 100, 0, 0), "exceed"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, 25 << 24, 0) + b"\0",
     "unknown kind 25"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, (4 << 24) | 3, 8) + b"\0",
     "truncated type record"),
])
def test_malformed_btf(bad, msg):
    with pytest.raises(BTFError, match=msg):
        b = BTF(bad)
        for _ in b:
            pass


def _btf(*types, strs=b"\0"):
    t = b"".join(types)
    return BTF(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(t), len(t), len(strs)) + t + strs)


def test_reference_loops_are_btferrors():
    arr_of_self = _btf(struct.pack("<III", 0, 3 << 24, 0) + struct.pack("<III", 1, 1, 4))
    with pytest.raises(BTFError, match=r"type \[1\] nests deeper than"):
        arr_of_self.size_of(1)
    assert arr_of_self.to_lang_type(1) is None and arr_of_self.type_name(1).startswith("...")
    anon_self = _btf(struct.pack("<III", 0, (4 << 24) | 1, 8) + struct.pack("<III", 0, 1, 0))
    with pytest.raises(BTFError, match=r"struct \[1\] nests anonymous members deeper"):
        anon_self.to_lang_type(1)
    ptr_loop = _btf(struct.pack("<III", 0, 8 << 24, 2), struct.pack("<III", 0, 10 << 24, 1))
    with pytest.raises(BTFError, match="modifier loop"):
        ptr_loop.resolve(1)


def test_kconfig_values_like_libbpf():
    from pybpfc.btf.kernel import fill_kconfig, kernel_version
    from pybpfc.elf import read_elf
    from pybpfc.errors import LoadError

    assert kernel_version("6.18.44-fc-v669") == (6 << 16) | (18 << 8) | 44
    assert kernel_version("4.19.300") == (4 << 16) | (19 << 8) | 255  # patch saturates
    m = read_elf(os.path.join(OBJ, "externs.bpf.o")).maps[".kconfig"]
    data = fill_kconfig(m, {"CONFIG_HZ": "1000", "CONFIG_BPF_SYSCALL": "y"}, release="5.15.2")
    assert data == struct.pack("<iiB3xi", (5 << 16) | (15 << 8) | 2, 1000, 1, 0) and m.data == data
    with pytest.raises(LoadError, match=r"map '.kconfig': CONFIG_HZ is not set in the kernel config"):
        fill_kconfig(m, {"CONFIG_BPF_SYSCALL": "y"})
    with pytest.raises(LoadError, match="CONFIG_HZ=abc is not a number"):
        fill_kconfig(m, {"CONFIG_HZ": "abc", "CONFIG_BPF_SYSCALL": "y"})


@has_vmlinux
def test_kernel_ids():
    from pybpfc.btf.kernel import kfunc_id, ksym_id

    b = vmlinux()
    tid = kfunc_id("bpf_rcu_read_lock")
    assert tid and b[tid].name == "bpf_rcu_read_lock" and b[tid].kind_name == "FUNC"
    assert kfunc_id("pybpfc_no_such_function") == 0 and ksym_id("pybpfc_no_such_var") == 0


@has_vmlinux
def test_vmlinux_structs_convert_consistently():
    """A sample of the kernel's structs and unions: sizes agree with BTF, fields fit, and
    bytes survive a decode/encode round trip."""
    from pybpfc.btf.btf import KIND_STRUCT, KIND_UNION

    b = vmlinux()
    ids = [t.id for t in b if t.kind in (KIND_STRUCT, KIND_UNION)]
    assert len(ids) > 1000
    for tid in ids[::15]:
        t = b[tid]
        L = b.to_lang_type(tid)
        assert L._size == t.size, t
        for name, ft, off in L._fields_:
            assert off + ft._size <= t.size, (t, name)
        data = bytes(range(256)) * (t.size // 256 + 1)
        data = data[: t.size]
        back = L._pack(L._unpack(data))
        assert L._pack(L._unpack(back)) == back, t
        # integer fields come back unchanged (padding, bitfields and nested holes become zero)
        for name, ft, off in L._fields_:
            if issubclass(ft, IntType) and ft is not bool_:  # bools normalise to 0/1
                assert back[off: off + ft._size] == data[off: off + ft._size], (t, name)

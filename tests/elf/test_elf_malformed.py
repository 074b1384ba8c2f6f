"""Malformed objects give ELFError/BTFError naming the problem, never another exception."""
import io
import os
import random
import struct

import pytest
from elftools.elf.elffile import ELFFile

from pybpfc.elf import read_elf
from pybpfc.errors import BTFError, ELFError

OBJ = os.path.join(os.path.dirname(__file__), "..", "objects")
OBJECTS = sorted(os.path.join(OBJ, f) for f in os.listdir(OBJ) if f.endswith(".bpf.o"))
PROGS = os.path.join(OBJ, "progs.bpf.o")
MAPS = os.path.join(OBJ, "maps.bpf.o")


def load(path):
    with open(path, "rb") as f:
        return bytearray(f.read())


def section_offset(data, name):
    return ELFFile(io.BytesIO(bytes(data))).get_section_by_name(name)["sh_offset"]


def test_not_elf_and_wrong_machine(tmp_path):
    with pytest.raises(ELFError, match="not an ELF file"):
        read_elf(b"hello world")
    d = load(PROGS)
    struct.pack_into("<H", d, 0x12, 62)  # EM_X86_64
    with pytest.raises(ELFError, match=r"not a BPF object \(machine EM_X86_64\)"):
        read_elf(bytes(d))
    with pytest.raises(ELFError, match="no-such.o"):
        read_elf(str(tmp_path / "no-such.o"))
    with pytest.raises(ELFError, match="expected a path, bytes or a file"):
        read_elf(42)


def test_truncated_names_the_problem():
    d = load(PROGS)
    with pytest.raises(ELFError, match="<bytes>: "):
        read_elf(bytes(d[:200]))
    with pytest.raises(ELFError, match=r"objects/progs.bpf.o: "):
        read_elf(bytes(d[: len(d) // 2]), source=PROGS)


def test_call_into_the_middle_of_a_function():
    d = load(PROGS)
    off = section_offset(d, "xdp")
    # xdp_drop starts at instruction 4 with `call twice` (imm 10 against .text): aim one further
    code, regs, o, imm = struct.unpack_from("<BBhi", d, off + 4 * 8)
    assert (code, imm) == (0x85, 10)
    struct.pack_into("<i", d, off + 4 * 8 + 4, 11)
    with pytest.raises(ELFError, match=r"prog 'xdp_drop': call at instruction 4 of 'xdp_drop' targets "
                                       r"instruction 12 of section '.text', which is not the start of a function "
                                       r"\(at progs.bpf.c:52:2: twice\(1\);\)"):
        read_elf(bytes(d))


def test_relocation_with_missing_symbol():
    d = load(PROGS)
    off = section_offset(d, ".relxdp")
    r_off, r_info = struct.unpack_from("<QQ", d, off)
    struct.pack_into("<Q", d, off + 8, (999 << 32) | (r_info & 0xFFFFFFFF))
    with pytest.raises(ELFError, match=r"section '.relxdp': relocation refers to symbol #999"):
        read_elf(bytes(d))


def test_relocation_on_a_non_lddw():
    d = load(MAPS)
    sec = "tracepoint/syscalls/sys_enter_getpid"
    off = section_offset(d, sec)
    first = section_offset(d, ".rel" + sec)
    r_off, r_info = struct.unpack_from("<QQ", d, first)
    struct.pack_into("<Q", d, first, r_off + 8 * 2)  # move it onto the next instruction
    with pytest.raises(ELFError, match=r"prog 'on_getpid': relocation"):
        read_elf(bytes(d))
    del off


def test_map_without_btf_variable():
    d = load(MAPS)
    strtab = section_offset(d, ".strtab")
    i = d.index(b"\0counters\0", strtab)
    d[i + 1: i + 9] = b"counterz"
    with pytest.raises(ELFError, match=r"map 'counterz': no BTF variable in DATASEC '.maps'"):
        read_elf(bytes(d))


def test_corrupt_btf_is_btferror():
    d = load(MAPS)
    off = section_offset(d, ".BTF")
    struct.pack_into("<H", d, off, 0x1234)
    with pytest.raises(BTFError, match=r"\.BTF: bad BTF magic 0x1234"):
        read_elf(bytes(d))


@pytest.mark.parametrize("path", OBJECTS, ids=os.path.basename)
def test_fuzz_truncations_and_bit_flips(path):
    data = load(path)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    rng = random.Random(os.path.basename(path))
    for cut in range(0, len(data), max(1, len(data) // 40)):
        with pytest.raises((ELFError, BTFError)):
            read_elf(bytes(data[:cut]))
    for _ in range(150):
        d = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            # headers and the section table are where garbage hurts most
            j = rng.randrange(64) if r < 0.25 else rng.randrange(shoff, len(d)) if r < 0.6 else rng.randrange(len(d))
            d[j] = d[j] ^ (1 << rng.randrange(8)) if rng.random() < 0.6 else rng.choice([0, 0xFF, 0x80, 7])
        try:
            read_elf(bytes(d))
        except (ELFError, BTFError) as e:
            assert str(e)


def test_struct_ops_refused_not_dropped():
    with pytest.raises(ELFError, match=r"section '.struct_ops.link': struct_ops maps are not supported"):
        read_elf(os.path.join(OBJ, "struct_ops.bpf.o"))


@pytest.mark.parametrize("path", OBJECTS, ids=os.path.basename)
def test_fuzz_btf_sections(path):
    data = load(path)
    elf = ELFFile(io.BytesIO(bytes(data)))
    rng = random.Random("btf" + os.path.basename(path))
    for name in (".BTF", ".BTF.ext"):
        sec = elf.get_section_by_name(name)
        lo, n = sec["sh_offset"], sec["sh_size"]
        for _ in range(60):
            d = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                j = lo + rng.randrange(n)
                d[j] = d[j] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.choice([0, 0xFF, 1, 2, 4, 0x10])
            try:
                read_elf(bytes(d))
            except (ELFError, BTFError) as e:
                assert str(e)


@pytest.mark.skipif(not __import__("shutil").which("clang-19"), reason="needs clang-19")
@pytest.mark.parametrize("sec,msg", [
    ("?xdp", r"prog 'p': section '\?xdp': programs that are not loaded by default \('\?' prefix\) "
             r"are not supported"),
    ("foo/bar", r"prog 'p': unknown program section 'foo/bar'"),
])
def test_unknown_sections(tmp_path, sec, msg):
    import subprocess

    src, obj = tmp_path / "s.bpf.c", tmp_path / "s.bpf.o"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   f'SEC("{sec}") int p(struct xdp_md *ctx) {{ return XDP_PASS; }}\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(ELFError, match=msg):
        read_elf(str(obj))

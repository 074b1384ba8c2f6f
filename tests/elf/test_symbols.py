"""Uprobe target resolution against nm/readelf/ldconfig, and a real uprobe at the offset."""
import ctypes
import ctypes.util
import os
import re
import shutil
import struct
import subprocess
import warnings

import pytest

from pybpfc.elf.symbols import SymbolError, lookup_symbol, resolve_library, resolve_uprobe
from pybpfc.errors import AttachError, ELFError

LIBC = resolve_library("libc")
UPROBE_PMU = "/sys/bus/event_source/devices/uprobe/type"


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def nm_dynamic(path):
    """{'malloc@@GLIBC_2.2.5': (value, type letter)} from nm -D."""
    out = {}
    for line in run("nm", "-D", "--defined-only", path).splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[2]] = (int(parts[0], 16), parts[1])
    return out


def loads(path):
    """[(vaddr, memsz, offset)] of PT_LOAD from readelf -lW."""
    segs = []
    for line in run("readelf", "-lW", path).splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[2], 16), int(f[5], 16), int(f[1], 16)))
    return segs


def to_offset(addr, segs):
    for vaddr, memsz, off in segs:
        if vaddr <= addr < vaddr + memsz:
            return addr - vaddr + off
    raise AssertionError(hex(addr))


@pytest.mark.skipif(not shutil.which("ldconfig"), reason="no ldconfig")
def test_library_names():
    out = run("ldconfig", "-p")
    m = re.search(r"^\s*libc\.so\.6 \(libc6,x86-64\) => (\S+)$", out, re.M)
    assert m
    want = os.path.realpath(m.group(1))
    assert resolve_library("libc") == resolve_library("c") == resolve_library("libc.so.6") == want
    assert resolve_library(want) == want
    assert os.path.basename(resolve_library("libm")).startswith("libm.so")
    with pytest.raises(SymbolError, match="library 'libdoesnotexist' not found"):
        resolve_library("libdoesnotexist")


@pytest.mark.skipif(not shutil.which("nm"), reason="binutils missing")
def test_libc_symbols_match_nm_and_readelf():
    syms, segs = nm_dynamic(LIBC), loads(LIBC)
    for name in ("malloc", "free", "getpid", "memcpy@GLIBC_2.2.5", "memcpy@@GLIBC_2.14"):
        full = name if "@" in name else next(k for k in syms if k.split("@")[0] == name and "@@" in k)
        addr, letter = syms[full]
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            path, off = resolve_uprobe("libc", name)
        assert (path, off) == (LIBC, to_offset(addr, segs)), name
        assert bool(w) == (letter == "i"), name  # ifuncs warn
    # an unversioned name with several versions resolves to the default (@@) one
    with pytest.warns(UserWarning, match="ifunc"):
        assert resolve_uprobe("libc", "memcpy")[1] == to_offset(syms["memcpy@@GLIBC_2.14"][0], segs)
    info = lookup_symbol(LIBC, "memcpy@GLIBC_2.2.5")
    assert (info.version, info.default, info.ifunc) == ("GLIBC_2.2.5", False, False)
    assert lookup_symbol(LIBC, "memcpy").ifunc
    assert resolve_uprobe("libc", "malloc+4")[1] == resolve_uprobe("libc", "malloc")[1] + 4
    assert resolve_uprobe("libc", None, 0x1234) == (LIBC, 0x1234)


def test_library_of_a_process():
    p = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(100):  # wait for the dynamic loader to map libc
            with open(f"/proc/{p.pid}/maps") as f:
                if "libc" in f.read():
                    break
        assert os.path.realpath(resolve_library("libc", pid=p.pid)) == LIBC
        path, off = resolve_uprobe("libc", "malloc", pid=p.pid)
        assert os.path.realpath(path) == LIBC and off == resolve_uprobe("libc", "malloc")[1]
    finally:
        p.kill()
        p.wait()


def test_unknown_symbol_is_elf_and_attach_error():
    with pytest.raises(SymbolError, match=r"symbol 'no_such_function_xyz' not found in .*libc"):
        resolve_uprobe("libc", "no_such_function_xyz")
    assert issubclass(SymbolError, ELFError) and issubclass(SymbolError, AttachError)
    with pytest.raises(SymbolError, match="no such file"):
        resolve_uprobe("/nonexistent/bin", "main")


C_PROG = r"""
#include <stdio.h>
__attribute__((noinline)) int target_fn(int x) { __asm__ volatile(""); return x * 3; }
int main(void) {
    int s = 0, c;
    c = getchar();            /* wait until the probe is in place */
    for (int i = 0; i < 5; i++) s += target_fn(i + c);
    printf("%d\n", s);
    return 0;
}
"""


def perf_uprobe(path, offset, pid):
    with open(UPROBE_PMU) as f:
        pmu = int(f.read())
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    cpath = ctypes.create_string_buffer(path.encode())
    # perf_event_attr: type, size, config, sample_period, sample_type, read_format, flags,
    # wakeup_events, bp_type, config1 (uprobe path), config2 (file offset)
    attr = struct.pack("<IIQQQQQIIQQ", pmu, 128, 0, 0, 0, 0, 0, 0, 0, ctypes.addressof(cpath), offset)
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    fd = libc.syscall(298, buf, pid, -1, -1, 0)  # perf_event_open
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(UPROBE_PMU), reason="needs root and uprobe PMU")
@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
@pytest.mark.parametrize("pie", [False, True], ids=["no-pie", "pie"])
def test_uprobe_fires_at_resolved_offset(tmp_path, pie):
    src = tmp_path / "t.c"
    exe = tmp_path / "t"
    src.write_text(C_PROG)
    subprocess.run(["gcc", "-O1", "-fno-pie" if not pie else "-fpie", "-no-pie" if not pie else "-pie",
                    "-o", str(exe), str(src)], check=True)
    path, off = resolve_uprobe(str(exe), "target_fn")
    addr = int(run("nm", str(exe)).split(" T target_fn")[0].split()[-1], 16)
    if not pie:
        assert off != addr  # non-PIE: the offset differs from the address (0x400000 base)
    assert off == to_offset(addr, loads(str(exe)))
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        fd = perf_uprobe(path, off, p.pid)
        try:
            out, _ = p.communicate(b"\x01", timeout=30)
            count = struct.unpack("<Q", os.read(fd, 8))[0]
        finally:
            os.close(fd)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert int(out) == sum((i + 1) * 3 for i in range(5))
    assert count == 5

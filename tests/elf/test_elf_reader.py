"""ELF reader: clang-built objects -> CollectionSpec, checked field by field and in the kernel."""
import os
import struct
import sys

import pytest

from pybpfc import uapi as U
from pybpfc.elf import read_elf
from pybpfc.lang.types import Array, Str, Struct, i64, u16, u32, u64

HERE = os.path.dirname(__file__)
OBJ = os.path.join(HERE, "..", "objects")
MAPS = os.path.join(OBJ, "maps.bpf.o")
PROGS = os.path.join(OBJ, "progs.bpf.o")
KINDS = os.path.join(OBJ, "kinds.bpf.o")
BENCH = "/work/shared/bench/vm/bench.bpf.o"
ALL = [MAPS, PROGS, KINDS] + ([BENCH] if os.path.exists(BENCH) else [])

sys.path.insert(0, HERE)
import _bpfsys  # noqa: E402

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf(2)")


def insn(p, i):
    return struct.unpack_from("<BBhi", p.insns, i * 8)


def test_maps_object_maps():
    s = read_elf(MAPS)
    m = s.maps
    assert (m["counters"].type, m["counters"].key_size, m["counters"].value_size, m["counters"].max_entries) == \
        (U.BPF_MAP_TYPE_ARRAY, 4, 8, 16)
    assert m["counters"].key_type is u32 and m["counters"].value_type is u64
    assert m["pcpu"].type == U.BPF_MAP_TYPE_PERCPU_ARRAY and m["pcpu"].value_type is i64
    assert m["lru"].type == U.BPF_MAP_TYPE_LRU_HASH and m["lru"].flags == 2  # BPF_F_NO_COMMON_LRU
    assert (m["pcpu_hash"].type, m["pcpu_hash"].key_size, m["pcpu_hash"].value_size) == \
        (U.BPF_MAP_TYPE_PERCPU_HASH, 4, 8)
    assert m["pcpu_hash"].key_type is None and m["pcpu_hash"].btf_key_type_id == 0
    assert m["events"].type == U.BPF_MAP_TYPE_RINGBUF and m["events"].max_entries == 256 * 1024
    assert m["perf_events"].type == U.BPF_MAP_TYPE_PERF_EVENT_ARRAY
    assert (m["queue"].type, m["queue"].key_size, m["queue"].value_size) == (U.BPF_MAP_TYPE_QUEUE, 0, 4)
    assert m["lpm"].type == U.BPF_MAP_TYPE_LPM_TRIE and m["lpm"].flags == U.BPF_F_NO_PREALLOC
    assert m["pinned"].pinning == 1 and m["counters"].pinning == 0
    # decl tags
    ev = m["events"].event_type
    assert ev.__name__ == "event" and [(n, o) for n, _, o in ev._fields_] == [("pid", 0), ("ts", 8), ("comm", 16)]
    assert m["lpm"].tags == {"histogram": "log2"} and m["events"].tags == {}


def test_struct_key_value_types_from_btf():
    s = read_elf(MAPS)
    fl = s.maps["flows"]
    assert (fl.key_size, fl.value_size) == (16, 48)
    K, V = fl.key_type, fl.value_type
    assert issubclass(K, Struct) and K._size == 16
    assert [(n, t, o) for n, t, o in K._fields_][:2] == [("saddr", u32, 0), ("daddr", u32, 4)]
    assert [(n, o) for n, _, o in K._fields_] == [("saddr", 0), ("daddr", 4), ("sport", 8), ("dport", 10), ("proto", 12)]
    assert [(n, o) for n, _, o in V._fields_] == [("packets", 0), ("bytes", 8), ("comm", 16), ("last_err", 32), ("ports", 36)]
    types = dict((n, t) for n, t, _ in V._fields_)
    assert types["comm"] is Str[16] and types["ports"] is Array[u16, 4]
    assert types["last_err"].__name__ == "i32"
    # encode/decode through the decoded type
    v = V(packets=3, bytes=1500, comm=b"curl", last_err=-2, ports=[1, 2, 3, 4])
    assert V._unpack(V._pack(v)) == v
    lk = s.maps["lpm"].key_type
    assert [(n, o) for n, _, o in lk._fields_] == [("prefixlen", 0), ("addr", 4)]
    assert fl.btf_key_type_id and s.btf[fl.btf_key_type_id].name == "flow_key"
    assert fl.btf_value_type_id and s.btf[fl.btf_value_type_id].name == "flow_stats"
    assert set(s.types) >= {"flow_key", "flow_stats", "event", "lpm_key"}


def test_global_data_sections():
    s = read_elf(MAPS)
    ro, data, bss = s.maps[".rodata"], s.maps[".data"], s.maps[".bss"]
    for m in (ro, data, bss):
        assert (m.type, m.key_size, m.max_entries, m.name, m.section) == (U.BPF_MAP_TYPE_ARRAY, 4, 1, m.section, m.section)
        assert len(m.data) == m.value_size
    assert ro.readonly and not data.readonly and not bss.readonly
    assert ro.flags & U.BPF_F_RDONLY_PROG
    off, size, t = ro.variables["min_bytes"]
    assert (size, t) == (8, u64) and struct.unpack_from("<Q", ro.data, off)[0] == 100
    off, size, t = ro.variables["greeting"]
    assert t is Str[6] and ro.data[off:off + size] == b"hello\0"
    off, size, t = data.variables["total"]
    assert struct.unpack_from("<Q", data.data, off)[0] == 7
    off, size, t = data.variables["seen"]
    assert t is Array[u32, 4] and t._unpack(data.data[off:off + size]) == [1, 2, 3, 4]
    assert bss.data == bytes(bss.value_size)
    assert bss.variables["last_event"][2].__name__ == "event"


def test_map_and_data_relocations():
    s = read_elf(MAPS)
    p = s.programs["on_getpid"]
    assert (p.section, p.type, p.kind, p.attach_to) == \
        ("tracepoint/syscalls/sys_enter_getpid", U.BPF_PROG_TYPE_TRACEPOINT, "tracepoint", "syscalls/sys_enter_getpid")
    assert p.license == "GPL" and s.license == "GPL"
    kinds = {(r.kind, r.target) for r in p.relocations}
    for name in ("counters", "events", "queue", "flows", "lru", "pcpu", "perf_events", "lpm", "pinned", "pcpu_hash"):
        assert ("map", name) in kinds
    ro = s.maps[".rodata"]
    addends = {r.addend for r in p.relocations if r.target == ".rodata"}
    assert {ro.variables["target_pid"][0], ro.variables["min_bytes"][0], ro.variables["greeting"][0]} <= addends
    for r in p.relocations:
        op, regs, _, imm = insn(p, r.insn)
        assert op == 0x18, r  # every relocation sits on a lddw
        assert regs >> 4 == 0 and imm == 0


def test_programs_subprograms_and_callbacks():
    s = read_elf(PROGS)
    assert s.license == "Dual BSD/GPL"
    want = {
        "xdp_pass": ("xdp", U.BPF_PROG_TYPE_XDP, "xdp", ""),
        "xdp_drop": ("xdp", U.BPF_PROG_TYPE_XDP, "xdp", ""),
        "tc_count": ("tc", U.BPF_PROG_TYPE_SCHED_CLS, "tc", ""),
        "sock_filter": ("socket", U.BPF_PROG_TYPE_SOCKET_FILTER, "socket_filter", ""),
        "cg_egress": ("cgroup_skb/egress", U.BPF_PROG_TYPE_CGROUP_SKB, "cgroup", ""),
        "on_malloc": ("uprobe/libc.so.6:malloc", U.BPF_PROG_TYPE_KPROBE, "uprobe", "libc.so.6:malloc"),
        "on_malloc_ret": ("uretprobe/libc.so.6:malloc", U.BPF_PROG_TYPE_KPROBE, "uretprobe", "libc.so.6:malloc"),
        "tail_target": ("tracepoint/syscalls/sys_enter_getppid", U.BPF_PROG_TYPE_TRACEPOINT, "tracepoint",
                        "syscalls/sys_enter_getppid"),
    }
    assert {n: (p.section, p.type, p.kind, p.attach_to) for n, p in s.programs.items()} == want
    assert s.programs["cg_egress"].expected_attach_type == U.BPF_CGROUP_INET_EGRESS
    # xdp_drop -> twice -> bump: both subprograms appended once; calls point at their starts
    p = s.programs["xdp_drop"]
    starts = [i for i, _ in p.func_info]
    assert len(starts) == 3 and starts[0] == 0
    names = [s.btf[t].name for _, t in p.func_info]
    assert names == ["xdp_drop", "twice", "bump"]
    calls = [(i, insn(p, i)) for i in range(p.insn_count) if insn(p, i)[0] == 0x85 and insn(p, i)[1] >> 4 == 1]
    assert calls and all(i + imm + 1 in starts[1:] for i, (_, _, _, imm) in calls)
    # bpf_loop callback: lddw src=BPF_PSEUDO_FUNC pointing at loop_cb's copy
    p = s.programs["tc_count"]
    (fr,) = [r for r in p.relocations if r.kind == "func"]
    assert fr.target == "loop_cb"
    op, regs, _, imm = insn(p, fr.insn)
    assert op == 0x18 and regs >> 4 == U.BPF_PSEUDO_FUNC
    cb = dict((s.btf[t].name, i) for i, t in p.func_info)["loop_cb"]
    assert fr.insn + imm + 1 == cb
    # programs that do not call a subprogram carry none
    assert [s.btf[t].name for _, t in s.programs["on_malloc_ret"].func_info] == ["on_malloc_ret"]


def test_prog_array_initial_contents():
    s = read_elf(PROGS)
    j = s.maps["jmp_init"]
    assert j.type == U.BPF_MAP_TYPE_PROG_ARRAY and (j.key_size, j.value_size, j.max_entries) == (4, 4, 2)
    assert j.contents == [(struct.pack("<I", 1), "tail_target")]
    assert s.maps["jmp"].contents == []


def test_line_info():
    s = read_elf(PROGS)
    p = s.programs["tc_count"]
    assert p.line_info and p.line_info[0].insn == 0
    assert all(li.file.endswith("progs.bpf.c") for li in p.line_info)
    src = {li.source.strip() for li in p.line_info}
    assert "bpf_loop(10, loop_cb, &sum, 0);" in src
    assert "*(__u64 *)ctx += i;" in src  # from the appended callback
    assert len(p.line_info_raw) == 16 * len(p.line_info) and len(p.func_info_raw) == 8 * len(p.func_info)
    insns = [struct.unpack_from("<I", p.line_info_raw, 16 * k)[0] for k in range(len(p.line_info))]
    assert insns == [li.insn for li in p.line_info] and insns == sorted(insns)


@pytest.mark.skipif(not os.path.exists(BENCH), reason="shared benchmark object missing")
def test_bench_object():
    s = read_elf(BENCH)
    assert set(s.programs) >= {"xdp_pass", "xdp_bpf_loop", "xdp_hash_lookup"}
    assert all(p.type == U.BPF_PROG_TYPE_XDP for p in s.programs.values())
    assert s.maps[".data"].variables["loop_n"][:2] == (0, 4)
    assert [r.kind for r in s.programs["xdp_bpf_loop"].relocations].count("func") == 1


@pytest.mark.parametrize("path", ALL, ids=os.path.basename)
def test_deterministic(path):
    a = read_elf(path)
    with open(path, "rb") as f:
        b = read_elf(f.read(), source=path)
    with open(path, "rb") as f:
        c = read_elf(f)
    assert a == b == c
    assert a.btf.raw == b.btf.raw
    assert a.copy() == a


def test_externs_are_symbolic_relocations():
    s = read_elf(os.path.join(OBJ, "externs.bpf.o"))
    p = s.programs["uses_externs"]
    kc = s.maps[".kconfig"]
    assert kc.readonly and kc.tags == {"kconfig": "1", "weak": "CONFIG_PYBPFC_NOT_THERE"}
    assert {n: v[:2] for n, v in kc.variables.items()} == {
        "LINUX_KERNEL_VERSION": (0, 4), "CONFIG_HZ": (4, 4), "CONFIG_BPF_SYSCALL": (8, 1),
        "CONFIG_PYBPFC_NOT_THERE": (12, 4)}
    rel = [(r.kind, r.target, r.addend) for r in p.relocations if r.kind != "map_value"]
    assert rel == [("kfunc", "bpf_rcu_read_lock", 0), ("kfunc", "bpf_rcu_read_unlock", 0),
                   ("kconfig", ".kconfig", 8), ("kconfig", ".kconfig", 0), ("kconfig", ".kconfig", 4),
                   ("kconfig", ".kconfig", 12)]
    assert [(r.kind, r.target) for r in s.programs["uses_ksym"].relocations] == [
        ("ksym", "bpf_prog_active"), ("map_value", ".bss")]
    op, regs, off, imm = insn(p, 0)
    assert (op, regs >> 4, off, imm) == (0x85, U.BPF_PSEUDO_KFUNC_CALL, 0, 0)


def _extern_setup():
    from pybpfc.btf import kernel as K

    s = read_elf(os.path.join(OBJ, "externs.bpf.o"))
    cfg = K.kernel_config()
    if not cfg:
        pytest.skip("kernel config not readable (/proc/config.gz)")
    K.fill_kconfig(s.maps[".kconfig"])
    for p in s.programs.values():
        p.insns = bytes(K.patch_externs(bytearray(p.insns), p))
        for r in p.relocations:  # kconfig reads are map_value loads from the filled map
            if r.kind == "kconfig":
                r.kind = "map_value"
        p.relocations = [r for r in p.relocations if r.kind in ("map", "map_value")]
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    maps = {n: _bpfsys.map_create(m) for n, m in s.maps.items()}
    for n, m in s.maps.items():
        if m.data:
            _bpfsys.map_update(maps[n], b"\0\0\0\0", m.data)
    return s, cfg, btf_fd, maps


@root
def test_kconfig_and_kfuncs_resolved_in_the_kernel():
    s, cfg, btf_fd, maps = _extern_setup()
    fds = [btf_fd, *maps.values()]
    try:
        fd, log = _bpfsys.prog_load(s.programs["uses_externs"], maps, btf_fd)
        assert fd >= 0, log
        fds.append(fd)
        _bpfsys.test_run(fd)
        out = struct.unpack("<5Q", _bpfsys.map_lookup(maps[".bss"], b"\0\0\0\0", 40))
        rel = [int(x) for x in os.uname().release.split("-")[0].split(".")[:3]]
        assert out[0] == (rel[0] << 16) | (rel[1] << 8) | min(rel[2], 255)
        assert out[1] == int(cfg["CONFIG_HZ"]) and out[2] == 1 and out[3] == 0
    finally:
        for fd in fds:
            os.close(fd)


@root
def test_typed_ksym_resolved_in_the_kernel():
    from pybpfc.btf import kernel as K

    assert K.ksym_id("bpf_prog_active") > 0
    s, cfg, btf_fd, maps = _extern_setup()
    fds = [btf_fd, *maps.values()]
    try:
        fd, log = _bpfsys.prog_load(s.programs["uses_ksym"], maps, btf_fd)
        if fd < 0 and "failed to find the address for kernel symbol" in log:
            pytest.skip("this kernel's kallsyms has no data symbols (CONFIG_KALLSYMS_ALL off)")
        assert fd >= 0, log
        fds.append(fd)
        _bpfsys.test_run(fd)
        out = struct.unpack("<5Q", _bpfsys.map_lookup(maps[".bss"], b"\0\0\0\0", 40))
        assert out[4] >= 100
    finally:
        for fd in fds:
            os.close(fd)


@root
@pytest.mark.parametrize("path", ALL, ids=os.path.basename)
def test_kernel_accepts_btf_and_programs(path):
    s = read_elf(path)
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    fds = []
    try:
        maps = {}
        for n, m in s.maps.items():
            if m.type == U.BPF_MAP_TYPE_PERF_EVENT_ARRAY and not m.max_entries:
                m.max_entries = os.cpu_count()
            # queue/stack/ringbuf maps take no key/value BTF (libbpf drops it the same way)
            with_btf = btf_fd if m.btf_key_type_id and m.type != U.BPF_MAP_TYPE_HASH_OF_MAPS else 0
            inner = _bpfsys.map_create(m.inner_map) if m.inner_map else 0
            maps[n] = _bpfsys.map_create(m, with_btf, inner)
            fds.append(maps[n])
            if inner:
                os.close(inner)
        for n, p in s.programs.items():
            fd, log = _bpfsys.prog_load(p, maps, btf_fd)
            assert fd >= 0, f"{n}: {log}"
            fds.append(fd)
    finally:
        for fd in fds + [btf_fd]:
            os.close(fd)


def test_kinds_object_corners():
    s = read_elf(KINDS)
    assert s.kern_version == 0x060C00
    lg = s.maps["legacy_hash"]
    assert (lg.section, lg.type, lg.key_size, lg.value_size, lg.max_entries) == ("maps", U.BPF_MAP_TYPE_HASH, 4, 8, 42)
    outer = s.maps["outer"]
    assert outer.type == U.BPF_MAP_TYPE_HASH_OF_MAPS and outer.value_size == 4
    im = outer.inner_map
    assert (im.type, im.key_size, im.value_size, im.max_entries) == (U.BPF_MAP_TYPE_ARRAY, 4, 4, 3)
    assert outer.contents == [(struct.pack("<I", 2), "inner_a")]
    ev = s.maps["samples"].event_type  # named through a typedef of an anonymous struct
    assert [(n, o) for n, _, o in ev._fields_] == [("a", 0), ("b", 4)] and ev._size == 8
    assert s.maps[".bss"].variables["last_sample"][2] is ev
    assert "inner" not in s.types and "record" in s.types  # map definitions are not value types
    cu = s.maps[".data.custom"]
    assert not cu.readonly and cu.variables["custom_var"][:2] == (0, 4)
    assert struct.unpack("<i", cu.data)[0] == 5
    st = s.maps[".rodata.str1.1"]
    assert st.readonly and st.data == b"a literal string\0"
    p = s.programs["frag_prog"]
    assert p.type == U.BPF_PROG_TYPE_XDP and p.flags & U.BPF_F_XDP_HAS_FRAGS
    assert {(r.kind, r.target) for r in p.relocations} == {
        ("map", "legacy_hash"), ("map", "outer"), ("map_value", ".data.custom"), ("map", "records"), ("func", "cb"),
        ("map", "samples"), ("map_value", ".bss")}
    sl = s.programs["sleepy"]
    assert sl.sleepable and sl.flags & U.BPF_F_SLEEPABLE and sl.kind == "uprobe"
    assert ("map_value", ".rodata.str1.1") in {(r.kind, r.target) for r in sl.relocations}
    # the callback is referenced from the subprogram sum_to, linked into both programs
    for prog in (p, sl):
        names = [s.btf[t].name for _, t in prog.func_info]
        assert names[1:] == ["sum_to", "cb"]


def test_kinds_record_type():
    s = read_elf(KINDS)
    R = s.maps["records"].value_type
    assert R is s.types["record"] and R._size == 88
    f = {n: (t, o) for n, t, o in R._fields_}
    from pybpfc.lang.types import i16, i32
    assert f["c"] == (i32, 0)             # enum with a negative value: signed
    assert f["b"] == (u64, 8)             # ENUM64
    assert f["ratio"] == (u64, 16) and f["f"] == (u32, 24)   # FLOAT as raw bits
    assert f["u"][1] == 28 and f["u"][0]._size == 8          # union: its largest member
    assert f["lo"] == (u16, 36) and f["hi"] == (u16, 38)     # anonymous struct flattened
    assert "flag_a" not in f and "flag_b" not in f           # bitfields are skipped
    assert f["n"] == (u32, 44)            # const volatile typedef
    assert f["uptr"] == (u64, 48)         # pointer through a TYPE_TAG
    assert f["name"] == (Str[12], 64) and f["matrix"] == (Array[Array[i16, 3], 2], 76)
    r = R(c=-1, b=0x1234567890, name=b"x", matrix=[[1, 2, 3], [4, 5, 6]])
    assert R._unpack(R._pack(r)) == r


def test_core_relocations_recorded():
    s = read_elf(os.path.join(OBJ, "core.bpf.o"))
    p = s.programs["read_tgid"]
    assert p.type == U.BPF_PROG_TYPE_SYSCALL
    got = [(r.access, r.kind, s.btf[r.type_id].name) for r in p.core_relos]
    # BPF_CORE_FIELD_BYTE_OFFSET of tgid, FIELD_EXISTS of the bogus field, FIELD_BYTE_SIZE of tgid
    assert got == [("0:1", 0, "task_struct"), ("0:2", 2, "task_struct"), ("0:1", 1, "task_struct")]
    assert len(p.core_relos_raw) == 16 * len(p.core_relos)
    assert struct.unpack_from("<I", p.core_relos_raw)[0] == p.core_relos[0].insn * 8


@root
def test_kernel_applies_core_relocations():
    """The local task_struct puts tgid at offset 4; the kernel's CO-RE fixes the offset."""
    s = read_elf(os.path.join(OBJ, "core.bpf.o"))
    p = s.programs["read_tgid"]
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    bss = _bpfsys.map_create(s.maps[".bss"], 0)
    fd, log = _bpfsys.prog_load(p, {".bss": bss}, btf_fd)
    try:
        if fd < 0 and ("unknown func" in log or "not allowed" in log.lower()):
            pytest.skip(f"kernel refuses bpf_get_current_task in syscall programs: {log[-200:]}")
        assert fd >= 0, log
        assert _bpfsys.test_run(fd) == os.getpid()
        seen, bogus, size = struct.unpack("<III", _bpfsys.map_lookup(bss, b"\0\0\0\0", 12))
        assert (seen, bogus, size) == (os.getpid(), 0, 4)
    finally:
        for f in (fd, bss, btf_fd):
            if f >= 0:
                os.close(f)


def _load_all(s):
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    fds, maps, progs = [btf_fd], {}, {}
    for n, m in s.maps.items():
        maps[n] = _bpfsys.map_create(m, btf_fd if m.btf_key_type_id else 0)
        fds.append(maps[n])
    for n, p in s.programs.items():
        fd, log = _bpfsys.prog_load(p, maps, btf_fd)
        assert fd >= 0, f"{n}: {log}"
        progs[n] = fd
        fds.append(fd)
    return maps, progs, fds


@root
def test_linked_programs_compute_in_the_kernel():
    """Subprograms, callbacks and in-section static calls run where the linker put them."""
    s = read_elf(os.path.join(OBJ, "linking.bpf.o"))
    assert list(s.programs) == ["link_all"]  # the static function in "tc" is a subprogram
    names = [s.btf[t].name for _, t in s.programs["link_all"].func_info]
    assert sorted(names[1:]) == ["global_len", "in_section", "loop_cb", "sum_cb", "triple"]
    maps, progs, fds = _load_all(s)
    try:
        pkt = bytes(64)
        # in_section(100 * 3*(1+2+3+4) + (0+1+2+3+4)) + len * 100000
        assert _bpfsys.test_run(progs["link_all"], pkt) == 3010 + 1000 + 64 * 100000
    finally:
        for fd in fds:
            os.close(fd)

    s = read_elf(PROGS)
    maps, progs, fds = _load_all(s)
    try:
        assert _bpfsys.test_run(progs["tc_count"], bytes(64)) == U.TC_ACT_OK   # bump(45 & 7)
        assert _bpfsys.test_run(progs["xdp_drop"], bytes(64)) == U.XDP_DROP    # twice(1)
        assert _bpfsys.test_run(progs["xdp_pass"], bytes(64)) == U.XDP_PASS    # bump(0)
        hits = [struct.unpack("<Q", _bpfsys.map_lookup(maps["hits"], struct.pack("<I", i), 8))[0] for i in range(8)]
        assert hits == [3, 3, 3, 0, 0, 3, 0, 0]
    finally:
        for fd in fds:
            os.close(fd)


LEGACY_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def SEC("maps") counts = { BPF_MAP_TYPE_ARRAY, 4, 8, 2, 0 };
static __attribute__((noinline)) int sub(int x) { return x + 1; }
SEC("socket") int count(struct __sk_buff *skb) {
    __u32 k = 1; __u64 *v = bpf_map_lookup_elem(&counts, &k);
    if (v) *v += 1;
    return sub(skb->len);
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.skipif(not __import__("shutil").which("clang-19"), reason="needs clang-19")
def test_object_without_btf(tmp_path):
    """clang without -g: no .BTF; legacy maps and subprogram linking still work."""
    import subprocess

    src, obj = tmp_path / "legacy.bpf.c", tmp_path / "legacy.bpf.o"
    src.write_text(LEGACY_SRC)
    subprocess.run(["clang-19", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(src),
                    "-o", str(obj)], check=True)
    s = read_elf(str(obj))
    assert s.btf is None and s.types == {}
    m = s.maps["counts"]
    assert (m.type, m.key_size, m.value_size, m.max_entries, m.key_type) == (U.BPF_MAP_TYPE_ARRAY, 4, 8, 2, None)
    p = s.programs["count"]
    assert [(r.kind, r.target) for r in p.relocations] == [("map", "counts")]
    assert p.func_info == [] and p.func_info_raw == b"" and p.line_info == []
    calls = [i for i in range(p.insn_count) if insn(p, i)[0] == 0x85 and insn(p, i)[1] >> 4 == 1]
    assert len(calls) == 1 and calls[0] + insn(p, calls[0])[3] + 1 < p.insn_count
    if os.geteuid() == 0:
        fd_map = _bpfsys.map_create(m)
        fd, log = _bpfsys.prog_load(p, {"counts": fd_map})
        try:
            assert fd >= 0, log
            # sub(skb->len): a socket filter sees the packet after the 14-byte Ethernet header
            assert _bpfsys.test_run(fd, bytes(64)) == 64 - 14 + 1
            assert struct.unpack("<Q", _bpfsys.map_lookup(fd_map, struct.pack("<I", 1), 8))[0] == 1
        finally:
            os.close(fd_map)
            if fd >= 0:
                os.close(fd)


@root
def test_python_core_matches_the_kernel():
    """pybpfc.btf.core computes what the kernel's own CO-RE computes, kind by kind."""
    from pybpfc.btf import core, vmlinux

    s = read_elf(os.path.join(OBJ, "core.bpf.o"))
    p = s.programs["core_kinds"]
    kinds = {r.kind for r in p.core_relos}
    assert kinds >= {core.FIELD_BYTE_OFFSET, core.FIELD_BYTE_SIZE, core.FIELD_LSHIFT_U64,
                     core.FIELD_RSHIFT_U64, core.FIELD_SIGNED, core.TYPE_EXISTS, core.TYPE_SIZE,
                     core.ENUMVAL_EXISTS, core.ENUMVAL_VALUE}
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    bss = _bpfsys.map_create(s.maps[".bss"])
    fds = [btf_fd, bss]
    try:
        results = []
        for how in ("kernel", "python"):
            prog = s.copy().programs["core_kinds"]
            if how == "python":
                prog.insns = core.apply(prog, s.btf, vmlinux())
                prog.core_relos_raw = b""
            fd, log = _bpfsys.prog_load(prog, {".bss": bss}, btf_fd)
            assert fd >= 0, f"{how}: {log}"
            fds.append(fd)
            _bpfsys.map_update(bss, b"\0\0\0\0", bytes(s.maps[".bss"].value_size))
            _bpfsys.test_run(fd)
            data = _bpfsys.map_lookup(bss, b"\0\0\0\0", s.maps[".bss"].value_size)
            off = s.maps[".bss"].variables["vals"][0]
            results.append(struct.unpack_from("<12Q", data, off))
        assert results[0] == results[1]
        b = vmlinux()
        ts = b.find("task_struct")
        tgid = [m for m in ts.members if m.name == "tgid"][0].offset // 8
        assert results[0][0] == tgid and results[0][2] == 16 and results[0][8] == 1
        assert results[0][11] == U.BPF_MAP_TYPE_RINGBUF
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="kernel has no BTF")
def test_python_core_missing_field_poisons_and_bad_input_errors():
    from pybpfc.btf import core, vmlinux
    from pybpfc.errors import LoadError

    s = read_elf(os.path.join(OBJ, "core.bpf.o"))
    p = s.programs["read_tgid"]
    r = p.core_relos[0]
    assert (r.access, r.kind) == ("0:1", core.FIELD_BYTE_OFFSET)
    r.access = "0:2"  # no_such_field_in_kernel: an offset of a field the kernel lacks
    out = core.apply(p, s.btf, vmlinux())
    assert struct.unpack_from("<BBhi", out, r.insn * 8) == (0x85, 0, 0, core.POISON)
    r.access = "0:x"
    with pytest.raises(LoadError, match="bad access string"):
        core.apply(p, s.btf, vmlinux())
    r.access, r.insn = "0:1", 0  # instruction 0 is a helper call, not a patchable one
    with pytest.raises(LoadError, match=r"prog 'read_tgid': CO-RE field_byte_offset relocation on instruction 0 "
                                        r"\(opcode 0x85\) cannot be patched"):
        core.apply(p, s.btf, vmlinux())

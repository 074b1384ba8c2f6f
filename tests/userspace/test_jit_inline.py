"""Inlined bpf_map_lookup_elem for array and per-CPU array maps (the JIT's counterpart of the
kernel's array_map_gen_lookup): the same results, map contents and faults as the helper call
on the interpreter, and as the kernel where it runs."""
import os
import re
import struct

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.asm import assemble
from pybpfc.backends.userspace import UserspaceBackend, jit, userspace_available
from pybpfc.elf.spec import CollectionSpec, MapSpec, ProgramSpec, Relocation
from pybpfc.errors import RuntimeFault, VerifierError

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

ENTRIES, VALUE = 4, 12

# key = first 4 bytes of the packet; NULL -> 7777; else r0 = the value's first 8 bytes and
# value bytes 8..11 = key + 1
LOOKUP = """
    ldxw %r2, [%r1+0]
    ldxw %r3, [%r1+4]
    mov %r4, %r2
    add %r4, 4
    jgt %r4, %r3, short
    ldxw %r5, [%r2+0]
    stxw [%r10-4], %r5
    lddw %r1, map_fd(0)
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, null
    ldxdw %r6, [%r0+0]
    ldxw %r5, [%r10-4]
    add %r5, 1
    stxw [%r0+8], %r5
    mov %r0, %r6
    exit
null:
    mov %r0, 7777
    exit
short:
    mov %r0, 1
    exit
"""
LOOKUP_LDDW = 7  # instruction index of `lddw %r1, map_fd(0)`
KEYS = [0, 1, 3, 4, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def kernel_ok() -> bool:
    if os.geteuid() != 0:
        return False
    from pybpfc.backends.kernel import kernel_available
    return kernel_available()


def _spec(asm, mtype, lddw=LOOKUP_LDDW):
    spec = CollectionSpec()
    spec.maps["m"] = MapSpec("m", mtype, 4, VALUE, ENTRIES)
    insns = b"".join(i.encode() for i in assemble(asm))
    spec.programs["p"] = ProgramSpec("p", "xdp", U.BPF_PROG_TYPE_XDP, insns=insns,
                                     relocations=[Relocation(lddw, "map", "m")])
    return spec


def _backends():
    out = [("interpreter", lambda: UserspaceBackend(jit=False)),
           ("jit", lambda: UserspaceBackend(jit=True))]
    if kernel_ok():
        out.append(("kernel", lambda: "kernel"))
    return out


def _run_all(mtype, cpu=None):
    """{engine: ([retval per key], {key: value bytes})} after running every key once."""
    res = {}
    old = os.sched_getaffinity(0)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        for name, make in _backends():
            with pybpfc.load(_spec(LOOKUP, mtype), backend=make()) as c:
                p = c.programs.p
                if name == "jit":
                    assert p.raw.engine == "jit"
                m = c.maps.m.raw
                stride = 16 if mtype == U.BPF_MAP_TYPE_PERCPU_ARRAY else VALUE
                for k in range(ENTRIES):  # distinct first words: every slot, every CPU
                    m.update(struct.pack("<I", k), b"".join(
                        struct.pack("<Q", 100 * k + s) + bytes(stride - 8)
                        for s in range(len(m.lookup(struct.pack("<I", k))) // stride)), 0)
                rets = [p.test_run(struct.pack("<I", k) + bytes(60)).retval for k in KEYS]
                vals = {k: m.lookup(struct.pack("<I", k)) for k in range(ENTRIES)}
                res[name] = (rets, vals)
    finally:
        os.sched_setaffinity(0, old)
    return res


def test_array_lookup_matches_the_interpreter_and_the_kernel():
    res = _run_all(U.BPF_MAP_TYPE_ARRAY)
    rets, vals = res["interpreter"]
    assert rets == [0, 100, 300, 7777, 7777, 7777, 7777, 7777]  # NULL past max_entries
    assert vals[3][8:12] == struct.pack("<I", 4) and vals[2][8:12] == bytes(4)
    for name, got in res.items():
        assert got == res["interpreter"], name


@pytest.mark.parametrize("cpu", sorted(os.sched_getaffinity(0))[:2])
def test_percpu_lookup_uses_the_slot_of_the_running_cpu(cpu):
    res = _run_all(U.BPF_MAP_TYPE_PERCPU_ARRAY, cpu)
    rets, vals = res["interpreter"]
    slot = cpu % (len(vals[0]) // 16)
    assert rets == [slot, 100 + slot, 300 + slot] + [7777] * 5
    stride = 16  # round_up(VALUE, 8)
    for k in (0, 1, 3):  # only this CPU's slot was written
        for s in range(len(vals[k]) // stride):
            want = struct.pack("<I", k + 1) if s == slot else bytes(4)
            assert vals[k][s * stride + 8:s * stride + 12] == want, (k, s)
    for name, got in res.items():
        assert got == res["interpreter"], name


@pytest.mark.parametrize("mtype", [U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY])
def test_writes_past_the_value_area_and_bad_key_pointers_still_fault(mtype):
    past = LOOKUP.replace("stxw [%r0+8], %r5", "stxw [%r0+4096], %r5")
    # the key pointer is not memory of the program: the helper's check faults at the call
    badkey = LOOKUP.replace("mov %r2, %r10\n    add %r2, -4", "lddw %r2, 0x1234\n    add %r2, 0")
    for asm, lddw, pc, addr in ((past, LOOKUP_LDDW, 16, None), (badkey, LOOKUP_LDDW, 12, 0x1234)):
        faults = {}
        for engine in ("interpreter", "jit"):
            try:
                c = pybpfc.load(_spec(asm, mtype, lddw), backend=UserspaceBackend(jit=engine == "jit"))
            except VerifierError:
                pytest.fail("the runtime's verifier refused the test program")
            with c:
                assert c.programs.p.raw.engine == engine
                with pytest.raises(RuntimeFault) as e:
                    c.programs.p.test_run(struct.pack("<I", 1) + bytes(60))
                m = re.search(r"stopped at insn (\d+): memory access outside .*\(address (0x[0-9a-f]+)\)",
                              str(e.value))
                assert m, str(e.value)
                faults[engine] = (int(m.group(1)), int(m.group(2), 16))
        assert faults["jit"][0] == faults["interpreter"][0] == pc
        if addr is not None:
            assert faults["jit"][1] == faults["interpreter"][1] == addr


def test_only_known_array_maps_are_inlined():
    """Without map types (run->maps need not be store records) the JIT calls the helper; with
    them, array and per-CPU array lookups read the map record instead."""
    insns = b"".join(i.encode() for i in assemble(LOOKUP))
    rd = "llvm.x86.rdpid" if "+rdpid" in jit._host_features() else "llvm.x86.rdtscp"
    plain = jit.jit_compile(insns).ir
    arr = jit.jit_compile(insns, map_types=[U.BPF_MAP_TYPE_ARRAY]).ir
    pcpu = jit.jit_compile(insns, map_types=[U.BPF_MAP_TYPE_PERCPU_ARRAY]).ir
    hsh = jit.jit_compile(insns, map_types=[U.BPF_MAP_TYPE_HASH]).ir
    assert plain == hsh
    assert arr != plain and rd not in arr
    assert rd in pcpu


def test_map_record_offsets_match_the_header(tmp_path):
    """The struct pbs_map fields the inlined lookup reads are where the C header puts them."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fields = {"type": jit.MAP_OFF_TYPE, "value_size": jit.MAP_OFF_VALUE_SIZE,
              "max_entries": jit.MAP_OFF_MAX_ENTRIES, "self_off": jit.MAP_OFF_SELF_OFF,
              "value_stride": jit.MAP_OFF_VALUE_STRIDE, "ncpus": jit.MAP_OFF_NCPUS,
              "values_off": jit.MAP_OFF_VALUES_OFF}
    body = "".join(f'printf("{k} %zu\\n", offsetof(struct pbs_map, {k}));' for k in fields)
    src = tmp_path / "off.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "pybpfc_store.h"\n'
                   f"int main(void) {{ {body} return 0; }}\n")
    exe = tmp_path / "off"
    subprocess.run(["gcc", "-I", os.path.join(root, "runtime", "include"), str(src), "-o", str(exe)],
                   check=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True,
                                                      text=True).stdout.splitlines())
    assert {k: int(out[k]) for k in fields} == fields

"""CO-RE and kernel externs through pybpfc.load(..., backend="kernel"): clang objects whose local
struct layouts differ from the kernel's read the right fields; __kconfig / kfunc externs resolve."""
import os
import re
import shutil
import subprocess

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.errors import LoadError, NotSupportedError

from kernel_helpers import kernel_or_skip

OBJ = os.path.join(os.path.dirname(__file__), "..", "objects")
CLANG = shutil.which("clang-19")
needs_clang = pytest.mark.skipif(not CLANG, reason="needs clang-19")


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("kernel has no BTF (/sys/kernel/btf/vmlinux)")


@pytest.fixture(params=["kernel", "python"])
def core(request):
    """A kernel backend whose CO-RE relocations the kernel applies, or Python."""
    from pybpfc.backends.kernel import KernelBackend

    b = KernelBackend(core=request.param)
    yield b
    b.close()


def _build(tmp_path, name, src):
    c, o = tmp_path / f"{name}.bpf.c", tmp_path / f"{name}.bpf.o"
    c.write_text(src)
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(c), "-o", str(o)], check=True, capture_output=True)
    return str(o), str(c)


def _offset(t, name):
    """Bit offset of member `name` of vmlinux type t, through anonymous structs/unions."""
    from pybpfc.btf import vmlinux

    b = vmlinux()
    for m in b.resolve(t.id).members:
        if m.name == name:
            return m.offset
        if not m.name and b.resolve(m.type).kind in (4, 5):  # BTF_KIND_STRUCT, BTF_KIND_UNION
            inner = _offset(b.resolve(m.type), name)
            if inner is not None:
                return m.offset + inner
    return None


def test_core_read_gives_the_kernels_tgid(core):
    """The local task_struct says tgid is at offset 4; the kernel's is elsewhere."""
    with pybpfc.load(os.path.join(OBJ, "core.bpf.o"), backend=core) as obj:
        r = obj.programs.read_tgid.test_run()
        assert r.retval == os.getpid()
        g = obj.globals
        assert (g.seen_tgid, g.has_bogus, g.tgid_size) == (os.getpid(), 0, 4)


def test_core_kinds_match_the_kernel_btf(core):
    from pybpfc.btf import vmlinux

    b = vmlinux()
    ts, sk = b.find("task_struct"), b.find("sock_common")
    tgid, comm = _offset(ts, "tgid") // 8, _offset(ts, "comm") // 8
    bf = _offset(ts, "sched_reset_on_fork")
    daddr, family = _offset(sk, "skc_daddr") // 8, _offset(sk, "skc_family") // 8
    load_off = (bf // 8) // 4 * 4  # the unsigned int holding the bit
    with pybpfc.load(os.path.join(OBJ, "core.bpf.o"), backend=core) as obj:
        obj.programs.core_kinds.test_run()
        vals = list(obj.globals.vals)
    assert vals == [tgid, comm + 3, 16, daddr, family, 64 - (bf - load_off * 8 + 1), 63, 1, 1, sk.size, 1,
                    U.BPF_MAP_TYPE_RINGBUF]
    # the local layout says tgid at 0, skc_family at 4: the test tells whether CO-RE was applied
    assert vals[0] != 0 and vals[4] != 4


TRACE_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int tgid;
	struct task_struct *real_parent;
} __attribute__((preserve_access_index));

volatile const __u32 target_pid;
__u32 me, parent, hits;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	if (BPF_CORE_READ(t, tgid) != target_pid)
		return 0;
	me = BPF_CORE_READ(t, tgid);
	parent = BPF_CORE_READ(t, real_parent, tgid);
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@needs_clang
def test_core_in_a_real_tracepoint(core, tmp_path):
    """A chain of CO-RE reads (task->real_parent->tgid) from a tracepoint on getppid()."""
    o, _ = _build(tmp_path, "core_trace", TRACE_SRC)
    with pybpfc.load(o, backend=core, consts={"target_pid": os.getpid()}) as obj:
        obj.programs.on_getppid.attach()
        for _ in range(3):
            os.getppid()
        g = obj.globals
        assert g.hits >= 3
        assert (g.me, g.parent) == (os.getpid(), os.getppid())


GUARD_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int tgid;
	int pybpfc_no_such_field;
} __attribute__((preserve_access_index));

__u32 got = 7;

SEC("syscall")
int maybe(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

#ifdef GUARDED
	if (bpf_core_field_exists(t->pybpfc_no_such_field))
#endif
		got = BPF_CORE_READ(t, pybpfc_no_such_field);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@needs_clang
def test_unsatisfiable_relocation_is_a_clear_error(core, tmp_path):
    o, c = _build(tmp_path, "core_bad", GUARD_SRC)
    with pytest.raises(LoadError) as ei:
        pybpfc.load(o, backend=core)
    msg = str(ei.value)
    # clang attributes the relocated offset to the line that computes `t` (insn 1)
    line = GUARD_SRC.splitlines().index("\tstruct task_struct *t = (struct task_struct *)bpf_get_current_task();") + 1
    assert re.match(rf"prog 'maybe': CO-RE relocation cannot be satisfied at {re.escape(c)}:{line}:\d+ "
                    r"\(insn 1\): field_byte_offset of struct task_struct\.pybpfc_no_such_field: in the "
                    r"kernel's BTF: struct task_struct has no member 'pybpfc_no_such_field'", msg), msg
    assert msg.endswith("\n    struct task_struct *t = (struct task_struct *)bpf_get_current_task();")


@needs_clang
def test_guarded_missing_field_loads(core, tmp_path):
    """The same read behind bpf_core_field_exists(): dead code, the program loads and skips it."""
    o, _ = _build(tmp_path, "core_guarded", "#define GUARDED\n" + GUARD_SRC)
    with pybpfc.load(o, backend=core) as obj:
        obj.programs.maybe.test_run()
        assert obj.globals.got == 7


def _config():
    from pybpfc.btf.kernel import kernel_config

    cfg = kernel_config()
    if not cfg:
        pytest.skip("kernel config not readable (/proc/config.gz, /boot/config-*)")
    return cfg


def test_kconfig_and_kfuncs():
    cfg = _config()
    with pybpfc.load(os.path.join(OBJ, "externs.bpf.o"), backend="kernel", unsupported="ignore") as obj:
        obj.programs.uses_externs.test_run()
        out = list(obj.globals.out)
    rel = [int(x) for x in os.uname().release.split("-")[0].split(".")[:3]]
    assert out[0] == (rel[0] << 16) | (rel[1] << 8) | min(rel[2], 255)
    assert out[1] == int(cfg["CONFIG_HZ"])
    assert out[2] == (cfg.get("CONFIG_BPF_SYSCALL") == "y")
    assert out[3] == 0  # __weak, not in the config


def test_typed_ksym():
    _config()
    try:
        obj = pybpfc.load(os.path.join(OBJ, "externs.bpf.o"), backend="kernel")
    except NotSupportedError as e:
        assert str(e).startswith("prog 'uses_ksym': typed __ksym 'bpf_prog_active'")
        pytest.skip(f"{e}")
    with obj:
        obj.programs.uses_ksym.test_run()
        assert obj.globals.out[4] >= 100


EXTERN_BAD = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
%s
__u64 out;
SEC("syscall")
int bad(void *ctx)
{
	%s
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


@needs_clang
@pytest.mark.parametrize("decl,use,err", [
    ("extern int CONFIG_PYBPFC_MISSING __kconfig;", "out = CONFIG_PYBPFC_MISSING;",
     "map '.kconfig': CONFIG_PYBPFC_MISSING is not set in the kernel config"),
    ("extern void pybpfc_no_such_kfunc(void) __ksym;", "pybpfc_no_such_kfunc();",
     "prog 'bad': kfunc 'pybpfc_no_such_kfunc' is not in this kernel's BTF"),
], ids=["kconfig", "kfunc"])
def test_unresolvable_externs_are_clear_errors(tmp_path, decl, use, err):
    _config()
    o, _ = _build(tmp_path, "extern_bad", EXTERN_BAD % (decl, use))
    with pytest.raises(LoadError, match="^" + re.escape(err)):
        pybpfc.load(o, backend="kernel")


ENUM_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

enum pybpfc_missing_enum { PYBPFC_A = 5 };

__u64 got = 7;

SEC("syscall")
int enum_value(void *ctx)
{
#ifdef GUARDED
	if (bpf_core_enum_value_exists(enum pybpfc_missing_enum, PYBPFC_A))
#endif
		got = bpf_core_enum_value(enum pybpfc_missing_enum, PYBPFC_A);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@needs_clang
def test_missing_enum_value_on_a_64_bit_load(core, tmp_path):
    """enum values relocate a 64-bit immediate load (two instruction slots): unresolved, it is
    still a clear error, and a guarded one leaves a program the kernel accepts."""
    o, _ = _build(tmp_path, "enum_bad", ENUM_SRC)
    with pytest.raises(LoadError, match=r"^prog 'enum_value': CO-RE relocation cannot be satisfied at .*"
                                        r"enumval_value of enum pybpfc_missing_enum::PYBPFC_A: the kernel "
                                        r"has no type enum pybpfc_missing_enum"):
        pybpfc.load(o, backend=core)
    o, _ = _build(tmp_path, "enum_guarded", "#define GUARDED\n" + ENUM_SRC)
    with pybpfc.load(o, backend=core) as obj:
        obj.programs.enum_value.test_run()
        assert obj.globals.got == 7


def test_extern_relocation_on_the_wrong_instruction():
    from pybpfc.elf import read_elf

    _config()
    s = read_elf(os.path.join(OBJ, "externs.bpf.o"))
    del s.programs["uses_ksym"]
    p = s.programs["uses_externs"]
    r = next(r for r in p.relocations if r.kind == "kfunc")
    r.insn = p.insn_count - 1  # the exit
    with pytest.raises(LoadError, match=rf"^prog 'uses_externs': kfunc relocation for 'bpf_rcu_read_lock' "
                                        rf"at insn {r.insn} is not on a call$"):
        pybpfc.load(s, backend="kernel")

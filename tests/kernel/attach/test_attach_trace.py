"""Tracing attach points against the real kernel: tracepoint, raw tracepoint, perf event,
uprobe/uretprobe (a C program built here, and libc), kprobe (absent here), link pinning."""
import ctypes
import os
import re
import shutil
import subprocess

import pytest
from attach_asm import (PT_REGS_AX, PT_REGS_DI, counter, probe_summer, raw_syscall_counter,
                        wait_link_gone)

from pybpfc import uapi as U
from pybpfc.backends.kernel import syscall as S
from pybpfc.backends.kernel import tracefs
from pybpfc.backends.kernel.attach import AttachMixin, FdLink, MultiLink, kprobe, perf_event
from pybpfc.errors import AttachError, NotSupportedError
from pybpfc.errors import Error as pybpfc_Error

A = AttachMixin()
N = 37
NR_GETPPID = 110  # x86_64


def test_perf_constants_match_header():
    hdr = open("/usr/include/linux/perf_event.h").read()
    for name in ("PERF_TYPE_HARDWARE", "PERF_TYPE_SOFTWARE", "PERF_TYPE_TRACEPOINT",
                 "PERF_COUNT_SW_CPU_CLOCK", "PERF_COUNT_SW_BPF_OUTPUT"):
        m = re.search(rf"\b{name}\s*=\s*(\d+)", hdr)
        assert m and int(m.group(1)) == getattr(perf_event, name), name
    assert "PERF_EVENT_IOC_SET_BPF\t\t\t_IOW('$', 8, __u32)" in hdr
    assert perf_event.PERF_EVENT_IOC_SET_BPF == (1 << 30) | (4 << 16) | (ord("$") << 8) | 8
    assert re.search(r"PERF_FLAG_FD_CLOEXEC\s+\(1UL << 3\)", hdr)
    assert re.search(r"SO_ATTACH_BPF\s+50", open("/usr/include/asm-generic/socket.h").read())
    if platform_is_x86_64():
        assert re.search(r"__NR_getppid 110\b", open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").read())


def platform_is_x86_64():
    import platform

    return platform.machine() == "x86_64"


def test_tracepoint_counts_syscalls_and_detaches(counters, progs):
    p = progs(U.BPF_PROG_TYPE_TRACEPOINT, counter(counters, pid=os.getpid()), "tp_getppid")
    link = A.attach_tracepoint(p, "syscalls", "sys_enter_getppid")
    assert isinstance(link, FdLink) and link.kind == "tracepoint"
    for _ in range(N):
        os.getppid()
    link.close()
    assert counters[0] == N
    os.getppid()
    assert counters[0] == N, "still attached after close()"


def test_tracepoint_link_pin_keeps_it_attached(counters, progs, tmp_path):
    p = progs(U.BPF_PROG_TYPE_TRACEPOINT, counter(counters, pid=os.getpid()), "tp_pin")
    pin = f"/sys/fs/bpf/pybpfc_attach_test_{os.getpid()}"
    link = A.attach_tracepoint(p, "syscalls", "sys_enter_getppid")
    link_id = link.id
    try:
        link.pin(pin)
        link.close()
        for _ in range(5):
            os.getppid()
        assert counters[0] == 5
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
    assert wait_link_gone(link_id), "link still exists after its pin was removed"



def test_tracepoint_errors_name_the_problem(counters, progs):
    p = progs(U.BPF_PROG_TYPE_TRACEPOINT, counter(counters), "tp_bad")
    with pytest.raises(AttachError, match=r"prog 'tp_bad': tracepoint syscalls/sys_enter_nope: no such tracepoint"):
        A.attach_tracepoint(p, "syscalls", "sys_enter_nope")
    with pytest.raises(AttachError, match=r"no tracepoint category 'nocat'"):
        A.attach_tracepoint(p, "nocat", "x")
    with pytest.raises(AttachError, match=r"not a valid name"):
        A.attach_tracepoint(p, "..", "x")


def test_tracefs_ids_and_trace_pipe_parse():
    assert tracefs.event_id("syscalls", "sys_enter_getppid") > 0
    assert "sys_enter_getppid" in tracefs.events("syscalls")
    task, msg = tracefs.parse_trace_line(
        "          python3-4242    [001] d..31  1234.5: bpf_trace_printk: hello world")
    assert (task, msg) == ("python3-4242", "hello world")


def test_raw_tracepoint_filters_by_syscall_number(counters, progs):
    p = progs(U.BPF_PROG_TYPE_RAW_TRACEPOINT, raw_syscall_counter(counters, NR_GETPPID, os.getpid()),
              "raw_sys_enter")
    with A.attach_raw_tracepoint(p, "sys_enter") as link:
        assert link.kind == "raw_tracepoint"
        for _ in range(N):
            os.getppid()
        os.getpid()
    assert counters[0] == N
    with pytest.raises(AttachError, match="prog 'raw_sys_enter': no raw tracepoint 'no_such_tp'"):
        A.attach_raw_tracepoint(p, "no_such_tp")


def test_perf_event_software_clock(counters, progs):
    p = progs(U.BPF_PROG_TYPE_PERF_EVENT, counter(counters), "perf_clock")
    link = A.attach_perf_event(p, type=perf_event.PERF_TYPE_SOFTWARE,
                               config=perf_event.PERF_COUNT_SW_CPU_CLOCK,
                               sample_period=100_000, pid=os.getpid())
    x = 0
    for i in range(200):           # spin until samples arrive (bounded, no timing assumption)
        x += sum(range(20000))
        if counters[0] >= 3:
            break
    link.close()
    n = counters[0]
    assert n >= 3
    x += sum(range(2_000_000))
    assert counters[0] == n, "samples after close()"


def test_perf_event_all_cpus_is_one_link_per_cpu(counters, progs):
    p = progs(U.BPF_PROG_TYPE_PERF_EVENT, counter(counters), "perf_allcpu")
    link = A.attach_perf_event(p, type=perf_event.PERF_TYPE_SOFTWARE,
                               config=perf_event.PERF_COUNT_SW_CPU_CLOCK, sample_freq=1000)
    try:
        ncpu = len(perf_event.online_cpus())
        if ncpu > 1:
            assert isinstance(link, MultiLink) and len(link.links) == ncpu
    finally:
        link.close()
    with pytest.raises(AttachError, match="needs sample_period or sample_freq"):
        A.attach_perf_event(p, type=1, config=0)


TARGET_C = r"""
#include <stdlib.h>
__attribute__((noinline)) long pybpfc_target(long x) { __asm__ volatile(""); return x * 3; }
int main(int argc, char **argv) {
    long n = atol(argv[1]), s = 0;
    for (long i = 1; i <= n; i++) s += pybpfc_target(i);
    return s == n * (n + 1) / 2 * 3 ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def target_bin(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is missing")
    d = tmp_path_factory.mktemp("uprobe")
    (d / "target.c").write_text(TARGET_C)
    subprocess.run(["gcc", "-O1", "-o", str(d / "target"), str(d / "target.c")], check=True)
    return str(d / "target")


def test_uprobe_and_uretprobe_on_built_program(counters, progs, target_bin):
    entry = progs(U.BPF_PROG_TYPE_KPROBE, probe_summer(counters, PT_REGS_DI, 1), "up_entry")
    from attach_asm import Counters

    rc = Counters()
    try:
        ret = progs(U.BPF_PROG_TYPE_KPROBE, probe_summer(rc, PT_REGS_AX, 1), "up_ret")
        with A.attach_uprobe(entry, target_bin, "pybpfc_target"), \
                A.attach_uprobe(ret, target_bin, "pybpfc_target", retprobe=True):
            subprocess.run([target_bin, str(N)], check=True)
        assert counters[0] == N and counters[1] == N * (N + 1) // 2
        assert rc[0] == N and rc[1] == 3 * N * (N + 1) // 2
    finally:
        rc.close()


def test_uprobe_pid_filter(counters, progs, target_bin):
    p = progs(U.BPF_PROG_TYPE_KPROBE, probe_summer(counters, PT_REGS_DI, 1), "up_pid")
    other = subprocess.Popen(["sleep", "30"])
    try:
        with A.attach_uprobe(p, target_bin, "pybpfc_target", pid=other.pid) as link:
            assert f"pid {other.pid}" in link.target
            subprocess.run([target_bin, "5"], check=True)
        assert counters[0] == 0
    finally:
        other.kill()
        other.wait()


def test_uprobe_on_libc_by_name(counters, progs):
    libc = ctypes.CDLL("libc.so.6")
    me = os.getpid()
    entry = progs(U.BPF_PROG_TYPE_KPROBE, probe_summer(counters, PT_REGS_AX, 1, pid=me), "up_libc")
    ret_c = __import__("attach_asm").Counters()
    try:
        ret = progs(U.BPF_PROG_TYPE_KPROBE, probe_summer(ret_c, PT_REGS_AX, 1, pid=me), "ur_libc")
        with A.attach_uprobe(entry, "libc", "getppid"), \
                A.attach_uprobe(ret, "libc", "getppid", retprobe=True, pid=me):
            for _ in range(N):
                libc.getppid()
        assert counters[0] == N
        assert ret_c[0] == N and ret_c[1] == N * os.getppid()
    finally:
        ret_c.close()


def test_uprobe_errors_name_the_problem(counters, progs, target_bin):
    p = progs(U.BPF_PROG_TYPE_KPROBE, counter(counters), "up_bad")
    with pytest.raises(AttachError, match=r"prog 'up_bad': uprobe .*:no_such_fn: .*'no_such_fn'"):
        A.attach_uprobe(p, target_bin, "no_such_fn")
    with pytest.raises(AttachError, match=r"prog 'up_bad': uprobe /nonexistent/bin:main: "):
        A.attach_uprobe(p, "/nonexistent/bin", "main")


def test_kprobe_reports_missing_pmu(counters, progs):
    p = progs(U.BPF_PROG_TYPE_KPROBE, counter(counters), "kp")
    why = kprobe.unsupported_reason()
    if why is None:
        pytest.skip("this kernel has kprobes; the kprobe attach path is exercised elsewhere")
    with pytest.raises(NotSupportedError, match=r"prog 'kp': kprobe do_sys_openat2: the kernel has no kprobe PMU"):
        A.attach_kprobe(p, "do_sys_openat2")
    with pytest.raises(NotSupportedError, match="kretprobe"):
        A.attach_kprobe(p, "do_sys_openat2", retprobe=True)


def test_tracefs_is_mounted_when_missing():
    import shutil as _sh
    import sys

    if os.geteuid() != 0 or not _sh.which("unshare") or not _sh.which("umount"):
        pytest.skip("needs root, unshare(1) and umount(8)")
    want = tracefs.event_id("syscalls", "sys_enter_getppid")
    # In a private mount namespace: take tracefs away, then ask for an event id.
    code = ("import subprocess; subprocess.run(['umount', '/sys/kernel/tracing'], check=True); "
            "import os; assert not os.path.isdir('/sys/kernel/tracing/events'); "
            "from pybpfc.backends.kernel import tracefs; "
            "print(tracefs.root(), tracefs.event_id('syscalls', 'sys_enter_getppid'))")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/sys/kernel/tracing", str(want)]


def test_trace_pipe_lines_from_trace_printk(counters, progs):
    from attach_asm import R1, R2, R10, Asm, add_imm, call, exit_, mov_imm, mov_reg, pid_filter, st_w

    from pybpfc.backends.kernel import KernelBackend

    a = Asm()
    pid_filter(a, os.getpid(), "out")
    a += st_w(R10, -8, int.from_bytes(b"pbat", "little"))
    a += st_w(R10, -4, int.from_bytes(b"-ok\0", "little"))
    a += mov_reg(R1, R10)
    a += add_imm(R1, -8)
    a += mov_imm(R2, 8)
    a += call(U.HELPERS["trace_printk"])
    a.label("out")
    a += mov_imm(0, 0)
    a += exit_()
    p = progs(U.BPF_PROG_TYPE_TRACEPOINT, a.assemble(), "tp_printk")
    lines = KernelBackend().trace_pipe_lines(timeout=2)
    with A.attach_tracepoint(p, "syscalls", "sys_enter_getppid"):
        for _ in range(3):
            os.getppid()
    mine = []
    for line in lines:
        task, msg = tracefs.parse_trace_line(line)
        if msg == "pbat-ok" and task.endswith(f"-{os.getpid()}"):
            mine.append(line)
            if len(mine) == 3:
                break
    lines.close()
    assert len(mine) == 3
    # one reader at a time: the second gets a clear error
    pipe = tracefs.TracePipe()
    try:
        with pytest.raises(pybpfc_Error, match=r"trace_pipe: another reader has it open \(EBUSY\)"):
            tracefs.TracePipe()
    finally:
        pipe.close()


def test_perf_event_hardware_is_probed_not_guessed(counters, progs):
    p = progs(U.BPF_PROG_TYPE_PERF_EVENT, counter(counters), "perf_hw")
    try:
        link = A.attach_perf_event(p, type=perf_event.PERF_TYPE_HARDWARE,
                                   config=perf_event.PERF_COUNT_HW_CPU_CYCLES,
                                   sample_period=1_000_000, cpu=0)
    except NotSupportedError as e:
        assert str(e).startswith("prog 'perf_hw': perf_event type=0,config=0 cpu 0: perf_event_open failed: ")
        assert getattr(e, "errno", 0) in (2, 95, 19)
        return
    link.close()


def test_uprobe_cookie_reaches_the_program(counters, progs, target_bin):
    from attach_asm import R0, R1, R6, R7, Asm, add_to_slot, call, exit_, mov_imm, mov_reg

    a = Asm()
    a += mov_reg(R6, R1)
    a += mov_reg(R1, R6)
    a += call(U.HELPERS["get_attach_cookie"])
    a += mov_reg(R7, R0)
    add_to_slot(a, counters.fd, 0)
    add_to_slot(a, counters.fd, 1, src_reg=R7)
    a += mov_imm(R0, 0)
    a += exit_()
    p = progs(U.BPF_PROG_TYPE_KPROBE, a.assemble(), "up_cookie")
    with A.attach_uprobe(p, target_bin, "pybpfc_target", cookie=0xC0FFEE):
        subprocess.run([target_bin, "4"], check=True)
    assert counters[0] == 4 and counters[1] == 4 * 0xC0FFEE


@pytest.mark.parametrize("retprobe", [False, True])
def test_kprobe_counts_syscalls(counters, progs, retprobe):
    why = kprobe.unsupported_reason()
    if why:
        pytest.skip(f"kprobes: {why}")
    p = progs(U.BPF_PROG_TYPE_KPROBE, counter(counters, pid=os.getpid()), "kp_getppid")
    with A.attach_kprobe(p, "__x64_sys_getppid", retprobe=retprobe) as link:
        assert link.kind == ("kretprobe" if retprobe else "kprobe")
        for _ in range(N):
            os.getppid()
    os.getppid()
    assert counters[0] == N

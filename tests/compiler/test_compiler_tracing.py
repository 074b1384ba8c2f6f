"""Tracing programs compiled by pybpfc, attached in the kernel and triggered by real events."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

import pytest

from compiler_helpers import load, needs_kernel

pytestmark = needs_kernel


def test_tracepoint_counts_openat_per_process(tmp_path):
    obj = load(tmp_path, """
counts = HashMap(u32, u64, max_entries=1024)
flags_seen = HashMap(u32, u32, max_entries=1024)

@bpf.tracepoint("syscalls/sys_enter_openat")
def count_opens(ctx) -> int:
    pid = bpf.get_current_pid_tgid() >> 32
    counts[pid] += 1
    flags_seen[pid] = ctx.flags
    return 0
""")
    with obj:
        obj.attach_all()
        for _ in range(5):
            fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            os.close(fd)
        assert obj.maps.counts[os.getpid()] >= 5
        assert obj.maps.flags_seen[os.getpid()] & os.O_CLOEXEC


def test_execve_ringbuf_event_with_filename(tmp_path):
    obj = load(tmp_path, """
class Event(Struct):
    pid: u32
    uid: u32
    ts: u64
    comm: Str[16]
    filename: Str[128]

events = RingBuf(max_entries=64 * 1024)

@bpf.tracepoint("syscalls/sys_enter_execve")
def on_execve(ctx) -> int:
    e = events.reserve(Event)
    if e is None:
        return 0
    e.pid = bpf.tgid()
    e.uid = bpf.uid()
    e.ts = bpf.ktime_ns()
    e.comm = bpf.comm()
    bpf.probe_read_user_str(e.filename, ctx.filename)
    events.submit(e)
    return 0
""")
    assert obj.spec.maps["events"].event_type.__name__ == "Event"
    with obj:
        obj.attach_all()
        rb = obj.ringbuf("events")
        p = subprocess.run(["/bin/true"], check=True)
        assert p.returncode == 0
        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.filename == b"/bin/true" for e in got):
            got += rb.poll(timeout=0.2)
        ev = [e for e in got if e.filename == b"/bin/true"]
        assert ev, got
        assert ev[0].uid == os.getuid() and ev[0].ts > 0


def test_uprobe_typed_args_and_histogram(tmp_path):
    obj = load(tmp_path, """
sizes = Histogram(u64)
last = HashMap(u32, u64, max_entries=16)
returned = LruHashMap(u64, u32, max_entries=4096)

@bpf.uprobe("libc:malloc")
def on_malloc(size: u64) -> int:
    if bpf.pid() == TARGET:
        sizes.record(size)
        if size > 3000000:
            last[0] = size
    return 0

@bpf.uretprobe("libc:malloc")
def on_malloc_ret(ctx, ret: u64) -> int:
    if bpf.pid() == TARGET and ret != 0 and ctx.ax == ret and ctx.sp != 0:
        returned[ret] = 1
    return 0
""".replace("TARGET", str(os.getpid())))
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    with obj:
        obj.attach_all()
        ptrs = [libc.malloc(n) for n in (3000001, 3000002, 5 << 20)]
        for p in ptrs:
            libc.free(p)
        h = obj.maps.sizes
        counts = [h[i] for i in range(65)]
        # 3000001 and 3000002 are in bucket floor(log2)+1 = 22, 5 MiB in bucket 23
        assert counts[22] >= 2 and counts[23] >= 1
        assert obj.maps.last[0] == 5 << 20
        assert all(obj.maps.returned.get(p) == 1 for p in ptrs)


def test_print_goes_to_trace_pipe_and_compiles(tmp_path):
    from compiler_helpers import write
    import pybpfc
    path = write(tmp_path, """
@bpf.tracepoint("syscalls/sys_enter_getppid")
def hello(ctx) -> int:
    pid = bpf.pid()
    print(f"getppid from {pid} {pid:x}", bpf.comm())
    return 0
""")
    ir = pybpfc.compile(path, emit="ir").decode()
    assert 'c"getppid from %llu %llx %s\\0A\\00"' in ir
    with pybpfc.load(path, backend="kernel") as obj:
        obj.attach_all()
        os.getppid()


def test_raw_tracepoint_and_perf_event_array(tmp_path):
    obj = load(tmp_path, """
class Ev(Struct):
    id: i64
    pid: u32

out = PerfEventArray()

@bpf.raw_tracepoint("sys_enter")
def on_sys(ctx, regs: u64, id: i64) -> int:
    if bpf.pid() == TARGET and id == 110:
        out.output(ctx, Ev(id=id, pid=bpf.pid()))
    return 0
""".replace("TARGET", str(os.getpid())))
    with obj:
        obj.attach_all()
        rb = obj.ringbuf("out")
        os.getppid()   # syscall 110 on x86-64
        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not got:
            got += rb.poll(timeout=0.2)
        assert got and got[0].id == 110 and got[0].pid == os.getpid()


def test_probe_read_user_into_int_variable_and_struct(tmp_path):
    buf = ctypes.create_string_buffer((0x1122334455667788).to_bytes(8, "little") + b"hello\0")
    addr = ctypes.addressof(buf)
    obj = load(tmp_path, """
class Msg(Struct):
    n: u64
    text: Str[8]

out = HashMap(u32, u64, max_entries=4)
msgs = HashMap(u32, Msg, max_entries=4)

@bpf.tracepoint("syscalls/sys_enter_getppid")
def p(ctx) -> int:
    if bpf.pid() != TARGET:
        return 0
    x: u64 = 0
    bpf.probe_read_user(x, ADDR)
    out[0] = x
    m = Msg()
    bpf.probe_read_user(m, ADDR)
    msgs[0] = m
    return 0
""".replace("TARGET", str(os.getpid())).replace("ADDR", str(addr)))
    with obj:
        obj.attach_all()
        os.getppid()
        assert obj.maps.out[0] == 0x1122334455667788
        assert obj.maps.msgs[0].text == b"hello"


def test_stack_ids_and_per_cpu_hash(tmp_path):
    obj = load(tmp_path, """
stacks = StackTraceMap(max_entries=64)
ids = HashMap(u32, i64, max_entries=4)
calls = PerCpuHashMap(u32, u64, max_entries=4)

@bpf.tracepoint("syscalls/sys_enter_getppid")
def p(ctx) -> int:
    if bpf.pid() != TARGET:
        return 0
    ids[0] = stacks.get_stackid(ctx, 1 << 8)     # BPF_F_USER_STACK
    calls[7] += 1
    return 0
""".replace("TARGET", str(os.getpid())))
    with obj:
        obj.attach_all()
        for _ in range(3):
            os.getppid()
        sid = obj.maps.ids[0]
        assert sid >= 0
        frames = obj.maps.stacks.raw.lookup(sid.to_bytes(4, "little"))
        assert int.from_bytes(frames[:8], "little") != 0       # a user-space return address
        assert obj.maps.calls.sum(7) == 3


def test_perf_event_samples_this_process(tmp_path):
    obj = load(tmp_path, """
samples = ArrayMap(u32, u64, max_entries=2)

@bpf.perf_event
def on_sample(ctx) -> int:
    if bpf.pid() == TARGET:
        samples[0] += 1
        if ctx.sample_period > 0 and ctx.ip != 0:
            samples[1] += 1
    return 0
""".replace("TARGET", str(os.getpid())))
    with obj:
        # PERF_TYPE_SOFTWARE / PERF_COUNT_SW_TASK_CLOCK, sampled in this process only
        obj.programs.on_sample.attach_perf_event(type=1, config=1, sample_period=100_000, pid=os.getpid())
        deadline = time.monotonic() + 10
        x = 0
        while obj.maps.samples[0] < 3 and time.monotonic() < deadline:
            for i in range(100_000):
                x += i
        assert obj.maps.samples[0] >= 3
        with_ip = obj.maps.samples[1]       # read first: sampling goes on while we look
        assert 1 <= with_ip <= obj.maps.samples[0]

"""Hand-assembled test programs for the attach tests, loaded straight through
pybpfc.backends.kernel.syscall, so these tests need neither the compiler nor the ELF reader.

Each program counts into an 8-slot u64 array map: slot 0 = hits, others as documented.
"""
from __future__ import annotations

import ctypes
import errno
import struct
import time
from types import SimpleNamespace

from pybpfc import uapi as U
from pybpfc.backends.kernel import syscall as S
from pybpfc.errors import Error

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
HELPER_LOOKUP, HELPER_PID_TGID = 1, 14


def ins(op, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def mov_imm(d, imm): return ins(0xb7, d, imm=imm)
def mov_reg(d, s): return ins(0xbf, d, s)
def add_imm(d, imm): return ins(0x07, d, imm=imm)
def rsh_imm(d, imm): return ins(0x77, d, imm=imm)
def ldx(size, d, s, off): return ins({1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}[size], d, s, off)
def st_w(d, off, imm): return ins(0x62, d, off=off, imm=imm)
def call(h): return ins(0x85, imm=h)
def jeq_imm(d, imm, off): return ins(0x15, d, off=off, imm=imm)
def jne_imm(d, imm, off): return ins(0x55, d, off=off, imm=imm)
def jgt_imm(d, imm, off): return ins(0x25, d, off=off, imm=imm)
def jgt_reg(d, s, off): return ins(0x2d, d, s, off=off)
def atomic_add64(d, s, off=0): return ins(0xdb, d, s, off, 0)
def exit_(): return ins(0x95)
def ld_map_fd(d, fd): return ins(0x18, d, 1, 0, fd) + ins(0, 0, 0, 0, 0)


class Asm:
    """Straight-line assembly with forward jumps to named labels."""

    def __init__(self):
        self.items: list = []

    def __iadd__(self, b):
        self.items.append(b)
        return self

    def jump(self, maker, *args, label: str):
        self.items.append((maker, args, label))
        return self

    def label(self, name: str):
        self.items.append(name)
        return self

    def assemble(self) -> bytes:
        pos, labels = 0, {}
        for it in self.items:
            if isinstance(it, str):
                labels[it] = pos
            else:
                pos += 1 if isinstance(it, tuple) else len(it) // 8
        out, pos = [], 0
        for it in self.items:
            if isinstance(it, str):
                continue
            if isinstance(it, tuple):
                maker, args, label = it
                out.append(maker(*args, labels[label] - pos - 1))
                pos += 1
            else:
                out.append(it)
                pos += len(it) // 8
        return b"".join(out)


def add_to_slot(a: Asm, map_fd: int, slot: int, src_reg=None, value=1):
    """map[slot] += src_reg (or the constant). Clobbers r1-r5, r0; src_reg must be >= r6."""
    a += ld_map_fd(R1, map_fd)
    a += mov_reg(R2, R10)
    a += add_imm(R2, -4)
    a += st_w(R10, -4, slot)
    a += call(HELPER_LOOKUP)
    lab = f"skip{len(a.items)}"
    a.jump(jeq_imm, R0, 0, label=lab)
    if src_reg is None:
        a += mov_imm(R1, value)
        a += atomic_add64(R0, R1)
    else:
        a += atomic_add64(R0, src_reg)
    a.label(lab)


def pid_filter(a: Asm, pid: int, label: str):
    """Jump to `label` unless the current process (tgid) is `pid`. Clobbers r0."""
    a += call(HELPER_PID_TGID)
    a += rsh_imm(R0, 32)
    a.jump(jne_imm, R0, pid, label=label)


class Loaded:
    """What the attach code needs of a RawProgram: .fd, .name, .spec."""

    def __init__(self, fd, name, prog_type, expected_attach_type=0, kind="", attach_to=""):
        self.fd, self.name = fd, name
        self.spec = SimpleNamespace(name=name, type=prog_type, kind=kind, attach_to=attach_to,
                                    expected_attach_type=expected_attach_type, section=kind)

    def close(self):
        S.close_fd(self.fd)
        self.fd = -1


class LoadRefused(Exception):
    pass


def load(prog_type: int, insns: bytes, name: str, expected_attach_type: int = 0, kind: str = "",
         attach_to: str = "", attach_btf_id: int = 0) -> Loaded:
    log = ctypes.create_string_buffer(1 << 16)
    fd, _ = S.prog_load(prog_type, insns, "GPL", name, log_level=1, log_buf=log,
                        expected_attach_type=expected_attach_type, attach_btf_id=attach_btf_id)
    if fd < 0:
        raise LoadRefused(f"prog load {name} failed: {S.errno_text(-fd)}\n{log.value.decode()}")
    return Loaded(fd, name, prog_type, expected_attach_type, kind, attach_to)


class Counters:
    """The u64[8] array map the programs count into."""

    def __init__(self):
        self.fd = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 8, 8, name="attach_cnt")

    def __getitem__(self, i) -> int:
        v = S.map_lookup_elem(self.fd, struct.pack("<I", i), 8)
        return struct.unpack("<Q", v)[0]

    def close(self):
        S.close_fd(self.fd)


# -- the programs ----------------------------------------------------------------------------

def counter(m: Counters, ret: int = 0, pid: int = 0) -> bytes:
    """slot0 += 1 (only for process `pid` when given); return `ret`."""
    a = Asm()
    if pid:
        pid_filter(a, pid, "out")
    add_to_slot(a, m.fd, 0)
    a.label("out")
    a += mov_imm(R0, ret)
    a += exit_()
    return a.assemble()


def raw_syscall_counter(m: Counters, nr: int, pid: int) -> bytes:
    """raw_tp sys_enter: slot0 += 1 for syscall `nr` from process `pid` (args[1] = id)."""
    a = Asm()
    a += mov_reg(R6, R1)
    pid_filter(a, pid, "out")
    a += ldx(8, R1, R6, 8)
    a.jump(jne_imm, R1, nr, label="out")
    add_to_slot(a, m.fd, 0)
    a.label("out")
    a += mov_imm(R0, 0)
    a += exit_()
    return a.assemble()


PT_REGS_DI, PT_REGS_AX = 112, 80   # x86_64 struct pt_regs


def probe_summer(m: Counters, regs_off: int, sum_slot: int, pid: int = 0) -> bytes:
    """(u)probe: slot0 += 1, slot[sum_slot] += pt_regs field at regs_off."""
    a = Asm()
    a += mov_reg(R6, R1)
    if pid:
        pid_filter(a, pid, "out")
    add_to_slot(a, m.fd, 0)
    a += ldx(8, R7, R6, regs_off)
    add_to_slot(a, m.fd, sum_slot, src_reg=R7)
    a.label("out")
    a += mov_imm(R0, 0)
    a += exit_()
    return a.assemble()


def udp_port_counter(m: Counters, port: int, data_off: int, end_off: int, hit_ret: int,
                     miss_ret: int) -> bytes:
    """XDP (data_off 0, end_off 4) or tc (__sk_buff: 76, 80): for IPv4 UDP to `port`
    (IHL 5), slot0 += 1 and return hit_ret; everything else returns miss_ret."""
    a = Asm()
    a += ldx(4, R2, R1, data_off)
    a += ldx(4, R3, R1, end_off)
    a += mov_reg(R4, R2)
    a += add_imm(R4, 42)
    a.jump(jgt_reg, R4, R3, label="miss")
    a += ldx(2, R5, R2, 12)
    a.jump(jne_imm, R5, 0x0008, label="miss")           # ETH_P_IP, big endian
    a += ldx(1, R5, R2, 23)
    a.jump(jne_imm, R5, 17, label="miss")                # IPPROTO_UDP
    a += ldx(2, R5, R2, 36)
    a.jump(jne_imm, R5, int.from_bytes(port.to_bytes(2, "big"), "little"), label="miss")
    add_to_slot(a, m.fd, 0)
    a += mov_imm(R0, hit_ret)
    a += exit_()
    a.label("miss")
    a += mov_imm(R0, miss_ret)
    a += exit_()
    return a.assemble()


def length_filter(m: Counters, max_len: int) -> bytes:
    """socket filter: slot0 += 1; keep packets up to max_len bytes (skb->len), drop longer."""
    a = Asm()
    a += mov_reg(R6, R1)
    add_to_slot(a, m.fd, 0)
    a += ldx(4, R0, R6, 0)                                # __sk_buff.len
    a.jump(jgt_imm, R0, max_len, label="drop")
    a += exit_()
    a.label("drop")
    a += mov_imm(R0, 0)
    a += exit_()
    return a.assemble()


def wait_link_gone(link_id: int) -> bool:
    """The kernel frees an unpinned link after an RCU grace period: wait for its id to go."""
    for _ in range(500):
        try:
            S.close_fd(S.get_fd_by_id(U.BPF_LINK_GET_FD_BY_ID, link_id))
        except Error as e:
            if getattr(e, "errno", None) == errno.ENOENT:
                return True
            raise  # a broken lookup must not pass for "gone"
        time.sleep(0.01)
    return False

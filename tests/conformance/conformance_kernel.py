"""Runs a conformance test on the kernel: the test becomes a BPF-to-BPF function of an XDP
program whose prologue passes the memory block (an array map value, so plain offsets verify
without packet bounds checks) in r1 and its length in r2, and whose epilogue stores the 64-bit
r0 in a second array map (XDP itself returns only 32 bits). Run with BPF_PROG_TEST_RUN."""
from __future__ import annotations

import ctypes
import os
import struct

from pybpfc import uapi
from pybpfc.asm import assemble, encode
from pybpfc.backends.kernel import syscall as sc

XDP_PASS = 2


def kernel_available() -> str | None:
    """None if BPF_PROG_LOAD works here, else the reason."""
    if os.geteuid() != 0:
        return "needs root for BPF_PROG_LOAD"
    try:
        fd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="probe")
    except Exception as e:  # noqa: BLE001 - any failure means no kernel eBPF here
        return f"kernel eBPF unavailable: {e}"
    os.close(fd)
    return None


class KernelLoadError(Exception):
    def __init__(self, msg, log):
        super().__init__(msg)
        self.log = log


def run_on_kernel(body, mem: bytes, name: str = "conformance", mem_out: bytearray | None = None,
                  log_level: int = 1) -> int:
    """Returns the 64-bit r0 of `body` (list of Insn) run by the kernel; raises KernelLoadError
    with the verifier log when the kernel refuses the program. `mem_out` receives the memory
    block as the program left it."""
    size = max(len(mem), 1)
    memfd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, size, 1, name="conf_mem")
    resfd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="conf_res")
    progfd = -1
    try:
        key = struct.pack("<I", 0)
        sc.map_update_elem(memfd, key, bytes(mem).ljust(size, b"\0"))
        head = assemble(f"""
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_fd({memfd})
            call 1
            jne %r0, 0, +2
            mov %r0, 1
            exit
            mov %r1, %r0
            mov %r2, {len(mem)}
            call local body
            stxdw [%r10-16], %r0
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            mov %r3, %r10
            add %r3, -16
            lddw %r1, map_fd({resfd})
            mov %r4, 0
            call 2
            mov %r0, {XDP_PASS}
            exit
            body:
            exit
        """)[:-1]  # the trailing exit only gave `body` a slot; the test body goes there
        prog = encode(head + list(body))
        log = ctypes.create_string_buffer(1 << 20)
        progfd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, prog, name=name[:15],
                                 log_level=log_level, log_buf=log)
        if progfd < 0 and log_level == 0:  # reload once with a log to explain the refusal
            progfd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, prog, name=name[:15], log_level=1,
                                     log_buf=log)
        if progfd < 0:
            text = log.value.decode(errors="replace")
            lines = [ln for ln in text.splitlines() if ln.strip()
                     and not ln.startswith(("processed ", "verification time"))]
            last = lines[-1] if lines else ""
            raise KernelLoadError(f"kernel refused: {os.strerror(-progfd)}: {last}", text)
        ret, _, _, _ = sc.prog_test_run(progfd, b"\0" * 64)
        if ret != XDP_PASS:
            raise RuntimeError(f"prologue failed (XDP action {ret})")
        out = sc.map_lookup_elem(resfd, key, 8)
        if mem_out is not None:
            mem_out[:] = sc.map_lookup_elem(memfd, key, size)[:len(mem)]
        return struct.unpack("<Q", out)[0]
    finally:
        if progfd >= 0:
            os.close(progfd)
        os.close(memfd)
        os.close(resfd)

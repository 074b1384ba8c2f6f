"""Two network namespaces joined by a veth pair, for XDP/tc tests with real packets.

ns_a: veth end A (10.213.X.1); ns_b: veth end B (10.213.X.2). `enter(ns)` switches the
calling thread into a namespace (sockets created there stay there) and back.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@contextlib.contextmanager
def enter(ns: str):
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(own)
        os.close(own)
        os.close(target)


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


class VethPair:
    def __init__(self, tag: str):
        n = os.getpid() % 200 + 20
        self.ns_a, self.ns_b = f"pbat_{tag}{os.getpid()}a", f"pbat_{tag}{os.getpid()}b"
        self.dev_a, self.dev_b = f"pbat{tag}a", f"pbat{tag}b"
        self.ip_a, self.ip_b = f"10.213.{n}.1", f"10.213.{n}.2"

    def __enter__(self):
        _ip("netns", "add", self.ns_a)
        _ip("netns", "add", self.ns_b)
        try:
            _ip("link", "add", self.dev_a, "netns", self.ns_a, "type", "veth",
                "peer", "name", self.dev_b, "netns", self.ns_b)
            for ns, dev, ip in ((self.ns_a, self.dev_a, self.ip_a), (self.ns_b, self.dev_b, self.ip_b)):
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def available() -> str | None:
    """None, or why veth/netns tests cannot run here."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("ip"):
        return "iproute2 (ip) is missing"
    return None


def send_udp(v: VethPair, n: int, port: int = 7777):
    """n datagrams from ns_a to B:port; returns how many B's socket received."""
    with enter(v.ns_b):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with enter(v.ns_a):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((v.ip_b, port))
        rx.settimeout(1.0)
        for i in range(n):
            tx.sendto(b"pkt%d" % i, (v.ip_b, port))
        got = 0
        try:
            while got < n:
                rx.recv(64)
                got += 1
        except socket.timeout:
            pass
        return got

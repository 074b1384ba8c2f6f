"""rtnetlink, just enough for classic tc: a clsact qdisc and a direct-action bpf filter.

Used for tc programs on kernels without tcx links (before 6.6), or when asked for with
mode="netlink". Numbers from linux/rtnetlink.h, pkt_sched.h, pkt_cls.h, netlink.h.
"""
from __future__ import annotations

import errno as _errno
import os
import socket
import struct
import threading

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x01, 0x04, 0x200, 0x400
RTM_NEWQDISC, RTM_DELQDISC = 36, 37
RTM_NEWTFILTER, RTM_DELTFILTER = 44, 45
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
NLA_F_NESTED = 1 << 15
TC_H_CLSACT = 0xFFFFFFF1
TC_H_MIN_INGRESS, TC_H_MIN_EGRESS = 0xFFF2, 0xFFF3
ETH_P_ALL = 0x0003

_seq = 0
_lock = threading.Lock()


class NetlinkError(OSError):
    pass


def tc_h_make(major: int, minor: int) -> int:
    return (major & 0xFFFF0000) | (minor & 0x0000FFFF)


def _attr(t: int, data: bytes) -> bytes:
    ln = 4 + len(data)
    return struct.pack("<HH", ln, t) + data + b"\0" * ((4 - ln % 4) % 4)


def _tcmsg(ifindex: int, handle: int, parent: int, info: int) -> bytes:
    return struct.pack("<BBHiIII", socket.AF_UNSPEC, 0, 0, ifindex, handle, parent, info)


class Rtnl:
    """An rtnetlink socket. It stays in the network namespace it was opened in, so a link
    keeps its socket to detach in the right namespace whatever thread closes it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.bind((0, 0))

    def request(self, msg_type: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its ACK; raises NetlinkError(errno) on a NACK."""
        global _seq
        with _lock:
            _seq += 1
            seq = _seq
        hdr = struct.pack("<IHHII", 16 + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self.sock.send(hdr + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                ln, typ, _fl, rseq, _pid = struct.unpack_from("<IHHII", data, off)
                if ln < 16:
                    raise NetlinkError(_errno.EPROTO, "bad netlink reply")
                if rseq == seq and typ == NLMSG_ERROR:
                    err = -struct.unpack_from("<i", data, off + 16)[0]
                    if err:
                        raise NetlinkError(err, os.strerror(err))
                    return
                off += (ln + 3) & ~3

    def close(self) -> None:
        self.sock.close()


def add_clsact(nl: Rtnl, ifindex: int) -> bool:
    """Create the clsact qdisc; False if one was already there."""
    body = _tcmsg(ifindex, tc_h_make(TC_H_CLSACT, 0), TC_H_CLSACT, 0) + _attr(TCA_KIND, b"clsact\0")
    try:
        nl.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body)
        return True
    except NetlinkError as e:
        if e.errno == _errno.EEXIST:
            return False
        raise


def del_clsact(nl: Rtnl, ifindex: int) -> None:
    body = _tcmsg(ifindex, tc_h_make(TC_H_CLSACT, 0), TC_H_CLSACT, 0) + _attr(TCA_KIND, b"clsact\0")
    nl.request(RTM_DELQDISC, 0, body)


def _filter_body(ifindex: int, direction: str, prio: int, handle: int, opts: bytes = b"") -> bytes:
    parent = tc_h_make(TC_H_CLSACT, TC_H_MIN_INGRESS if direction == "ingress" else TC_H_MIN_EGRESS)
    info = tc_h_make(prio << 16, socket.htons(ETH_P_ALL))
    body = _tcmsg(ifindex, handle, parent, info) + _attr(TCA_KIND, b"bpf\0")
    if opts:
        body += _attr(TCA_OPTIONS | NLA_F_NESTED, opts)
    return body


def add_bpf_filter(nl: Rtnl, ifindex: int, direction: str, prog_fd: int, name: str, handle: int = 1) -> int:
    """A direct-action bpf filter at the first free priority; returns that priority."""
    opts = (_attr(TCA_BPF_FD, struct.pack("<I", prog_fd)) + _attr(TCA_BPF_NAME, name.encode() + b"\0")
            + _attr(TCA_BPF_FLAGS, struct.pack("<I", TCA_BPF_FLAG_ACT_DIRECT)))
    for prio in range(1, 0x10000):
        try:
            nl.request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL,
                     _filter_body(ifindex, direction, prio, handle, opts))
            return prio
        except NetlinkError as e:
            if e.errno != _errno.EEXIST:
                raise
    raise NetlinkError(_errno.ENOSPC, "no free tc filter priority")


def del_bpf_filter(nl: Rtnl, ifindex: int, direction: str, prio: int, handle: int = 1) -> None:
    nl.request(RTM_DELTFILTER, 0, _filter_body(ifindex, direction, prio, handle))

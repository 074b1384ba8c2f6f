"""XDP on a network interface through a BPF link (BPF_LINK_CREATE, BPF_XDP)."""
from __future__ import annotations

import errno as _errno
import socket

from .... import uapi as U
from ....errors import AttachError
from .. import syscall as S
from .links import FdLink, prog_fd, prog_subject

# linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
MODES = {"skb": XDP_FLAGS_SKB_MODE, "generic": XDP_FLAGS_SKB_MODE, "drv": XDP_FLAGS_DRV_MODE,
         "native": XDP_FLAGS_DRV_MODE, "hw": XDP_FLAGS_HW_MODE}


def ifindex(prog, ifname, kind: str) -> tuple[int, str]:
    """(ifindex, name) of an interface given by name or index, in this thread's netns."""
    if isinstance(ifname, int):
        try:
            return ifname, socket.if_indextoname(ifname)
        except OSError:
            raise AttachError(f"{prog_subject(prog)}: {kind}: no interface with index {ifname}") from None
    try:
        return socket.if_nametoindex(ifname), ifname
    except OSError:
        raise AttachError(f"{prog_subject(prog)}: {kind}: no interface '{ifname}' "
                          "(in this network namespace)") from None


def attach(prog, ifname, flags=0):
    if isinstance(flags, str):
        if flags not in MODES:
            raise AttachError(f"{prog_subject(prog)}: xdp: unknown mode {flags!r} "
                              f"(one of {', '.join(MODES)})")
        flags = MODES[flags]
    idx, name = ifindex(prog, ifname, "xdp")
    try:
        fd = S.link_create(prog_fd(prog), idx, U.BPF_XDP, flags, subject=f"{prog_subject(prog)}: xdp {name}")
    except AttachError as e:
        if getattr(e, "errno", 0) == _errno.EBUSY:
            raise AttachError(f"{e} (another XDP program is already attached to {name})") from None
        raise
    return FdLink(fd, "xdp", name, getattr(prog, "name", ""))

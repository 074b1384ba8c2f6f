"""tc ingress/egress: tcx links (BPF_LINK_CREATE, BPF_TCX_INGRESS/EGRESS; 6.6+) where the
kernel has them, otherwise a clsact qdisc and a direct-action bpf filter over rtnetlink.

Every sched_cls program can be attached either way whatever its section ("tc", "classifier",
"tc/ingress", "tcx/egress"); the direction comes from the caller or the section.
mode: "auto" (tcx, netlink when tcx is missing), "tcx" or "netlink".
"""
from __future__ import annotations

import errno as _errno

from .... import uapi as U
from ....errors import AttachError, NotSupportedError
from .. import syscall as S
from . import netlink
from .links import CallbackLink, FdLink, prog_fd, prog_subject
from .xdp import ifindex

DIRECTIONS = {"ingress": U.BPF_TCX_INGRESS, "egress": U.BPF_TCX_EGRESS}


def attach(prog, ifname, direction: str = "ingress", mode: str = "auto"):
    subject = prog_subject(prog)
    if direction not in DIRECTIONS:
        raise AttachError(f"{subject}: tc: direction must be 'ingress' or 'egress', not {direction!r}")
    if mode not in ("auto", "tcx", "netlink"):
        raise AttachError(f"{subject}: tc: mode must be 'auto', 'tcx' or 'netlink', not {mode!r}")
    idx, name = ifindex(prog, ifname, "tc")
    if mode == "netlink":
        return attach_netlink(prog, idx, name, direction)
    try:
        return attach_tcx(prog, idx, name, direction)
    except NotSupportedError:
        if mode == "tcx":
            raise
        return attach_netlink(prog, idx, name, direction)


def attach_tcx(prog, idx: int, name: str, direction: str):
    subject = prog_subject(prog)
    try:
        fd = S.link_create(prog_fd(prog), idx, DIRECTIONS[direction],
                           subject=f"{subject}: tc {name}/{direction}")
    except AttachError as e:
        if getattr(e, "errno", 0) == _errno.EINVAL and getattr(getattr(prog, "spec", None), "type", 3) != 3:
            raise AttachError(f"{subject}: tc {name}/{direction}: not a sched_cls program") from None
        if getattr(e, "errno", 0) in (_errno.EINVAL, 524):
            raise NotSupportedError(f"{e} (this kernel has no tcx links; they need Linux 6.6)") from None
        raise
    return FdLink(fd, "tc", f"{name}/{direction}", getattr(prog, "name", ""))


# clsact qdiscs this process created: (netns inode, ifindex) -> how many of our filters use it.
_qdisc_users: dict[tuple, int] = {}


def attach_netlink(prog, idx: int, name: str, direction: str):
    subject = prog_subject(prog)
    where = f"{subject}: tc {name}/{direction} (netlink)"
    fd = prog_fd(prog)
    nl = netlink.Rtnl()
    key = (_netns_id(), idx)
    try:
        try:
            created = netlink.add_clsact(nl, idx)
        except OSError as e:
            raise AttachError(f"{where}: cannot add the clsact qdisc: {S.errno_text(e.errno)}") from None
        if created or key in _qdisc_users:
            _qdisc_users[key] = _qdisc_users.get(key, 0) + 1
        try:
            prio = netlink.add_bpf_filter(nl, idx, direction, fd, getattr(prog, "name", "pybpfc"))
        except OSError as e:
            _release_qdisc(nl, key)
            raise AttachError(f"{where}: cannot add the bpf filter: {S.errno_text(e.errno)}") from None
    except BaseException:
        nl.close()
        raise

    def detach():
        try:
            netlink.del_bpf_filter(nl, idx, direction, prio)
        except OSError:
            pass   # the interface or qdisc is already gone
        _release_qdisc(nl, key)
        nl.close()

    return CallbackLink("tc", f"{name}/{direction}", detach,
                        pin_reason="a netlink tc filter is not a BPF link")


def _netns_id() -> int:
    import os

    try:
        return os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return 0


def _release_qdisc(nl, key) -> None:
    # Remove the clsact qdisc only if this process created it and its last filter is gone.
    n = _qdisc_users.get(key)
    if n is None:
        return
    if n > 1:
        _qdisc_users[key] = n - 1
        return
    del _qdisc_users[key]
    try:
        netlink.del_clsact(nl, key[1])
    except OSError:
        pass

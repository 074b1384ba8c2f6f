"""tc ingress/egress through tcx links (BPF_LINK_CREATE, BPF_TCX_INGRESS/EGRESS; 6.6+).

Every sched_cls program can be attached this way whatever its section ("tc", "classifier",
"tc/ingress", "tcx/egress"); the direction comes from the caller or the section.
"""
from __future__ import annotations

import errno as _errno

from .... import uapi as U
from ....errors import AttachError, NotSupportedError
from .. import syscall as S
from .links import FdLink, prog_fd, prog_subject
from .xdp import ifindex

DIRECTIONS = {"ingress": U.BPF_TCX_INGRESS, "egress": U.BPF_TCX_EGRESS}


def attach(prog, ifname, direction: str = "ingress"):
    subject = prog_subject(prog)
    if direction not in DIRECTIONS:
        raise AttachError(f"{subject}: tc: direction must be 'ingress' or 'egress', not {direction!r}")
    idx, name = ifindex(prog, ifname, "tc")
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

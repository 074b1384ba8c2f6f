"""BTF-based tracing programs: fentry, fexit, fmod_ret, tp_btf, lsm, freplace.

Their target (attach_btf_id) is fixed when the program is loaded, so attaching only creates
the link: BPF_LINK_CREATE with the program's expected attach type, or
BPF_RAW_TRACEPOINT_OPEN with no name on kernels whose link_create refuses tracing programs.
"""
from __future__ import annotations

import errno as _errno

from ....errors import AttachError
from .. import syscall as S
from .links import FdLink, prog_fd, prog_subject


def attach(prog):
    subject = prog_subject(prog)
    spec = getattr(prog, "spec", None)
    kind = getattr(spec, "kind", "") or "fentry"
    target = getattr(spec, "attach_to", "") or "?"
    atype = getattr(spec, "expected_attach_type", 0) or 0
    fd = prog_fd(prog)
    try:
        lfd = S.link_create(fd, 0, atype, subject=f"{subject}: {kind} {target}")
    except AttachError as e:
        if getattr(e, "errno", 0) not in (_errno.EINVAL, 524):
            raise
        lfd = S.raw_tracepoint_open(fd, None, subject=f"{subject}: {kind} {target}")
    return FdLink(lfd, kind, target, getattr(prog, "name", ""))

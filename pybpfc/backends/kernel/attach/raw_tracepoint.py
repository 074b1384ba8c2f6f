"""Raw tracepoints: BPF_RAW_TRACEPOINT_OPEN returns a link fd (pinnable)."""
from __future__ import annotations

from ....errors import AttachError
from .. import syscall as S
from .links import FdLink, prog_fd, prog_subject


def attach(prog, name: str):
    if not name or "/" in name:
        raise AttachError(f"{prog_subject(prog)}: raw tracepoint name {name!r} is not valid "
                          "(a kernel tracepoint name such as 'sys_enter')")
    try:
        fd = S.raw_tracepoint_open(prog_fd(prog), name, subject=prog_subject(prog))
    except AttachError as e:
        if getattr(e, "errno", 0) == 2:  # ENOENT
            raise AttachError(f"{prog_subject(prog)}: no raw tracepoint '{name}' in the kernel") from None
        raise
    return FdLink(fd, "raw_tracepoint", name, getattr(prog, "name", ""))

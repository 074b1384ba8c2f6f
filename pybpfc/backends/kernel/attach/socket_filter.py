"""Socket filters: setsockopt(SO_ATTACH_BPF); the link detaches with SO_DETACH_BPF."""
from __future__ import annotations

import os
import socket

from ....errors import AttachError
from .. import syscall as S
from .links import CallbackLink, prog_fd, prog_subject

# asm-generic/socket.h
SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27  # = SO_DETACH_FILTER


def attach(prog, sock):
    subject = prog_subject(prog)
    fd = sock if isinstance(sock, int) else getattr(sock, "fileno", lambda: -1)()
    if not isinstance(fd, int) or fd < 0:
        raise AttachError(f"{subject}: socket filter: {sock!r} is not an open socket or fd")
    # Work on a dup so the attachment is found through the same open socket, whatever wrapper
    # the caller holds, and detaching never touches an fd number reused after close.
    try:
        dup = os.dup(fd)
    except OSError as e:
        raise AttachError(f"{subject}: socket filter: fd {fd}: {e.strerror}") from None
    try:
        s = socket.socket(fileno=dup)
    except OSError as e:
        os.close(dup)
        raise AttachError(f"{subject}: socket filter: fd {fd} is not a socket ({e.strerror})") from None
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd(prog))
    except OSError as e:
        s.close()
        raise AttachError(f"{subject}: socket filter on fd {fd}: SO_ATTACH_BPF failed: "
                          f"{S.errno_text(e.errno)}") from None

    def detach():
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
        except OSError:
            pass  # already detached, or the socket is gone
        s.close()

    return CallbackLink("socket_filter", f"fd {fd}", detach,
                        pin_reason="a socket filter lives on its socket")


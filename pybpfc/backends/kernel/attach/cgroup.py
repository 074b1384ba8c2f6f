"""Cgroup programs (cgroup_skb, cgroup/sock, sockops, ...) on a cgroup v2 directory through
BPF links (BPF_LINK_CREATE with the cgroup's fd); BPF_PROG_ATTACH (multi) where links are
refused."""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from typing import Optional

from ....errors import AttachError
from .. import syscall as S
from .links import CallbackLink, FdLink, prog_fd, prog_subject

CGROUP2_SUPER_MAGIC = 0x63677270   # linux/magic.h
DEFAULT_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_long * 15)]


def is_cgroup2(path: str) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    st = _Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == CGROUP2_SUPER_MAGIC


def cgroup2_root() -> Optional[str]:
    """Where cgroup v2 is mounted (the first cgroup2 entry of /proc/self/mounts)."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    for r in DEFAULT_ROOTS:
        if is_cgroup2(r):
            return r
    return None


def attach(prog, path: str, attach_type: Optional[int] = None):
    subject = prog_subject(prog)
    spec = getattr(prog, "spec", None)
    if attach_type is None:
        attach_type = getattr(spec, "expected_attach_type", 0) or 0
    if not os.path.isdir(path):
        raise AttachError(f"{subject}: cgroup {path}: no such directory")
    if not is_cgroup2(path):
        root = cgroup2_root()
        raise AttachError(f"{subject}: cgroup {path}: not a cgroup v2 directory"
                          + (f" (cgroup v2 is mounted at {root})" if root else ""))
    cfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = S.link_create(prog_fd(prog), cfd, attach_type, subject=f"{subject}: cgroup {path}")
        return FdLink(fd, "cgroup", path, getattr(prog, "name", ""))
    except AttachError as e:
        if getattr(e, "errno", 0) not in (_errno.EINVAL, 524):
            raise
    finally:
        os.close(cfd)
    # Kernels before cgroup links (5.7): classic attach, detached explicitly on close.
    cfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    pfd = os.dup(prog_fd(prog))
    try:
        S.prog_attach(pfd, cfd, attach_type, S.BPF_F_ALLOW_MULTI, subject=f"{subject}: cgroup {path}")
    except BaseException as e:
        os.close(cfd)
        os.close(pfd)
        if getattr(e, "errno", 0) == _errno.EINVAL:
            raise AttachError(f"{e} (attach type {attach_type} does not fit this program: load it "
                              "from a section naming the hook, e.g. cgroup_skb/egress, or pass "
                              "attach_type=)") from None
        raise

    def detach():
        try:
            S.prog_detach(pfd, cfd, attach_type)
        except AttachError:
            pass
        os.close(cfd)
        os.close(pfd)

    return CallbackLink("cgroup", path, detach, pin_reason="attached with BPF_PROG_ATTACH, not a link")

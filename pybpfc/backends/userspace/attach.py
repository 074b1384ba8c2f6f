"""Userspace attach calls: link records in the store that LD_PRELOAD agents (agent/*.c) turn
into hooks in the processes they run in, and `spawn` to run a command with the agent.

    be = UserspaceBackend()
    coll = pybpfc.load("prog.bpf.o", backend=be)
    coll.programs.on_malloc.attach_uprobe("libc", "malloc")
    proc = be.spawn(["ls", "-l"])           # the agent installs the hooks before main()

Agents already running pick up links created or closed later within
agent.DEFAULT_POLL_MS (5 ms) plus the patching time. See docs/agent.md.
"""
from __future__ import annotations

import os
import re
import subprocess
from typing import Optional

import cffi

from ... import uapi as U
from ...errors import Error, NotSupportedError
from ..base import Link
from . import agent as _agent

_CDEF = """
struct pbs_store;
struct pbs_link {
    uint32_t id; uint32_t state; uint32_t kind; uint32_t prog_id; int32_t pid; uint32_t enabled;
    uint64_t cookie; uint64_t offset; uint64_t generation; char path[256]; char tp[64];
    uint64_t hits; uint64_t errors; uint64_t _reserved[6];
};
int pbs_link_create(struct pbs_store *s, uint32_t kind, uint32_t prog_id, const char *path,
                    uint64_t offset, const char *tp, int32_t pid, uint64_t cookie);
struct pbs_link *pbs_link(struct pbs_store *s, uint32_t id);
int pbs_link_set_enabled(struct pbs_store *s, uint32_t id, int enabled);
void pbs_link_destroy(struct pbs_store *s, uint32_t id);
"""
_ffi = None
_lib = None


def _links():
    """The link half of the store API (runtime/store.c), declared here so the runtime's own
    cffi declarations stay as they are."""
    global _ffi, _lib
    if _lib is None:
        from ... import _native

        f = cffi.FFI()
        f.cdef(_CDEF)
        _lib = f.dlopen(_native.library("pybpfc_runtime"))
        _ffi = f
    return _ffi, _lib


def _store_ptr(store):
    """The runtime's `struct pbs_store *` as this module's cffi type."""
    from .runtime import ffi as rt_ffi

    f, _ = _links()
    return f.cast("struct pbs_store *", int(rt_ffi().cast("uintptr_t", store.handle)))


_SYSCALLS: Optional[set] = None


def _syscall_names() -> set:
    """Syscall tracepoint names the agent knows (agent/syscall_names.h, which lists
    unistd_64.h), plus the kernel's "new"-prefixed SYSCALL_DEFINE names."""
    global _SYSCALLS
    if _SYSCALLS is None:
        here = os.path.dirname(os.path.abspath(__file__))
        hdr = os.path.join(here, "..", "..", "..", "agent", "syscall_names.h")
        names = set()
        try:
            with open(hdr) as f:
                names = set(re.findall(r'\] = "(\w+)"', f.read()))
        except OSError:
            pass
        _SYSCALLS = names | {"new" + n for n in names}
    return _SYSCALLS


class UserspaceLink(Link):
    """A link record in the store; every agent mapping the store applies it."""

    def __init__(self, backend, link_id: int, kind: str, target: str):
        self.backend, self.id, self.kind, self.target = backend, link_id, kind, target
        self._closed = False

    def _rec(self):
        f, L = _links()
        r = L.pbs_link(_store_ptr(self.backend.store), self.id)
        return None if r == f.NULL else r

    @property
    def hits(self) -> int:
        """Program runs so far, summed over every process running this link."""
        r = self._rec()
        return int(r.hits) if r is not None else 0

    @property
    def errors(self) -> int:
        """Runs stopped by a fault (the target continued)."""
        r = self._rec()
        return int(r.errors) if r is not None else 0

    def enable(self, on: bool = True) -> None:
        """Keeps the link but stops (False) or resumes (True) running the program."""
        _, L = _links()
        if L.pbs_link_set_enabled(_store_ptr(self.backend.store), self.id, 1 if on else 0) < 0:
            raise Error(f"{self.kind} link {self.target}: no longer exists")

    def close(self) -> None:
        if self._closed or self.backend.store is None:
            return
        self._closed = True
        _, L = _links()
        L.pbs_link_destroy(_store_ptr(self.backend.store), self.id)


class AttachMixin:
    """attach_* and spawn for UserspaceBackend (which provides `self.store`)."""

    _agent_log: Optional[_agent.AgentLog] = None

    def _new_link(self, prog, kind: int, kind_name: str, target: str, path: str = "", offset: int = 0,
                  tp: str = "", pid: int = -1, cookie: int = 0) -> UserspaceLink:
        import errno

        _, L = _links()
        pid = -1 if pid is None or pid < 0 else int(pid)
        r = L.pbs_link_create(_store_ptr(self.store), kind, prog.id, path.encode(), offset, tp.encode(),
                              pid, cookie)
        if r < 0:
            why = {errno.ENOSPC: "the store's link table is full", errno.EBADF: "the program is not loaded"}
            raise Error(f"prog '{prog.name}': {kind_name} {target}: "
                        f"{why.get(-r, os.strerror(-r))}")
        return UserspaceLink(self, r, kind_name, target)

    @staticmethod
    def _check_type(prog, want: set, what: str) -> None:
        t = getattr(prog.spec, "type", None)
        if t is not None and t not in want:
            names = {v: k[len("BPF_PROG_TYPE_"):].lower() for k, v in vars(U).items()
                     if k.startswith("BPF_PROG_TYPE_") and isinstance(v, int)}
            raise Error(f"prog '{prog.name}': a {names.get(t, t)} program cannot attach to {what}")

    def attach_uprobe(self, prog, binary: str, symbol: Optional[str] = None, offset: int = 0,
                      pid: int = -1, retprobe: bool = False, cookie: int = 0) -> Link:
        from ...elf.symbols import resolve_uprobe

        kind_name = "uretprobe" if retprobe else "uprobe"
        self._check_type(prog, {U.BPF_PROG_TYPE_KPROBE}, f"a {kind_name}")
        try:
            path, off = resolve_uprobe(binary, symbol, offset)
        except Error as e:
            raise type(e)(f"prog '{prog.name}': {e}") from None
        target = f"{path}:{symbol or hex(offset)}"
        return self._new_link(prog, _agent.LINK_URETPROBE if retprobe else _agent.LINK_UPROBE, kind_name,
                              target, path=os.path.realpath(path), offset=off, pid=pid, cookie=cookie)

    def attach_tracepoint(self, prog, category: str, name: str) -> Link:
        self._check_type(prog, {U.BPF_PROG_TYPE_TRACEPOINT}, "a tracepoint")
        tp = f"{category}/{name}"
        if category != "syscalls" or not (name.startswith("sys_enter_") or name.startswith("sys_exit_")):
            raise NotSupportedError(f"prog '{prog.name}': tracepoint {tp}: the userspace backend has "
                                    "only syscalls/sys_enter_* and syscalls/sys_exit_*")
        sc = name.split("_", 2)[2]
        names = _syscall_names()
        if names and sc not in names:
            raise Error(f"prog '{prog.name}': tracepoint {tp}: no syscall named '{sc}'")
        return self._new_link(prog, _agent.LINK_TRACEPOINT, "tracepoint", tp, tp=tp)

    def attach_raw_tracepoint(self, prog, name: str) -> Link:
        self._check_type(prog, {U.BPF_PROG_TYPE_RAW_TRACEPOINT}, "a raw tracepoint")
        if name not in ("sys_enter", "sys_exit"):
            raise NotSupportedError(f"prog '{prog.name}': raw tracepoint {name}: the userspace backend "
                                    "has only sys_enter and sys_exit")
        return self._new_link(prog, _agent.LINK_RAW_TRACEPOINT, "raw_tracepoint", name, tp=name)

    # -- running commands under the agent
    @property
    def agent_log(self) -> _agent.AgentLog:
        """Diagnostics of the agents this backend started (patches, refusals, faults)."""
        if self._agent_log is None:
            self._agent_log = _agent.AgentLog()
        return self._agent_log

    def spawn(self, argv, env: Optional[dict] = None, follow_fork: bool = True, **popen_kw) -> subprocess.Popen:
        """Runs `argv` with the agent loaded (LD_PRELOAD) on this backend's store. Links made
        before are in place before the command's main(); later ones within the poll delay.
        follow_fork=False: the command's children run without programs."""
        if self.store is None:
            raise Error("userspace backend is closed")
        if not argv:
            raise Error("spawn: empty command")
        e = _agent.agent_env(self.store.path, self.agent_log.path, follow_fork, env)
        try:
            return subprocess.Popen(list(argv), env=e, **popen_kw)
        except OSError as ex:
            raise Error(f"cannot run {argv[0]!r}: {ex.strerror}") from None


__all__ = ["AttachMixin", "UserspaceLink"]

"""Control of the LD_PRELOAD agent (agent/*.c) from the loader side: the environment that
loads it into a command, its diagnostics log, and the link records it reads in the store.

The agent never writes to the target's stdout/stderr; its messages go to the file named by
PYBPFC_AGENT_LOG, read here with `AgentLog`. See docs/agent.md.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

from ... import _native

ENV_STORE = "PYBPFC_STORE"
ENV_LOG = "PYBPFC_AGENT_LOG"
ENV_FOLLOW = "PYBPFC_AGENT_FOLLOW"
ENV_POLL = "PYBPFC_AGENT_POLL_MS"
ENV_SYSCALL = "PYBPFC_AGENT_SYSCALL"

# pybpfc_store.h link kinds
LINK_UPROBE, LINK_URETPROBE, LINK_TRACEPOINT, LINK_RAW_TRACEPOINT = 1, 2, 3, 4

# Poll period of the agent's background thread: attaches and detaches made after the target
# started take effect within this delay (plus the time to patch).
DEFAULT_POLL_MS = 5


def agent_library() -> str:
    """Path of libpybpfc_agent.so, built first in a source checkout."""
    return _native.library("pybpfc_agent")


def default_store_path() -> str:
    """The store `pybpfc exec` uses when PYBPFC_STORE is not set: one per user, so a loader
    started later with UserspaceBackend(store=default_store_path()) reaches the target."""
    return os.environ.get(ENV_STORE) or f"/dev/shm/pybpfc-{os.getuid()}.store"


def agent_env(store_path: str, log_path: Optional[str] = None, follow_fork: bool = True,
              env: Optional[dict] = None, poll_ms: Optional[int] = None) -> dict:
    """The environment of a command run under the agent (a copy of `env` or os.environ)."""
    e = dict(os.environ if env is None else env)
    lib = agent_library()
    pre = [p for p in e.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p and p != lib]
    e["LD_PRELOAD"] = ":".join([lib] + pre)
    e[ENV_STORE] = store_path
    e[ENV_FOLLOW] = "1" if follow_fork else "0"
    if log_path:
        e[ENV_LOG] = log_path
    if poll_ms:
        e[ENV_POLL] = str(int(poll_ms))
    return e


class AgentLog:
    """The agents' diagnostics file (all agents of one backend append to it). `read()` returns
    the lines written since the previous call."""

    def __init__(self, path: Optional[str] = None):
        if path is None:
            fd, path = tempfile.mkstemp(prefix="pybpfc-agent-", suffix=".log")
            os.close(fd)
            self._owned = True
        else:
            self._owned = False
        self.path = path
        self._pos = 0

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._pos += end
        return [ln.decode(errors="replace") for ln in data[:end].splitlines()]

    def text(self) -> str:
        """The whole log so far."""
        try:
            with open(self.path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self._owned:
            try:
                os.unlink(self.path)
            except OSError:
                pass


__all__ = ["AgentLog", "agent_env", "agent_library", "default_store_path", "DEFAULT_POLL_MS"]

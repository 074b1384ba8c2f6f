"""`pybpfc exec [options] [--] CMD ARGS...`: run a command with the userspace agent loaded
(LD_PRELOAD), like `bpftime start`. Programs a loader attaches to the same store (now or
later: the agent waits for the store to appear) run inside the command.

    pybpfc exec -- ./server                     # store: $PYBPFC_STORE or /dev/shm/pybpfc-<uid>.store
    python -c 'import pybpfc; from pybpfc.backends.userspace import UserspaceBackend; ...
               UserspaceBackend(store="/dev/shm/pybpfc-0.store") ...'
"""
from __future__ import annotations

import argparse
import os
import shutil

from ..errors import Error


def add_parser(sub):
    p = sub.add_parser("exec", help="run a command with the userspace agent (programs from a store)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="store path (default: $PYBPFC_STORE or /dev/shm/pybpfc-<uid>.store)")
    p.add_argument("--log", help="agent diagnostics file (default: none; the agent never writes "
                                 "to the command's output)")
    p.add_argument("--no-follow", action="store_true",
                   help="children of the command run without the agent")
    p.add_argument("--poll-ms", type=int, help="how often agents look for new attachments (default 5)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments")
    return p


def run(args) -> int:
    from ..backends.userspace.agent import agent_env, default_store_path

    cmd = list(args.cmd or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise Error("no command given (usage: pybpfc exec [--] CMD ARGS...)")
    if args.poll_ms is not None and args.poll_ms <= 0:
        raise Error(f"--poll-ms {args.poll_ms}: must be positive")
    exe = cmd[0] if os.sep in cmd[0] else shutil.which(cmd[0])
    if not exe or not os.path.exists(exe):
        raise Error(f"{cmd[0]}: command not found")
    store = os.path.abspath(args.store) if args.store else default_store_path()
    env = agent_env(store, os.path.abspath(args.log) if args.log else None, not args.no_follow,
                    poll_ms=args.poll_ms)
    try:
        os.execve(exe, cmd, env)  # the command takes over this process: same pid, signals, exit code
    except OSError as e:
        raise Error(f"cannot run {cmd[0]!r}: {e.strerror}") from None
    return 127

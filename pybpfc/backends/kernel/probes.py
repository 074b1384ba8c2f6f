"""Feature probes: can this kernel, for this process, create a map of type X or load a program
of type Y? Each probe really creates the object (and closes it); the answer carries the
kernel's reason when it is no. Used by NotSupportedError decisions and `pybpfc doctor`."""
from __future__ import annotations

import errno as _errno
import os
import struct
from functools import lru_cache

from ... import uapi as U
from . import syscall as sc
from .maps import MAP_TYPE_NAMES
from .programs import PROG_TYPE_NAMES

# mov r0, 0 ; exit
_RET0 = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)

# Arguments that make a minimal valid map of each type: (key, value, max_entries, flags, extra)
_MAP_ARGS = {
    U.BPF_MAP_TYPE_RINGBUF: (0, 0, 4096, 0, 0),
    U.BPF_MAP_TYPE_QUEUE: (0, 4, 1, 0, 0),
    U.BPF_MAP_TYPE_STACK: (0, 4, 1, 0, 0),
    U.BPF_MAP_TYPE_BLOOM_FILTER: (0, 4, 1, 0, 1),
    U.BPF_MAP_TYPE_LPM_TRIE: (8, 4, 1, U.BPF_F_NO_PREALLOC, 0),
    U.BPF_MAP_TYPE_STACK_TRACE: (4, 8, 1, 0, 0),
}

# Program types that need an expected attach type to load.
_PROG_EAT = {U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR: U.BPF_CGROUP_INET4_CONNECT,
             U.BPF_PROG_TYPE_SK_LOOKUP: U.BPF_SK_LOOKUP,
             U.BPF_PROG_TYPE_CGROUP_SOCKOPT: U.BPF_CGROUP_GETSOCKOPT}

PROBED_MAP_TYPES = [U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PROG_ARRAY,
                    U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, U.BPF_MAP_TYPE_PERCPU_HASH,
                    U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_STACK_TRACE,
                    U.BPF_MAP_TYPE_LRU_HASH, U.BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    U.BPF_MAP_TYPE_LPM_TRIE, U.BPF_MAP_TYPE_ARRAY_OF_MAPS,
                    U.BPF_MAP_TYPE_HASH_OF_MAPS, U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK,
                    U.BPF_MAP_TYPE_RINGBUF, U.BPF_MAP_TYPE_BLOOM_FILTER]

PROBED_PROG_TYPES = [U.BPF_PROG_TYPE_SOCKET_FILTER, U.BPF_PROG_TYPE_KPROBE,
                     U.BPF_PROG_TYPE_SCHED_CLS, U.BPF_PROG_TYPE_SCHED_ACT,
                     U.BPF_PROG_TYPE_TRACEPOINT, U.BPF_PROG_TYPE_XDP,
                     U.BPF_PROG_TYPE_PERF_EVENT, U.BPF_PROG_TYPE_CGROUP_SKB,
                     U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_PROG_TYPE_SOCK_OPS,
                     U.BPF_PROG_TYPE_RAW_TRACEPOINT, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                     U.BPF_PROG_TYPE_SK_LOOKUP, U.BPF_PROG_TYPE_SYSCALL]


@lru_cache(maxsize=None)
def map_type(t: int) -> tuple[bool, str]:
    """(supported, reason) for map type `t`."""
    ks, vs, n, fl, extra = _MAP_ARGS.get(t, (4, 4, 1, 0, 0))
    inner = 0
    try:
        if t in (U.BPF_MAP_TYPE_ARRAY_OF_MAPS, U.BPF_MAP_TYPE_HASH_OF_MAPS):
            inner = sc.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="probe_inner")
        fd = sc.map_create(t, ks, vs, n, flags=fl, map_extra=extra, inner_map_fd=inner,
                           name="pybpfc_probe")
        os.close(fd)
        return True, ""
    except sc.LoadError as e:
        return False, _reason(getattr(e, "errno", 0))
    finally:
        if inner:
            os.close(inner)


@lru_cache(maxsize=None)
def prog_type(t: int) -> tuple[bool, str]:
    """(supported, reason) for program type `t` (a trivial program of that type is loaded)."""
    fd, _ = sc.prog_load(t, _RET0, license="GPL", name="pybpfc_probe",
                         expected_attach_type=_PROG_EAT.get(t, 0),
                         flags=sc.BPF_F_SLEEPABLE if t == U.BPF_PROG_TYPE_SYSCALL else 0)
    if fd >= 0:
        os.close(fd)
        return True, ""
    return False, _reason(-fd)


def _reason(err: int) -> str:
    if err == _errno.EPERM:
        return "not permitted (needs root or CAP_BPF)"
    if err == _errno.EINVAL:
        return "the kernel does not know this type (EINVAL)"
    if err in (_errno.EOPNOTSUPP, 524):
        return "not supported by this kernel's configuration"
    return sc.errno_text(err)


def report() -> dict:
    """{"maps": {name: (ok, reason)}, "programs": {name: (ok, reason)}}."""
    return {"maps": {MAP_TYPE_NAMES[t]: map_type(t) for t in PROBED_MAP_TYPES},
            "programs": {PROG_TYPE_NAMES[t]: prog_type(t) for t in PROBED_PROG_TYPES}}

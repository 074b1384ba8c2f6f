"""libbpf's ELF section names as data: section -> program type, expected attach type, attach kind.

The compiler uses it to name sections; the ELF reader to type programs; the backends to pick the
attach call for `attach_all()` from `kind`. Order matters: the first matching row wins.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import uapi as U

# (prefix, exact?, prog type, expected attach type, kind, sleepable)
# exact=True: the section must equal prefix or start with prefix + "/" (libbpf's SEC_ATTACHABLE
# rule); exact=False: plain prefix match.
SECTION_DEFS = [
    ("socket", True, U.BPF_PROG_TYPE_SOCKET_FILTER, 0, "socket_filter", False),
    ("sk_reuseport/migrate", True, U.BPF_PROG_TYPE_SK_REUSEPORT, U.BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, "sk_reuseport", False),
    ("sk_reuseport", True, U.BPF_PROG_TYPE_SK_REUSEPORT, U.BPF_SK_REUSEPORT_SELECT, "sk_reuseport", False),
    ("kprobe.multi", True, U.BPF_PROG_TYPE_KPROBE, U.BPF_TRACE_KPROBE_MULTI, "kprobe_multi", False),
    ("kretprobe.multi", True, U.BPF_PROG_TYPE_KPROBE, U.BPF_TRACE_KPROBE_MULTI, "kretprobe_multi", False),
    ("kprobe", True, U.BPF_PROG_TYPE_KPROBE, 0, "kprobe", False),
    ("kretprobe", True, U.BPF_PROG_TYPE_KPROBE, 0, "kretprobe", False),
    ("ksyscall", True, U.BPF_PROG_TYPE_KPROBE, 0, "ksyscall", False),
    ("kretsyscall", True, U.BPF_PROG_TYPE_KPROBE, 0, "kretsyscall", False),
    ("uprobe.s", True, U.BPF_PROG_TYPE_KPROBE, 0, "uprobe", True),
    ("uretprobe.s", True, U.BPF_PROG_TYPE_KPROBE, 0, "uretprobe", True),
    ("uprobe", True, U.BPF_PROG_TYPE_KPROBE, 0, "uprobe", False),
    ("uretprobe", True, U.BPF_PROG_TYPE_KPROBE, 0, "uretprobe", False),
    ("usdt", True, U.BPF_PROG_TYPE_KPROBE, 0, "usdt", False),
    ("tc/ingress", True, U.BPF_PROG_TYPE_SCHED_CLS, 46, "tcx", False),   # BPF_TCX_INGRESS
    ("tc/egress", True, U.BPF_PROG_TYPE_SCHED_CLS, 47, "tcx", False),    # BPF_TCX_EGRESS
    ("tcx/ingress", True, U.BPF_PROG_TYPE_SCHED_CLS, 46, "tcx", False),
    ("tcx/egress", True, U.BPF_PROG_TYPE_SCHED_CLS, 47, "tcx", False),
    ("tc", True, U.BPF_PROG_TYPE_SCHED_CLS, 0, "tc", False),
    ("classifier", True, U.BPF_PROG_TYPE_SCHED_CLS, 0, "tc", False),
    ("action", True, U.BPF_PROG_TYPE_SCHED_ACT, 0, "tc_action", False),
    ("tracepoint", True, U.BPF_PROG_TYPE_TRACEPOINT, 0, "tracepoint", False),
    ("tp", True, U.BPF_PROG_TYPE_TRACEPOINT, 0, "tracepoint", False),
    ("raw_tracepoint.w", True, U.BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE, 0, "raw_tracepoint", False),
    ("raw_tp.w", True, U.BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE, 0, "raw_tracepoint", False),
    ("raw_tracepoint", True, U.BPF_PROG_TYPE_RAW_TRACEPOINT, 0, "raw_tracepoint", False),
    ("raw_tp", True, U.BPF_PROG_TYPE_RAW_TRACEPOINT, 0, "raw_tracepoint", False),
    ("tp_btf", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_RAW_TP, "tp_btf", False),
    ("fentry.s", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FENTRY, "fentry", True),
    ("fexit.s", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FEXIT, "fexit", True),
    ("fmod_ret.s", True, U.BPF_PROG_TYPE_TRACING, U.BPF_MODIFY_RETURN, "fmod_ret", True),
    ("fentry", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FENTRY, "fentry", False),
    ("fexit", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FEXIT, "fexit", False),
    ("fmod_ret", True, U.BPF_PROG_TYPE_TRACING, U.BPF_MODIFY_RETURN, "fmod_ret", False),
    ("iter.s", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_ITER, "iter", True),
    ("iter", True, U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_ITER, "iter", False),
    ("lsm.s", True, U.BPF_PROG_TYPE_LSM, U.BPF_LSM_MAC, "lsm", True),
    ("lsm_cgroup", True, U.BPF_PROG_TYPE_LSM, U.BPF_LSM_CGROUP, "lsm", False),
    ("lsm", True, U.BPF_PROG_TYPE_LSM, U.BPF_LSM_MAC, "lsm", False),
    ("freplace", True, U.BPF_PROG_TYPE_EXT, 0, "freplace", False),
    ("xdp.frags/devmap", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP_DEVMAP, "xdp_devmap", False),
    ("xdp/devmap", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP_DEVMAP, "xdp_devmap", False),
    ("xdp.frags/cpumap", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP_CPUMAP, "xdp_cpumap", False),
    ("xdp/cpumap", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP_CPUMAP, "xdp_cpumap", False),
    ("xdp.frags", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP, "xdp", False),
    ("xdp", True, U.BPF_PROG_TYPE_XDP, U.BPF_XDP, "xdp", False),
    ("perf_event", True, U.BPF_PROG_TYPE_PERF_EVENT, 0, "perf_event", False),
    ("lwt_in", True, U.BPF_PROG_TYPE_LWT_IN, 0, "lwt", False),
    ("lwt_out", True, U.BPF_PROG_TYPE_LWT_OUT, 0, "lwt", False),
    ("lwt_xmit", True, U.BPF_PROG_TYPE_LWT_XMIT, 0, "lwt", False),
    ("lwt_seg6local", True, U.BPF_PROG_TYPE_LWT_SEG6LOCAL, 0, "lwt", False),
    ("sockops", True, U.BPF_PROG_TYPE_SOCK_OPS, U.BPF_CGROUP_SOCK_OPS, "cgroup", False),
    ("sk_skb/stream_parser", True, U.BPF_PROG_TYPE_SK_SKB, U.BPF_SK_SKB_STREAM_PARSER, "sk_skb", False),
    ("sk_skb/stream_verdict", True, U.BPF_PROG_TYPE_SK_SKB, U.BPF_SK_SKB_STREAM_VERDICT, "sk_skb", False),
    ("sk_skb", True, U.BPF_PROG_TYPE_SK_SKB, 0, "sk_skb", False),
    ("sk_msg", True, U.BPF_PROG_TYPE_SK_MSG, U.BPF_SK_MSG_VERDICT, "sk_msg", False),
    ("lirc_mode2", True, U.BPF_PROG_TYPE_LIRC_MODE2, U.BPF_LIRC_MODE2, "lirc", False),
    ("flow_dissector", True, U.BPF_PROG_TYPE_FLOW_DISSECTOR, U.BPF_FLOW_DISSECTOR, "flow_dissector", False),
    ("cgroup_skb/ingress", True, U.BPF_PROG_TYPE_CGROUP_SKB, U.BPF_CGROUP_INET_INGRESS, "cgroup", False),
    ("cgroup_skb/egress", True, U.BPF_PROG_TYPE_CGROUP_SKB, U.BPF_CGROUP_INET_EGRESS, "cgroup", False),
    ("cgroup/skb", True, U.BPF_PROG_TYPE_CGROUP_SKB, 0, "cgroup", False),
    ("cgroup/sock_create", True, U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_CGROUP_INET_SOCK_CREATE, "cgroup", False),
    ("cgroup/sock_release", True, U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_CGROUP_INET_SOCK_RELEASE, "cgroup", False),
    ("cgroup/sock", True, U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_CGROUP_INET_SOCK_CREATE, "cgroup", False),
    ("cgroup/post_bind4", True, U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_CGROUP_INET4_POST_BIND, "cgroup", False),
    ("cgroup/post_bind6", True, U.BPF_PROG_TYPE_CGROUP_SOCK, U.BPF_CGROUP_INET6_POST_BIND, "cgroup", False),
    ("cgroup/bind4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET4_BIND, "cgroup", False),
    ("cgroup/bind6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET6_BIND, "cgroup", False),
    ("cgroup/connect4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET4_CONNECT, "cgroup", False),
    ("cgroup/connect6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET6_CONNECT, "cgroup", False),
    ("cgroup/sendmsg4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_UDP4_SENDMSG, "cgroup", False),
    ("cgroup/sendmsg6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_UDP6_SENDMSG, "cgroup", False),
    ("cgroup/recvmsg4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_UDP4_RECVMSG, "cgroup", False),
    ("cgroup/recvmsg6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_UDP6_RECVMSG, "cgroup", False),
    ("cgroup/getpeername4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET4_GETPEERNAME, "cgroup", False),
    ("cgroup/getpeername6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET6_GETPEERNAME, "cgroup", False),
    ("cgroup/getsockname4", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET4_GETSOCKNAME, "cgroup", False),
    ("cgroup/getsockname6", True, U.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, U.BPF_CGROUP_INET6_GETSOCKNAME, "cgroup", False),
    ("cgroup/sysctl", True, U.BPF_PROG_TYPE_CGROUP_SYSCTL, U.BPF_CGROUP_SYSCTL, "cgroup", False),
    ("cgroup/getsockopt", True, U.BPF_PROG_TYPE_CGROUP_SOCKOPT, U.BPF_CGROUP_GETSOCKOPT, "cgroup", False),
    ("cgroup/setsockopt", True, U.BPF_PROG_TYPE_CGROUP_SOCKOPT, U.BPF_CGROUP_SETSOCKOPT, "cgroup", False),
    ("cgroup/dev", True, U.BPF_PROG_TYPE_CGROUP_DEVICE, U.BPF_CGROUP_DEVICE, "cgroup", False),
    ("struct_ops.s", True, U.BPF_PROG_TYPE_STRUCT_OPS, 0, "struct_ops", True),
    ("struct_ops", True, U.BPF_PROG_TYPE_STRUCT_OPS, 0, "struct_ops", False),
    ("sk_lookup", True, U.BPF_PROG_TYPE_SK_LOOKUP, U.BPF_SK_LOOKUP, "sk_lookup", False),
    ("syscall", True, U.BPF_PROG_TYPE_SYSCALL, 0, "syscall", True),
]


@dataclass(frozen=True)
class SectionInfo:
    section: str
    prog_type: int
    expected_attach_type: int
    kind: str
    target: str        # the part after "prefix/", e.g. "syscalls/sys_enter_openat"; "" if none
    sleepable: bool


def parse_section(name: str) -> SectionInfo | None:
    """Classify a program section name the way libbpf does; None if it is not a program section."""
    for prefix, exact, ptype, atype, kind, sleepable in SECTION_DEFS:
        if exact:
            if name == prefix:
                return SectionInfo(name, ptype, atype, kind, "", sleepable)
            if name.startswith(prefix + "/"):
                return SectionInfo(name, ptype, atype, kind, name[len(prefix) + 1 :], sleepable)
        elif name.startswith(prefix):
            return SectionInfo(name, ptype, atype, kind, name[len(prefix) :], sleepable)
    return None


def section_for(kind: str, target: str = "") -> str:
    """The canonical section name the compiler writes for an attach kind and target."""
    canonical = {
        "socket_filter": "socket",
        "tc": "tc",
        "cgroup_skb": "cgroup_skb",
    }
    prefix = canonical.get(kind, kind)
    return f"{prefix}/{target}" if target else prefix

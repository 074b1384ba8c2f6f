"""pybpfc-language twins of the hand-assembled attach test programs (one counter slot each).

slot 0: tracepoint getppid   1: raw_tp sys_enter getppid   2: uprobe libc getppid
slot 3: uretprobe sum of returns   4: xdp UDP to PORT   5: tc UDP to PORT
slot 6: socket filter packets   7: cgroup_skb egress packets   8: perf_event samples
"""
from pybpfc import TC_ACT_OK, XDP_PASS, Array, ArrayMap, Const, Struct, bpf, u8, u16, u32, u64

target_pid: Const[u32] = 0
PORT_BE = 0x611E          # htons(7777) as read on a little-endian machine

hits = ArrayMap(u32, u64, max_entries=16)



class EthIpUdp(Struct):   # u8/u16 fields only, so C alignment leaves no holes
    mac: Array[u16, 6]
    proto: u16            # ethertype, network order
    ver_ihl: u8
    tos: u8
    tot_len: u16
    id: u16
    frag_off: u16
    ttl: u8
    protocol: u8
    check: u16
    addrs: Array[u16, 4]
    sport: u16
    dport: u16


@bpf.tracepoint("syscalls/sys_enter_getppid")
def tp_getppid(ctx) -> int:
    if bpf.tgid() == target_pid:
        hits[0] += 1
    return 0


@bpf.raw_tracepoint("sys_enter")
def raw_enter(ctx) -> int:
    if bpf.tgid() == target_pid and ctx.args[1] == 110:
        hits[1] += 1
    return 0


@bpf.uprobe("libc:getppid")
def up_getppid() -> int:
    if bpf.tgid() == target_pid:
        hits[2] += 1
    return 0


@bpf.uretprobe("libc:getppid")
def ur_getppid(ret: u64) -> int:
    if bpf.tgid() == target_pid:
        hits[3] += ret
    return 0


@bpf.xdp
def xdp_udp(ctx) -> int:
    h = ctx.packet(EthIpUdp, 0)
    if h is None:
        return XDP_PASS
    if h.proto == 0x0008 and h.protocol == 17 and h.dport == PORT_BE:
        hits[4] += 1
    return XDP_PASS


@bpf.tc("ingress")
def tc_udp(ctx) -> int:
    h = ctx.packet(EthIpUdp, 0)
    if h is None:
        return TC_ACT_OK
    if h.proto == 0x0008 and h.protocol == 17 and h.dport == PORT_BE:
        hits[5] += 1
    return TC_ACT_OK


@bpf.socket_filter
def sock_all(skb) -> int:
    hits[6] += 1
    return skb.len


@bpf.cgroup_skb("egress")
def cg_egress(skb) -> int:
    hits[7] += 1
    return 1


@bpf.perf_event
def on_sample(ctx) -> int:
    if bpf.tgid() == target_pid:
        hits[8] += 1
    return 0

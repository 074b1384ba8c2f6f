"""Example: a tc program and a cgroup_skb program sharing a Global counter."""
from pybpfc import TC_ACT_OK, Global, Struct, bpf, u8, u16, u64

seen: Global[u64] = 0
long_packets: Global[u64] = 0


class EthHdr(Struct):
    dst0: u16
    dst1: u16
    dst2: u16
    src0: u16
    src1: u16
    src2: u16
    proto: u16


@bpf.tc("ingress")
def tc_count(skb) -> int:
    global seen, long_packets
    seen += 1
    if skb.len > 100:
        long_packets += 1
    eth = skb.packet(EthHdr, 0)
    if eth is None:
        return TC_ACT_OK
    return TC_ACT_OK


@bpf.cgroup_skb("egress")
def allow_all(skb) -> int:
    first = skb.packet(u8, 0)
    if first is not None and first == 0xFF:
        return 0
    return 1

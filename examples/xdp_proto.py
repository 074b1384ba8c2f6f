"""Count packets per IP protocol on an interface (XDP + PerCpuArray).

    pybpfc run examples/xdp_proto.py --iface eth0 --duration 5
"""
from pybpfc import XDP_PASS, Array, PerCpuArray, Struct, bpf, u8, u16, u32, u64


class EthHdr(Struct):
    dst: Array[u8, 6]
    src: Array[u8, 6]
    proto: u16              # network byte order


class IpHdr(Struct):
    ver_ihl: u8
    tos: u8
    tot_len: u16
    id: u16
    frag_off: u16
    ttl: u8
    protocol: u8
    check: u16
    saddr: u32
    daddr: u32


ETH_P_IP_BE = 0x0008        # htons(0x0800) as read on a little-endian machine

counts = PerCpuArray(u64, max_entries=256)


@bpf.xdp
def count_proto(ctx) -> int:
    eth = ctx.packet(EthHdr, 0)
    if eth is None:
        return XDP_PASS
    if eth.proto != ETH_P_IP_BE:
        return XDP_PASS
    ip = ctx.packet(IpHdr, 14)
    if ip is None:
        return XDP_PASS
    counts[ip.protocol] += 1
    return XDP_PASS


if __name__ == "__main__":
    import sys
    import time

    import pybpfc

    with pybpfc.load(__file__) as obj:
        obj.programs.count_proto.attach_xdp(sys.argv[1] if len(sys.argv) > 1 else "lo")
        time.sleep(5)
        for proto in range(256):
            n = obj.maps.counts.sum(proto)
            if n:
                print(f"proto {proto:>3}: {n}")

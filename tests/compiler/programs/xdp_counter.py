"""Example: count packets and bytes per IP protocol in a Struct value (XDP + HashMap + lookup)."""
from pybpfc import XDP_DROP, XDP_PASS, Array, HashMap, Struct, bpf, u8, u16, u32, u64


class EthHdr(Struct):
    dst: Array[u8, 6]
    src: Array[u8, 6]
    proto: u16


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


class Stats(Struct):
    packets: u64
    bytes: u64


stats = HashMap(u8, Stats, max_entries=256)
blocked: u32 = 0x0100000A     # 10.0.0.1 as read from the packet (network order)


def ip_header_len(ver_ihl: u8) -> u32:
    return (ver_ihl & 0xF) * 4


@bpf.xdp
def count(ctx) -> int:
    eth = ctx.packet(EthHdr, 0)
    if eth is None or eth.proto != 0x0008:
        return XDP_PASS
    ip = ctx.packet(IpHdr, 14)
    if ip is None:
        return XDP_PASS
    if ip.saddr == blocked:
        return XDP_DROP
    s = stats.lookup(ip.protocol)
    if s is None:
        stats[ip.protocol] = Stats(packets=1, bytes=ip_header_len(ip.ver_ihl))
    else:
        s.packets += 1
        s.bytes += ip_header_len(ip.ver_ihl)
    return XDP_PASS

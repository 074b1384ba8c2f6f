"""Example: per-flow UDP/TCP statistics keyed by a Struct, new flows reported on a ring buffer."""
from pybpfc import (XDP_PASS, Array, Const, Global, LruHashMap, RingBuf, Struct, bpf, u8, u16, u32, u64)


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


class Ports(Struct):
    sport: u16
    dport: u16


class FlowKey(Struct):
    saddr: u32
    daddr: u32
    sport: u16
    dport: u16
    proto: u8


class FlowStats(Struct):
    packets: u64
    bytes: u64
    first_ns: u64


class NewFlow(Struct):
    key: FlowKey
    ts: u64


flows = LruHashMap(FlowKey, FlowStats, max_entries=1024)
new_flows = RingBuf(max_entries=16 * 1024)
min_len: Const[u32] = 0
skipped: Global[u64] = 0


def swap16(x: u16) -> u16:
    return ((x & 0xFF) << 8) | (x >> 8)


def fill_key(key: FlowKey, ip: IpHdr, ports: Ports) -> None:
    key.saddr = ip.saddr
    key.daddr = ip.daddr
    key.proto = ip.protocol
    key.sport = swap16(ports.sport)
    key.dport = swap16(ports.dport)


@bpf.xdp
def track(ctx) -> int:
    global skipped
    eth = ctx.packet(EthHdr, 0)
    if eth is None or eth.proto != 0x0008:
        return XDP_PASS
    ip = ctx.packet(IpHdr, 14)
    if ip is None or (ip.protocol != 6 and ip.protocol != 17):
        return XDP_PASS
    size = swap16(ip.tot_len)
    if size < min_len:
        skipped += 1
        return XDP_PASS
    ports = ctx.packet(Ports, 14 + (ip.ver_ihl & 0xF) * 4)
    if ports is None:
        return XDP_PASS
    key = FlowKey()
    fill_key(key, ip, ports)
    st = flows.lookup(key)
    if st is not None:
        st.packets += 1
        st.bytes += size
        return XDP_PASS
    now = bpf.ktime_ns()
    flows[key] = FlowStats(packets=1, bytes=size, first_ns=now)
    ev = new_flows.reserve(NewFlow)
    if ev is not None:
        ev.key = key
        ev.ts = now
        new_flows.submit(ev)
    return XDP_PASS

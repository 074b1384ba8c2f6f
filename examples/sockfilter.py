"""A socket filter that keeps only UDP datagrams whose payload starts with b"ok" and counts the rest.

    Attach with obj.programs.keep_ok.attach_socket_filter(sock).
"""
from pybpfc import ArrayMap, bpf, u32, u64

dropped = ArrayMap(u32, u64, max_entries=1)


@bpf.socket_filter
def keep_ok(skb) -> int:
    # On a UDP socket the filter sees the 8-byte UDP header, then the payload.
    first = bpf.load_byte(skb, 8)
    second = bpf.load_byte(skb, 9)
    if first == 0x6F and second == 0x6B:   # "ok"
        return skb.len                     # keep the whole datagram
    dropped[0] += 1
    return 0                               # drop


if __name__ == "__main__":
    import socket

    import pybpfc

    with pybpfc.load(__file__) as obj:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        obj.programs.keep_ok.attach_socket_filter(a)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for msg in (b"ok 1", b"no 2", b"ok 3"):
            b.sendto(msg, a.getsockname())
        a.settimeout(0.5)
        try:
            while True:
                print("received", a.recv(100))
        except socket.timeout:
            pass
        print("dropped", obj.maps.dropped[0])

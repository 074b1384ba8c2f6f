"""Ring buffer to Python: events per second delivered as decoded Structs, next to a plain
Python mmap reader measured in the same run on the same events.

    sudo .venv/bin/python benchmarks/ringbuf.py [--events N] [--rounds R]

An XDP program run with BPF_PROG_TEST_RUN writes 64 events per run (bpf_ringbuf_output,
16-byte `Event`) into a 64 MiB ring buffer; each round fills the ring with N events, then
times one consumer draining it:
  - baseline: a plain Python reader over the same mmap (header by header, bytes per record);
  - naive:    the baseline plus `Event._unpack` per record (what a simple loader would do);
  - pybpfc:   Collection.ringbuf(...).poll(0), decoded Event instances.
A second mode (--concurrent) times the consumer while the producer runs in another thread.
Every event is checked (count and sequence numbers) so a fast-but-wrong reader cannot win.
Goal: pybpfc >= 2,000,000 events/s. Needs root and kernel eBPF.
"""
from __future__ import annotations

import argparse
import mmap
import os
import statistics
import struct
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pybpfc  # noqa: E402
from pybpfc import uapi as U  # noqa: E402
from pybpfc.asm import assemble, encode  # noqa: E402
from pybpfc.elf.spec import CollectionSpec, MapSpec, ProgramSpec, Relocation  # noqa: E402
from pybpfc.lang.types import Struct, u32, u64  # noqa: E402

PER_RUN = 64
RING = 64 << 20


class Event(Struct):
    seq: u64
    i: u32
    magic: u32


# r8 = &cnt[0]; 64 times: seq = (*r8)++; ringbuf_output(&events, {seq, i, 0xabcd}, 16, NO_WAKEUP)
PROG = f"""
mov %r1, 0
stxw [%r10-4], %r1
lddw %r1, 0
mov %r2, %r10
add %r2, -4
call 1
jeq %r0, 0, out
mov %r8, %r0
mov %r6, 0
loop:
ldxdw %r7, [%r8]
mov %r1, %r7
add %r1, 1
stxdw [%r8], %r1
stxdw [%r10-24], %r7
stxw [%r10-16], %r6
mov %r1, 0xabcd
stxw [%r10-12], %r1
lddw %r1, 0
mov %r2, %r10
add %r2, -24
mov %r3, 16
mov %r4, 1
call 130
add %r6, 1
jlt %r6, {PER_RUN}, loop
out:
mov %r0, 2
exit
"""


def build_spec() -> CollectionSpec:
    insns = encode(assemble(PROG))
    relocs = [Relocation(insn=2, kind="map", target="cnt"),
              Relocation(insn=18, kind="map", target="events")]
    for r in relocs:
        assert insns[r.insn * 8] == 0x18, "relocation index drifted from the program text"
    p = ProgramSpec(name="emit", section="xdp", type=U.BPF_PROG_TYPE_XDP, kind="xdp",
                    insns=insns, relocations=relocs)
    maps = [MapSpec(name="cnt", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=8, max_entries=1),
            MapSpec(name="events", type=U.BPF_MAP_TYPE_RINGBUF, key_size=0, value_size=0,
                    max_entries=RING, event_type=Event)]
    return CollectionSpec(programs={"emit": p}, maps={m.name: m for m in maps})


class PlainReader:
    """The baseline: what a straightforward Python mmap consumer does."""

    def __init__(self, fd: int, size: int):
        ps = mmap.PAGESIZE
        self.cons = mmap.mmap(fd, ps, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.prod = mmap.mmap(fd, ps + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=ps)
        self.ps, self.mask = ps, size - 1

    def drain(self, decode=None) -> list:
        out = []
        cons = struct.unpack_from("<Q", self.cons, 0)[0]
        prod = struct.unpack_from("<Q", self.prod, 0)[0]
        base, mask, prod_m = self.ps, self.mask, self.prod
        while cons < prod:
            off = base + (cons & mask)
            (hdr,) = struct.unpack_from("<I", prod_m, off)
            if hdr & (1 << 31):
                break
            ln = hdr & 0x3FFFFFFF
            if not hdr & (1 << 30):
                rec = prod_m[off + 8:off + 8 + ln]
                out.append(decode(rec) if decode else rec)
            cons += (ln + 15) & ~7
        struct.pack_into("<Q", self.cons, 0, cons)
        return out

    def close(self):
        self.cons.close()
        self.prod.close()


def fill(prog, n: int) -> None:
    prog.test_run(bytes(64), repeat=n // PER_RUN)


def check(events, start: int, n: int, raw: bool):
    if len(events) != n:
        raise SystemExit(f"lost events: got {len(events)} of {n}")
    first, last = events[0], events[-1]
    if raw:
        first, last = Event._unpack(first), Event._unpack(last)
    if first.seq != start or last.seq != start + n - 1:
        raise SystemExit(f"wrong sequence: {first.seq}..{last.seq}, expected {start}..{start + n - 1}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrent", action="store_true", help="also time producer and consumer running together")
    args = ap.parse_args()
    n = args.events // PER_RUN * PER_RUN
    if n * 24 > RING:
        raise SystemExit(f"--events at most {RING // 24 // PER_RUN * PER_RUN} (ring holds {RING >> 20} MiB)")
    if os.geteuid() != 0:
        print("needs root (kernel eBPF)")
        return 0
    with pybpfc.load(build_spec(), backend="kernel") as c:
        prog = c.programs.emit
        raw_map = c.maps.events.raw
        plain = PlainReader(raw_map.fd, raw_map.max_entries)
        rb = c.ringbuf("events")
        results = {"baseline (plain mmap reader, bytes)": [], "naive (plain reader + Event._unpack)": [],
                   "pybpfc (decoded Event structs)": []}
        seq = 0
        for _ in range(args.rounds):
            for name, reader in (("baseline (plain mmap reader, bytes)", lambda: plain.drain()),
                                 ("naive (plain reader + Event._unpack)", lambda: plain.drain(Event._unpack)),
                                 ("pybpfc (decoded Event structs)", lambda: rb.poll(0))):
                fill(prog, n)
                t0 = time.perf_counter()
                evs = reader()
                dt = time.perf_counter() - t0
                check(evs, seq, n, raw=name.startswith("baseline"))
                del evs  # freed outside the timed region
                seq += n
                results[name].append(n / dt)
        from pybpfc.backends.kernel import fast

        path = "native constructor (_kfast)" if fast.mod is not None else f"pure Python ({fast.why_not})"
        print(f"ring buffer -> Python, {n:,} events of {Event._size} bytes per round, "
              f"median of {args.rounds} rounds (fill, then drain); decode path: {path}")
        base = statistics.median(results["baseline (plain mmap reader, bytes)"])
        for name, vals in results.items():
            med = statistics.median(vals)
            print(f"  {name:<40} {med:>14,.0f} events/s   x{med / base:.2f} vs baseline")
        ours = statistics.median(results["pybpfc (decoded Event structs)"])
        print(f"goal >= 2,000,000 decoded events/s: {'met' if ours >= 2e6 else 'NOT met'} ({ours:,.0f})")

        if args.concurrent:
            got: list = []
            runs = n // PER_RUN
            done = threading.Event()

            def produce():
                for _ in range(runs // 256):
                    prog.test_run(bytes(64), repeat=256)
                done.set()

            total = runs // 256 * 256 * PER_RUN
            th = threading.Thread(target=produce)
            t0 = time.perf_counter()
            th.start()
            while len(got) < total:
                got.extend(rb.poll(0 if not done.is_set() else 0.1))
                if done.is_set() and rb.raw.available() == 0 and len(got) < total:
                    break
            dt = time.perf_counter() - t0
            th.join()
            check(got, seq, total, raw=False)
            print(f"  concurrent producer+consumer (pybpfc)   {total / dt:>14,.0f} events/s "
                  f"(bounded by the producer on a shared 2-core machine)")
        plain.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

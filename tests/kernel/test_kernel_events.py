"""Ring buffer and perf buffer readers: every event of a burst arrives, in order, decoded."""
import select

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.elf.spec import MapSpec
from pybpfc.lang.types import Array, Str, Struct, u32, u64

from kernel_helpers import collection, kernel_or_skip, prog

PKT = bytes(64)


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()


class Event(Struct):
    seq: u64
    magic: u32
    tag: Str[4]


# Each run: seq = counter[0]++; emit Event(seq, 0xabcd, "ev") with `{emit}`.
SEQ = """
mov %r1, 0
stxw [%r10-4], %r1
lddw %r1, map:cnt
mov %r2, %r10
add %r2, -4
call 1
jeq %r0, 0, out
ldxdw %r7, [%r0]
mov %r1, %r7
add %r1, 1
stxdw [%r0], %r1
{emit}
out:
mov %r0, 2
exit
"""

OUTPUT = """
stxdw [%r10-24], %r7
mov %r1, 0xabcd
stxw [%r10-16], %r1
mov %r1, 0x7665
stxw [%r10-12], %r1
lddw %r1, map:events
mov %r2, %r10
add %r2, -24
mov %r3, 16
mov %r4, 0
call 130
"""

# reserve 16 bytes; fill; submit when seq is even, discard when odd
RESERVE = """
lddw %r1, map:events
mov %r2, 16
mov %r3, 0
call 131
jeq %r0, 0, out
stxdw [%r0], %r7
mov %r1, 0xabcd
stxw [%r0+8], %r1
mov %r1, 0x7665
stxw [%r0+12], %r1
mov %r1, %r0
mov %r2, 0
mov %r8, %r7
and %r8, 1
jeq %r8, 1, discard
call 132
ja out
discard:
call 133
"""

PERF_OUTPUT = """
stxdw [%r10-24], %r7
mov %r1, 0xabcd
stxw [%r10-16], %r1
mov %r1, 0x7665
stxw [%r10-12], %r1
mov %r1, %r6
lddw %r2, map:events
lddw %r3, 0xffffffff
mov %r4, %r10
add %r4, -24
mov %r5, 16
call 25
"""


def _cnt():
    return MapSpec(name="cnt", type=U.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=8, max_entries=1)


def _ringbuf_coll(emit, size=1 << 20):
    rb = MapSpec(name="events", type=U.BPF_MAP_TYPE_RINGBUF, key_size=0, value_size=0,
                 max_entries=size, event_type=Event)
    return pybpfc.load(collection([_cnt(), rb], [prog("emit", SEQ.format(emit=emit))]), backend="kernel")


def _collect(rb, n, timeout=2.0):
    got = []
    while len(got) < n:
        batch = rb.poll(timeout)
        if not batch:
            break
        got.extend(batch)
    return got


def test_ringbuf_burst_in_order():
    with _ringbuf_coll(OUTPUT) as c:
        rb = c.ringbuf("events")
        assert rb.poll(0) == []
        c.programs.emit.test_run(PKT, repeat=10000)
        got = _collect(rb, 10000)
        assert len(got) == 10000
        assert [e.seq for e in got] == list(range(10000))
        assert all(isinstance(e, Event) and e.magic == 0xabcd and e.tag == b"ev" for e in got)
        assert rb.poll(0) == []
        # a second burst continues where the first stopped (consumer position written back)
        c.programs.emit.test_run(PKT, repeat=100)
        assert [e.seq for e in _collect(rb, 100)] == list(range(10000, 10100))


def test_ringbuf_wraps_around():
    # 4 pages hold ~680 events: 10 bursts of 500 force the producer around the ring.
    with _ringbuf_coll(OUTPUT, size=4 * 4096) as c:
        rb = c.ringbuf("events")
        seqs = []
        for _ in range(10):
            c.programs.emit.test_run(PKT, repeat=500)
            seqs += [e.seq for e in _collect(rb, 500)]
        assert seqs == list(range(5000))


def test_ringbuf_discarded_records_are_skipped():
    with _ringbuf_coll(RESERVE) as c:
        rb = c.ringbuf("events")
        c.programs.emit.test_run(PKT, repeat=1000)
        got = _collect(rb, 500)
        assert [e.seq for e in got] == list(range(0, 1000, 2))


def test_ringbuf_raw_bytes_and_fileno():
    with _ringbuf_coll(OUTPUT) as c:
        rb = c.ringbuf("events", raw=True)
        sel = select.epoll()
        sel.register(rb.fileno(), select.EPOLLIN)
        assert sel.poll(0) == []
        c.programs.emit.test_run(PKT, repeat=3)
        assert sel.poll(1)  # readable once events are there
        got = rb.poll(0)
        sel.close()
        assert len(got) == 3 and all(isinstance(b, bytes) and len(b) == 16 for b in got)
        assert Event.from_bytes(got[2]).seq == 2


def test_ringbuf_poll_timeout_returns_empty():
    with _ringbuf_coll(OUTPUT) as c:
        assert c.ringbuf("events").poll(0.05) == []


def _perf_coll():
    pe = MapSpec(name="events", type=U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, key_size=4, value_size=4,
                 max_entries=0, event_type=Event)
    body = "mov %r6, %r1\n" + SEQ.format(emit=PERF_OUTPUT)
    return pybpfc.load(collection([_cnt(), pe], [prog("emit", body)]), backend="kernel")


def test_perfbuf_burst():
    with _perf_coll() as c:
        with pytest.raises(pybpfc.Error, match=r"map 'events': perf buffer page_count must be a power of two, got 3"):
            c.perfbuf("events", page_count=3)
        pb = c.perfbuf("events", page_count=64)
        c.programs.emit.test_run(PKT, repeat=5000)
        got = _collect(pb, 5000)
        assert sorted(e.seq for e in got) == list(range(5000))
        assert all(e.magic == 0xabcd and e.tag == b"ev" for e in got)
        assert pb.lost == 0


def test_perfbuf_counts_lost_events():
    with _perf_coll() as c:
        pb = c.perfbuf("events", page_count=1)
        c.programs.emit.test_run(PKT, repeat=2000)  # a 4 KiB ring holds ~100 of them
        got = _collect(pb, 2000, timeout=0.2)
        c.programs.emit.test_run(PKT)  # the kernel reports the loss with the next record
        got += _collect(pb, 1, timeout=0.2)
        assert pb.lost > 0
        assert len(got) + pb.lost == 2001
        seqs = [e.seq for e in got]
        assert seqs == sorted(seqs) and seqs[-1] == 2000


class Plain(Struct):
    seq: u64
    magic: u32
    tag: u32


def test_ringbuf_scalar_events_native_and_python_paths_agree():
    from pybpfc.backends.kernel import fast
    from pybpfc.backends.kernel.ringbuf import KernelRingBuffer

    with _ringbuf_coll(OUTPUT) as c:
        rb = c.ringbuf("events", event_type=Plain)
        c.programs.emit.test_run(PKT, repeat=3000)
        got = _collect(rb, 3000)
        assert [e.seq for e in got] == list(range(3000))
        assert all(type(e) is Plain and e.magic == 0xabcd and e.tag == 0x7665 for e in got)
        dec = rb._decoder
        assert dec.native_fields == (("seq", "magic", "tag"), b"QII", (0, 8, 12), (8, 4, 4))
        rec = b"".join(bytes(8) + Plain(seq=i, magic=1, tag=2).to_bytes() for i in range(5))
        py = dec.many(memoryview(rec), 5, 24, 8)
        native = KernelRingBuffer._many(dec, memoryview(rec), 5, 24)
        assert py == native == [Plain(seq=i, magic=1, tag=2) for i in range(5)]
        # strings too: bytes up to the first NUL, the full field when there is none
        from pybpfc.collection import EventDecoder

        sdec = EventDecoder(Event)
        evs = [Event(seq=1 << 63, magic=7, tag=b"ab"), Event(seq=0, magic=0, tag=b"full")]
        rec = b"".join(bytes(8) + e.to_bytes() for e in evs)
        assert sdec.many(memoryview(rec), 2, 24, 8) == KernelRingBuffer._many(sdec, memoryview(rec), 2, 24) == evs
        if fast.mod is None:
            pytest.skip(f"native fast path not built here ({fast.why_not}); Python path checked")


def test_perfbuf_records_split_by_the_ring_end():
    # 24-byte samples make 40-byte records, which do not divide the 4 KiB ring: records
    # straddle its end on every lap.
    body = "mov %r6, %r1\n" + SEQ.format(emit=PERF_OUTPUT.replace(
        "mov %r5, 16", "mov %r5, 0\nstxdw [%r10-8], %r5\nmov %r5, 24"))
    pe = MapSpec(name="events", type=U.BPF_MAP_TYPE_PERF_EVENT_ARRAY, key_size=4, value_size=4,
                 max_entries=0, event_type=Event)
    with pybpfc.load(collection([_cnt(), pe], [prog("emit", body)]), backend="kernel") as c:
        pb = c.perfbuf("events", page_count=1)
        got = []
        for _ in range(40):
            c.programs.emit.test_run(PKT, repeat=50)
            got += _collect(pb, 50, timeout=1)
        assert pb.lost == 0
        assert sorted(e.seq for e in got) == list(range(2000))
        assert all(e.magic == 0xabcd and e.tag == b"ev" for e in got)


def test_short_record_is_reported_after_the_good_ones():
    class Big(Struct):
        seq: u64
        pad: Array[u64, 4]

    with _ringbuf_coll(OUTPUT) as c:
        rb = c.ringbuf("events", event_type=Big)
        c.programs.emit.test_run(PKT, repeat=2)
        for _ in range(2):  # each bad record is consumed with its error, never an endless loop
            with pytest.raises(pybpfc.Error, match=r"map 'events': event of 16 bytes is shorter than Big \(40\)"):
                rb.poll(0)
        assert rb.poll(0) == []
        # the consumer position is the map's: a new reader continues after the bad records
        good = c.ringbuf("events")
        c.programs.emit.test_run(PKT, repeat=1)
        assert [e.seq for e in good.poll(0)] == [2]


def test_ringbuf_consumer_woken_while_producer_runs():
    import threading

    with _ringbuf_coll(OUTPUT, size=64 * 4096) as c:
        rb = c.ringbuf("events")
        total, got = 20000, []

        def produce():
            for _ in range(total // 500):
                c.programs.emit.test_run(PKT, repeat=500)  # the ring holds ~10k: must be drained meanwhile

        th = threading.Thread(target=produce)
        th.start()
        while len(got) < total:
            batch = rb.poll(2.0)  # epoll wakeups, not busy polling
            if not batch and not th.is_alive() and rb.raw.available() == 0:
                break
            got += batch
        th.join()
        seqs = [e.seq for e in got]
        # a full ring makes bpf_ringbuf_output fail (the event is lost, not reordered)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert len(got) > 10000


def test_ringbuf_with_asyncio_reader():
    import asyncio

    async def main(c):
        rb = c.ringbuf("events")
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(rb.fileno(), ready.set)
        try:
            loop.call_later(0.05, lambda: c.programs.emit.test_run(PKT, repeat=10))
            await asyncio.wait_for(ready.wait(), 5)
            return rb.poll(0)
        finally:
            loop.remove_reader(rb.fileno())

    with _ringbuf_coll(OUTPUT) as c:
        got = asyncio.run(main(c))
        assert [e.seq for e in got] == list(range(10))

"""Ring buffer and perf buffer readers: mmap'ed rings, epoll for waiting.

Ring buffer (BPF_MAP_TYPE_RINGBUF): the consumer page is mapped read-write, the producer
page and the data area read-only; the kernel maps the data area twice back to back, so a
record that wraps is still contiguous in our view. Records carry an 8-byte header (length
with BUSY/DISCARD bits, page offset) and are 8-byte aligned.

poll_decoded() is the fast path: for records of one fixed size, the headers of every
available record are checked in one strided copy and the records decoded with a single
struct.iter_unpack by the caller's decoder; anything else (busy, discarded, other sizes)
drops to the record-by-record path.
"""
from __future__ import annotations

import fcntl
import gc
import mmap
import os
import select
import struct
from typing import Optional

from ...errors import Error, LoadError
from ..base import RawRingBuffer
from . import perf as P
from .fast import mod as _fast
from .syscall import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT

_BUSY, _DISCARD = BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT
_LEN_MASK = ~(_BUSY | _DISCARD) & 0xFFFFFFFF


def _wait(ep, timeout: Optional[float]) -> None:
    try:
        ep.poll(-1 if timeout is None else timeout)
    except InterruptedError:
        pass


class KernelRingBuffer(RawRingBuffer):
    def __init__(self, m):
        self.name = m.name
        self._subject = f"map '{m.name}'"
        ps = mmap.PAGESIZE
        size = m.max_entries
        self._size, self._mask = size, size - 1
        try:
            self._cons = mmap.mmap(m.fd, ps, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(m.fd, ps + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=ps)
        except OSError as e:
            raise LoadError(f"{self._subject}: cannot mmap the ring buffer: {e.strerror}") from None
        self._cons_q = memoryview(self._cons).cast("Q")
        self._prod_q = memoryview(self._prod)[:8].cast("Q")
        self._data = memoryview(self._prod)[ps:]
        self._u32 = self._data.cast("I")
        self._ep = select.epoll()
        self._ep.register(m.fd, select.EPOLLIN)
        self._pattern = {}  # record size -> header bytes repeated (for the bulk check)
        self._error = None

    def fileno(self) -> int:
        return self._ep.fileno()

    def available(self) -> int:
        """Bytes written by the producer and not consumed yet."""
        return self._prod_q[0] - self._cons_q[0]

    def _drain(self, out: list, limit: int = 1 << 62) -> None:
        data, u32, mask = self._data, self._u32, self._mask
        cons = self._cons_q[0]
        prod = self._prod_q[0]
        start = cons
        while cons < prod and len(out) < limit:
            off = cons & mask
            hdr = u32[off >> 2]
            if hdr & _BUSY:
                break
            ln = hdr & _LEN_MASK
            if not hdr & _DISCARD:
                out.append(data[off + 8:off + 8 + ln].tobytes())
            cons += (ln + 15) & ~7
            if cons - start >= self._size >> 2:  # give space back to producers during long drains
                self._cons_q[0] = cons
                start = cons
        self._cons_q[0] = cons

    def poll(self, timeout: Optional[float] = None) -> list:
        out: list = []
        self._drain(out)
        if out or timeout == 0:
            return out
        _wait(self._ep, timeout)
        self._drain(out)
        return out

    def poll_decoded(self, timeout: Optional[float], decoder) -> list:
        """Records decoded by `decoder` (`size`, `one(bytes)`, `many(memoryview, n, stride, hdr)`)."""
        if self._error is not None:  # a bad record found by the previous poll
            e, self._error = self._error, None
            raise e
        out: list = []
        self._drain_decoded(out, decoder)
        if not out and self._error is None and timeout != 0:
            _wait(self._ep, timeout)
            self._drain_decoded(out, decoder)
        if not out and self._error is not None:
            e, self._error = self._error, None
            raise e
        return out

    def _drain_decoded(self, out: list, dec) -> None:
        size = dec.size
        stride = (size + 15) & ~7
        q = stride >> 2
        pat = self._pattern.get(size)
        if pat is None:
            pat = self._pattern[size] = struct.pack("<I", size) * (self._size // stride + 1)
        data, u32, mask = self._data, self._u32, self._mask
        cons = self._cons_q[0]
        prod = self._prod_q[0]
        while cons < prod:
            off = cons & mask
            n = (prod - cons) // stride
            if n:
                w = off >> 2
                hdrs = u32[w:w + n * q:q].tobytes()
                if hdrs != pat[:4 * n]:
                    # Stop before the first record that is busy, discarded or of another size.
                    k = 0
                    while hdrs[4 * k:4 * k + 4] == pat[:4]:
                        k += 1
                    n = k
                if n:
                    out.extend(self._many(dec, data[off:off + n * stride], n, stride))
                    cons += n * stride
                    self._cons_q[0] = cons
                    continue
            hdr = u32[off >> 2]
            if hdr & _BUSY:
                break
            ln = hdr & _LEN_MASK
            rec = None if hdr & _DISCARD else data[off + 8:off + 8 + ln].tobytes()
            cons += (ln + 15) & ~7
            self._cons_q[0] = cons
            if rec is not None:
                try:
                    out.append(dec.one(rec))
                except Error as e:
                    # Deliver what came before it; the error is raised by the next poll.
                    self._error = e
                    break
        self._cons_q[0] = cons

    @staticmethod
    def _many(dec, mv, n: int, stride: int) -> list:
        fields = getattr(dec, "native_fields", None)
        if _fast is None or fields is None:
            return dec.many(mv, n, stride, 8)
        # Objects hold only ints and bytes: no cycles for the GC to find while the batch is built.
        reenable = gc.isenabled()
        gc.disable()
        try:
            return _fast.decode(dec.t, *fields, mv, n, stride, 8)
        finally:
            if reenable:
                gc.enable()

    def close(self) -> None:
        if self._ep is None:
            return
        self._ep.close()
        self._ep = None
        for v in (self._u32, self._data, self._prod_q, self._cons_q):
            v.release()
        self._prod.close()
        self._cons.close()


class KernelPerfBuffer(RawRingBuffer):
    """One PERF_COUNT_SW_BPF_OUTPUT event per online CPU, each with its own mmap ring, stored
    in the perf event array at the CPU's index."""

    def __init__(self, m, page_count: int = 64):
        self.name = m.name
        self._subject = f"map '{m.name}'"
        if page_count <= 0 or page_count & (page_count - 1):
            raise Error(f"{self._subject}: perf buffer page_count must be a power of two, got {page_count}")
        self._ps = mmap.PAGESIZE
        self._dsize = page_count * self._ps
        self._lost = 0
        self._rings = []  # (cpu, fd, mmap)
        self._ep = select.epoll()
        self._map = m
        try:
            for cpu in P.online_cpus():
                if cpu >= m.max_entries:
                    continue
                attr = P.PerfEventAttr(type=P.PERF_TYPE_SOFTWARE, config=P.PERF_COUNT_SW_BPF_OUTPUT,
                                       sample_type=P.PERF_SAMPLE_RAW, sample_period=1,
                                       wakeup_events=1)
                fd = P.perf_event_open(attr, -1, cpu, subject=self._subject, exc=LoadError)
                try:
                    mm = mmap.mmap(fd, self._ps + self._dsize, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
                except OSError as e:
                    os.close(fd)
                    raise LoadError(f"{self._subject}: cannot mmap the perf ring of CPU {cpu}: "
                                    f"{e.strerror}") from None
                self._rings.append((cpu, fd, mm))
                m.update(struct.pack("<I", cpu), struct.pack("<I", fd))
                fcntl.ioctl(fd, P.PERF_EVENT_IOC_ENABLE, 0)
                self._ep.register(fd, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    @property
    def lost(self) -> int:
        return self._lost

    def fileno(self) -> int:
        return self._ep.fileno()

    def _drain(self, out: list) -> None:
        ps, size = self._ps, self._dsize
        for _cpu, _fd, mm in self._rings:
            head = struct.unpack_from("<Q", mm, P.MMAP_DATA_HEAD)[0]
            tail = struct.unpack_from("<Q", mm, P.MMAP_DATA_TAIL)[0]
            while tail < head:
                off = tail % size
                hdr = self._read(mm, off, 8)
                rtype, _misc, rsize = struct.unpack("<IHH", hdr)
                if rsize < 8:
                    break  # corrupt; never spin
                if rtype == P.PERF_RECORD_SAMPLE:
                    body = self._read(mm, (off + 8) % size, rsize - 8)
                    (raw_size,) = struct.unpack_from("<I", body)
                    out.append(body[4:4 + raw_size])
                elif rtype == P.PERF_RECORD_LOST:
                    body = self._read(mm, (off + 8) % size, rsize - 8)
                    self._lost += struct.unpack_from("<QQ", body)[1]
                tail += rsize
            struct.pack_into("<Q", mm, P.MMAP_DATA_TAIL, tail)

    def _read(self, mm, off: int, n: int) -> bytes:
        base, size = self._ps, self._dsize
        if off + n <= size:
            return mm[base + off:base + off + n]
        first = size - off
        return mm[base + off:base + size] + mm[base:base + n - first]

    def poll(self, timeout: Optional[float] = None) -> list:
        out: list = []
        self._drain(out)
        if out or timeout == 0:
            return out
        _wait(self._ep, timeout)
        self._drain(out)
        return out

    def close(self) -> None:
        if self._ep is None:
            return
        for cpu, fd, mm in self._rings:
            try:
                self._map.delete(struct.pack("<I", cpu))
            except Exception:
                pass
            try:
                fcntl.ioctl(fd, P.PERF_EVENT_IOC_DISABLE, 0)
            except OSError:
                pass
            mm.close()
            os.close(fd)
        self._rings = []
        self._ep.close()
        self._ep = None

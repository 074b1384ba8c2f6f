"""Map declarations. At import time in user space these only record what was declared; the
compiler reads the attributes, and inside programs their methods compile to helper calls."""
from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar

from .. import uapi as U
from .types import resolve_type, u32, u64

K = TypeVar("K")
V = TypeVar("V")
E = TypeVar("E")


class Map:
    """Base of all map declarations. `kind` names the operations the compiler allows."""

    map_type: int = 0
    kind: str = "hash"

    def __init__(self, key: Any = None, value: Any = None, max_entries: int = 1, flags: int = 0,
                 pinned: bool = False):
        for what, t in (("key", key), ("value", value)):
            if t is not None and not hasattr(resolve_type(t), "_size"):
                raise TypeError(f"{type(self).__name__}: {what} type {t!r} is not a pybpfc type "
                                f"(use u8..u64, i8..i64, a Struct, Array[T, N] or Str[N])")
        if int(max_entries) < 0:
            raise ValueError(f"{type(self).__name__}: max_entries must not be negative")
        self.key = resolve_type(key) if key is not None else None
        self.value = resolve_type(value) if value is not None else None
        self.max_entries = int(max_entries)
        self.flags = int(flags)
        self.pinned = bool(pinned)
        self.event: Any = None          # Struct carried by ring/perf buffers (filled by the compiler)
        self.tags: dict = {}

    def __repr__(self):
        return f"{type(self).__name__}(key={self.key}, value={self.value}, max_entries={self.max_entries})"

    # Program-side operations: typed for mypy, never run in user space.
    def get(self, key: Any, default: Any = None) -> Any: ...
    def lookup(self, key: Any) -> Any: ...
    def update(self, key: Any, value: Any, flags: int = 0) -> int: ...
    def delete(self, key: Any) -> int: ...
    def __getitem__(self, key: Any) -> Any: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...
    def __delitem__(self, key: Any) -> None: ...


class HashMap(Map, Generic[K, V]):
    map_type = U.BPF_MAP_TYPE_HASH

    def __init__(self, key: "type[K]", value: "type[V]", max_entries: int = 10240, flags: int = 0,
                 pinned: bool = False):
        super().__init__(key, value, max_entries, flags, pinned)


class LruHashMap(HashMap):
    map_type = U.BPF_MAP_TYPE_LRU_HASH


class PerCpuHashMap(HashMap):
    map_type = U.BPF_MAP_TYPE_PERCPU_HASH


class LruPerCpuHashMap(HashMap):
    map_type = U.BPF_MAP_TYPE_LRU_PERCPU_HASH


class LpmTrie(HashMap):
    """Key is a Struct whose first field is `prefixlen: u32` followed by the address bytes."""

    map_type = U.BPF_MAP_TYPE_LPM_TRIE

    def __init__(self, key: Any, value: Any, max_entries: int = 1024, flags: int = 0, pinned: bool = False):
        super().__init__(key, value, max_entries, flags | U.BPF_F_NO_PREALLOC, pinned)


class ArrayMap(Map):
    """`ArrayMap(value, max_entries=N)` or `ArrayMap(u32, value, max_entries=N)`: keys are u32."""

    map_type = U.BPF_MAP_TYPE_ARRAY
    kind = "array"

    def __init__(self, key_or_value: Any, value: Any = None, max_entries: int = 1, flags: int = 0,
                 pinned: bool = False):
        if value is None:
            key_or_value, value = u32, key_or_value
        super().__init__(key_or_value, value, max_entries, flags, pinned)


class PerCpuArray(ArrayMap):
    map_type = U.BPF_MAP_TYPE_PERCPU_ARRAY


class Histogram(ArrayMap):
    """log2 histogram: bucket i counts values v with floor(log2(v)) + 1 == i (0 for v == 0)."""

    def __init__(self, value: Any = u64, max_entries: int = 65, pinned: bool = False):
        super().__init__(u32, u64, max_entries, 0, pinned)
        self.sample_type = resolve_type(value)
        self.tags = {"histogram": "log2"}

    def record(self, value: Any) -> None: ...


class RingBuf(Map):
    map_type = U.BPF_MAP_TYPE_RINGBUF
    kind = "ringbuf"

    def __init__(self, max_entries: int = 256 * 1024, event: Any = None, pinned: bool = False):
        n = int(max_entries)
        if n < 4096 or n & (n - 1):
            raise ValueError(f"RingBuf(max_entries={max_entries}): the size in bytes must be a power of two "
                             f"and at least one page (4096)")
        super().__init__(None, None, max_entries, 0, pinned)
        self.event = event

    def reserve(self, t: Any) -> Any: ...
    def submit(self, e: Any, flags: int = 0) -> None: ...
    def discard(self, e: Any, flags: int = 0) -> None: ...
    def output(self, value: Any, flags: int = 0) -> int: ...


class PerfEventArray(Map):
    map_type = U.BPF_MAP_TYPE_PERF_EVENT_ARRAY
    kind = "perf"

    def __init__(self, event: Any = None, max_entries: int = 0, pinned: bool = False):
        super().__init__(None, None, max_entries, 0, pinned)
        self.event = event

    def output(self, *args: Any) -> int: ...


class ProgArray(Map):
    map_type = U.BPF_MAP_TYPE_PROG_ARRAY
    kind = "progarray"

    def __init__(self, max_entries: int = 8, pinned: bool = False):
        super().__init__(None, None, max_entries, 0, pinned)

    def tail_call(self, ctx: Any, index: Any) -> int: ...


class StackTraceMap(Map):
    map_type = U.BPF_MAP_TYPE_STACK_TRACE
    kind = "stack_trace"

    def __init__(self, max_entries: int = 1024, depth: int = 127, pinned: bool = False):
        from .types import Array

        super().__init__(u32, Array[u64, depth], max_entries, 0, pinned)

    def get_stackid(self, ctx: Any, flags: int = 0) -> int: ...


class Queue(Map):
    map_type = U.BPF_MAP_TYPE_QUEUE
    kind = "queue"

    def __init__(self, value: Any, max_entries: int = 1024, flags: int = 0, pinned: bool = False):
        super().__init__(None, value, max_entries, flags, pinned)

    def push(self, value: Any, flags: int = 0) -> int: ...
    def pop(self) -> Any: ...
    def peek(self) -> Any: ...


class Stack(Queue):
    map_type = U.BPF_MAP_TYPE_STACK


class BloomFilter(Map):
    map_type = U.BPF_MAP_TYPE_BLOOM_FILTER
    kind = "bloom"

    def __init__(self, value: Any, max_entries: int = 1024, hashes: int = 0, pinned: bool = False):
        super().__init__(None, value, max_entries, 0, pinned)
        self.hashes = hashes

    def push(self, value: Any, flags: int = 0) -> int: ...
    def contains(self, value: Any) -> bool: ...


MAP_CLASSES = [HashMap, LruHashMap, PerCpuHashMap, LruPerCpuHashMap, LpmTrie, ArrayMap, PerCpuArray,
               Histogram, RingBuf, PerfEventArray, ProgArray, StackTraceMap, Queue, Stack, BloomFilter]
Optional_ = Optional

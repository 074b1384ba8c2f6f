"""What BPF programs import: types, Struct, maps, program decorators, helper stubs, globals.

Everything here is also importable from `pybpfc` directly.
"""
from .bpf import Const, Global, bpf
from .maps import (ArrayMap, BloomFilter, HashMap, Histogram, LpmTrie, LruHashMap, LruPerCpuHashMap, Map,
                   PerCpuArray, PerCpuHashMap, PerfEventArray, ProgArray, Queue, RingBuf, Stack, StackTraceMap)
from .types import (Array, IntType, Str, Struct, bool_, i8, i16, i32, i64, make_struct, sizeof,
                    u8, u16, u32, u64)

__all__ = ["Array", "IntType", "Str", "Struct", "bool_", "i8", "i16", "i32", "i64", "make_struct",
           "sizeof", "u8", "u16", "u32", "u64", "bpf", "Const", "Global",
           "Map", "HashMap", "LruHashMap", "PerCpuHashMap", "LruPerCpuHashMap", "LpmTrie", "ArrayMap",
           "PerCpuArray", "Histogram", "RingBuf", "PerfEventArray", "ProgArray", "StackTraceMap", "Queue",
           "Stack", "BloomFilter"]

"""What BPF programs import: types, Struct, maps, program decorators, helper stubs, globals.

Everything here is also importable from `pybpfc` directly.
"""
from .types import (Array, IntType, Str, Struct, bool_, i8, i16, i32, i64, make_struct, sizeof,
                    u8, u16, u32, u64)

__all__ = ["Array", "IntType", "Str", "Struct", "bool_", "i8", "i16", "i32", "i64", "make_struct",
           "sizeof", "u8", "u16", "u32", "u64"]

"""Integer typing rules (fixed width, Python-like where cheap)."""
from __future__ import annotations

from ..lang.types import IntType, bool_, i8, i16, i32, i64, u8, u16, u32, u64

INTS = (u8, u16, u32, u64, i8, i16, i32, i64)
_UNSIGNED = {1: u8, 2: u16, 4: u32, 8: u64}


def is_int(t) -> bool:
    return isinstance(t, type) and issubclass(t, IntType)


def bits(t) -> int:
    return 1 if t is bool_ else t._size * 8


def signed(t) -> bool:
    return bool(t._signed) and t is not bool_


def common(a, b):
    """Result type of a binary operation: the wider type; at equal width unsigned wins (as in C).
    bool with bool stays bool (arithmetic then uses u8, see binop_type)."""
    if a is bool_:
        return b
    if b is bool_:
        return a
    if a._size != b._size:
        return a if a._size > b._size else b
    if a._signed != b._signed:
        return _UNSIGNED[a._size]
    return a


def fits(v: int, t) -> bool:
    """A literal fits a type if it is in its range, or (for unsigned) in the signed range of the
    same width, so `x & -256` and `~0` work on unsigned values as in C."""
    if t is bool_:
        return v in (0, 1)
    lo = -(1 << (bits(t) - 1))
    hi = (1 << bits(t)) - 1 if not signed(t) else (1 << (bits(t) - 1)) - 1
    return lo <= v <= hi


def literal_type(v: int):
    """Type of a literal with no context: i64, or u64 when only u64 holds it."""
    return i64 if -(1 << 63) <= v < (1 << 63) else u64


def widen_for(t, lit: int):
    """The operand type, widened (like Python ints would) until the literal fits."""
    if fits(lit, t):
        return t
    order = [i16, i32, i64] if signed(t) else [u16, u32, u64, i64]
    for c in order:
        if c._size > t._size and fits(lit, c):
            return c
    return literal_type(lit)


def binop_type(kind: str, a, b):
    """Result type of `a op b`; operands are int types or (for literals) Python ints.

    kind: "shift" (the left operand decides), "bitwise" (bool stays bool), "div" (// and %) or "arith"."""
    if kind == "shift":
        t = a if not isinstance(a, int) else literal_type(a)
        return u8 if t is bool_ else t
    lit = a if isinstance(a, int) else b if isinstance(b, int) else None
    if kind == "div" and lit is not None and lit < 0:
        # dividing an unsigned value by a negative literal: Python's answer needs a signed type
        other = b if isinstance(a, int) else a
        if not signed(other):
            return i64
    if isinstance(a, int):
        t = widen_for(b, a)
    elif isinstance(b, int):
        t = widen_for(a, b)
    else:
        t = common(a, b)
    if t is bool_ and kind != "bitwise":
        t = u8
    return t


def compare_type(a, b):
    """The type two integer operands compare in, or None when signed meets unsigned (compared
    by value, as in Python; see codegen's mixed_compare)."""
    if isinstance(a, int):
        return b
    if isinstance(b, int):
        return a
    if a is not bool_ and b is not bool_ and signed(a) != signed(b):
        return None
    t = common(a, b)
    return u8 if t is bool_ else t

"""mypy plugin for pybpfc programs: `plugins = pybpfc.lang.mypy_plugin` in mypy's config.

mypy cannot read `Str[16]` or `Array[u8, 6]` (integers are not types) and sees the fixed-width
integer types as variables. The plugin gives annotations the types values have in user space:
u8..i64 -> int, bool_ -> bool, Str[N] -> bytes, Array[T, N] -> list[T], Const[T]/Global[T] -> T.
"""
from __future__ import annotations

from typing import Callable, Optional

from mypy.plugin import AnalyzeTypeContext, Plugin
from mypy.types import Type

_INTS = {f"pybpfc.lang.types.{n}" for n in ("u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "IntType")}


def _int(ctx: AnalyzeTypeContext) -> Type:
    return ctx.api.named_type("builtins.int", [])


def _bool(ctx: AnalyzeTypeContext) -> Type:
    return ctx.api.named_type("builtins.bool", [])


def _str(ctx: AnalyzeTypeContext) -> Type:
    return ctx.api.named_type("builtins.bytes", [])


def _array(ctx: AnalyzeTypeContext) -> Type:
    args = ctx.type.args
    if len(args) != 2:
        ctx.api.fail("Array takes two parameters: Array[T, N]", ctx.context)
        return ctx.api.named_type("builtins.list", [ctx.api.named_type("builtins.int", [])])
    return ctx.api.named_type("builtins.list", [ctx.api.analyze_type(args[0])])


def _inner(ctx: AnalyzeTypeContext) -> Type:
    args = ctx.type.args
    if len(args) != 1:
        ctx.api.fail("Const/Global take one type parameter", ctx.context)
        return ctx.api.named_type("builtins.int", [])
    return ctx.api.analyze_type(args[0])


class PybpfcPlugin(Plugin):
    def get_type_analyze_hook(self, fullname: str) -> Optional[Callable[[AnalyzeTypeContext], Type]]:
        if fullname in _INTS:
            return _int
        if fullname == "pybpfc.lang.types.bool_":
            return _bool
        if fullname == "pybpfc.lang.types.Str":
            return _str
        if fullname == "pybpfc.lang.types.Array":
            return _array
        if fullname in ("pybpfc.lang.bpf.Const", "pybpfc.lang.bpf.Global"):
            return _inner
        return None


def plugin(version: str):
    return PybpfcPlugin

"""Lowering of checked Python function ASTs to LLVM IR text, one method per construct.

Values flowing through lowering are `V`s: typed integers in registers, untyped literals,
references to memory (Struct/Array/Str/int, possibly None), maps, the program context, and
Python objects resolved at compile time (types, functions, modules).
"""
from __future__ import annotations

import ast
import builtins
import math
import types as pytypes
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import uapi as U
from ..errors import Error
from ..frontend import helpers as H
from ..frontend.module import GlobalVar
from ..frontend.typer import _PYCMP, _PYOPS, BUILTIN_OK, TypedFunction
from ..frontend.typing import bits, fits, is_int, signed
from ..lang.bpf import ProgDecl, _Bpf
from ..lang.maps import Map
from ..lang.types import Array, IntType, Str, Struct, bool_, i16, i32, i64, u8, u16, u32, u64

if TYPE_CHECKING:
    from .module import ModuleLowering


@dataclass
class V:
    kind: str                 # int lit mem none map ctx bytes str py method void
    ty: Any = None
    ref: str = ""
    val: Any = None
    nullable: bool = False
    shared: bool = False      # memory other CPUs may write (map values, globals)
    volatile: bool = False
    var: str = ""             # local variable name this value was read from (None checks)
    align: int = 0            # known alignment of memory (0: the type's natural alignment)

    def alignment(self) -> int:
        return self.align or getattr(self.ty, "_align", 1)


@dataclass
class Local:
    name: str
    slot: str
    kind: str                 # "int" | "ref"
    ty: Any
    nullable: bool = False
    shared: bool = False
    volatile: bool = False
    align: int = 0


@dataclass
class Loop:
    brk: str
    cont: str


BPF_F_CURRENT_CPU = 0xFFFFFFFF


def lt(t) -> str:
    return f"i{bits(t)}"


def is_struct(t) -> bool:
    return isinstance(t, type) and issubclass(t, Struct)


def is_str(t) -> bool:
    return isinstance(t, type) and issubclass(t, Str)


def is_array(t) -> bool:
    return isinstance(t, type) and issubclass(t, Array)


def tname(t) -> str:
    return getattr(t, "__name__", str(t))


class ProgramCtx:
    """Facts about the program being compiled: kind, section, ctx layout."""

    def __init__(self, decl: ProgDecl | None):
        self.decl = decl
        self.kind = decl.kind if decl else ""
        self.fields: dict = {}          # ctx field -> (offset, type, is_pointer)
        self.packet = None              # (data_off, data_end_off) when ctx.packet() works


class FunctionLowering:
    def __init__(self, mod: "ModuleLowering", fn, node: ast.FunctionDef, file: str, prog: ProgramCtx | None,
                 llname: str):
        self.m, self.ir, self.diags = mod, mod.ir, mod.diags
        self.fn, self.node, self.file, self.prog, self.llname = fn, node, file, prog, llname
        self.globals_ns = fn.__globals__
        self.lines: list[str] = []
        self.allocas: list[str] = []
        self.tmp = 0
        self.term = False
        self.locals: dict[str, Local] = {}
        self.nonnull: set[str] = set()
        self.loops: list[Loop] = []
        self.declared_global: set[str] = set()
        self.ret_type = i32
        self.ctx_ref = ""
        self.ctx_name = ""
        self.scope = ""
        self.cur_loc = ""
        self.block_count = 0
        self.tf: TypedFunction = mod.typed_module.function(node)
        for n in ast.walk(node):
            if isinstance(n, ast.Global):
                self.declared_global.update(n.names)

    # ---- diagnostics --------------------------------------------------------------------
    def err(self, node, what: str):
        """A broken invariant: lowering sees only programs the typing pass accepted, and that pass
        reports every user error, so reaching this is a compiler bug (reported with its location)."""
        raise Error(f"{self.file}:{getattr(node, 'lineno', 0)}:{getattr(node, 'col_offset', 0) + 1}: internal "
                    f"compiler error: the typing pass accepted what lowering cannot compile: {what}")

    # ---- emission -----------------------------------------------------------------------
    def t(self) -> str:
        self.tmp += 1
        return f"%t{self.tmp}"

    def emit(self, text: str, result: bool = True) -> str:
        if self.term:   # code after return/break: keep it valid in a fresh unreachable block
            self.block(self.new_label("dead"))
        dbg = f", !dbg {self.cur_loc}" if self.cur_loc else ""
        if result:
            r = self.t()
            self.lines.append(f"  {r} = {text}{dbg}")
            return r
        self.lines.append(f"  {text}{dbg}")
        return ""

    def terminate(self, text: str):
        if self.term:
            self.block(self.new_label("dead"))
        dbg = f", !dbg {self.cur_loc}" if self.cur_loc else ""
        self.lines.append(f"  {text}{dbg}")
        self.term = True

    def new_label(self, hint: str) -> str:
        self.block_count += 1
        return f"{hint}{self.block_count}"

    def block(self, label: str):
        if not self.term:
            self.lines.append(f"  br label %{label}" + (f", !dbg {self.cur_loc}" if self.cur_loc else ""))
        self.lines.append(f"{label}:")
        self.term = False

    def br(self, label: str):
        self.terminate(f"br label %{label}")

    def cbr(self, cond: str, a: str, b: str):
        self.terminate(f"br i1 {cond}, label %{a}, label %{b}")

    def alloca(self, size: int, align: int) -> str:
        r = self.t()
        self.allocas.append(f"  {r} = alloca [{size} x i8], align {max(align, 1)}")
        return r

    def at(self, node):
        self.cur_loc = self.ir.loc(getattr(node, "lineno", 0), getattr(node, "col_offset", 0) + 1, self.scope)

    def gep(self, ptr: str, off: int) -> str:
        if off == 0:
            return ptr
        return self.emit(f"getelementptr inbounds i8, ptr {ptr}, i64 {off}")

    def load_int(self, ptr: str, t, volatile: bool = False) -> str:
        vol = "volatile " if volatile else ""
        if t is bool_:
            b = self.emit(f"load {vol}i8, ptr {ptr}, align 1")
            return self.emit(f"icmp ne i8 {b}, 0")
        return self.emit(f"load {vol}{lt(t)}, ptr {ptr}, align {t._align}")

    def store_int(self, ptr: str, t, val: str):
        if t is bool_:
            val = self.emit(f"zext i1 {val} to i8")
            self.emit(f"store i8 {val}, ptr {ptr}, align 1", False)
            return
        self.emit(f"store {lt(t)} {val}, ptr {ptr}, align {t._align}", False)

    def memcpy(self, dst: str, src: str, n: int, dalign: int = 1, salign: int = 1):
        self.ir.declares.add("declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)")
        self.emit(f"call void @llvm.memcpy.p0.p0.i64(ptr align {dalign} {dst}, ptr align {salign} {src}, "
                  f"i64 {n}, i1 false)", False)

    def memset(self, dst: str, n: int):
        self.ir.declares.add("declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)")
        self.emit(f"call void @llvm.memset.p0.i64(ptr align 1 {dst}, i8 0, i64 {n}, i1 false)", False)

    def helper_call(self, hid: int, args: list[tuple[str, str]], ret: str = "i64") -> str:
        a = ", ".join(f"{t} {v}" for t, v in args)
        return self.emit(f"call {ret} inttoptr (i64 {hid} to ptr)({a})", result=ret != "void")

    # ---- value conversion ---------------------------------------------------------------
    def as_int(self, v: V, t, node) -> str:
        """The value converted to integer type t (an LLVM value of that width)."""
        if v.kind == "lit":
            if t is bool_:
                return "true" if v.val else "false"
            n = bits(t)
            val = v.val & ((1 << n) - 1)
            return str(val - (1 << n) if val >> (n - 1) else val)
        if v.kind == "int":
            return self.convert(v.ref, v.ty, t)
        if v.kind == "mem" and is_int(v.ty) and not v.nullable:
            return self.convert(self.load_int(v.ref, v.ty, v.volatile), v.ty, t)
        if v.kind == "mem" and v.nullable:
            self.need_checked(v, node)
        self.err(node, f"not an integer: {v.kind}")
        return ""

    def convert(self, val: str, src, dst) -> str:
        if src is dst or bits(src) == bits(dst):
            return val
        if dst is bool_:
            return self.emit(f"icmp ne {lt(src)} {val}, 0")
        if bits(src) > bits(dst):
            return self.emit(f"trunc {lt(src)} {val} to {lt(dst)}")
        op = "sext" if signed(src) else "zext"
        return self.emit(f"{op} {lt(src)} {val} to {lt(dst)}")

    def rvalue(self, v: V, node) -> V:
        """Integer memory reads become register values."""
        if v.kind == "mem" and is_int(v.ty):
            if v.nullable:
                self.need_checked(v, node)
            return V("int", v.ty, self.load_int(v.ref, v.ty, v.volatile))
        return v

    def int_value(self, node, want=None) -> V:
        v = self.rvalue(self.expr(node, want), node)
        if v.kind in ("int", "lit"):
            return v
        if v.kind == "mem" and v.nullable:
            self.need_checked(v, node)
        self.err(node, f"not an integer: {v.kind}")
        return v

    def need_checked(self, v: V, node):
        if v.nullable:
            self.err(node, "a reference that may be None is used unchecked")

    def truth(self, node) -> str:
        """An i1 for a condition; references test against None (NULL)."""
        v = self.expr(node)
        if v.kind == "mem" and not is_int(v.ty):
            return self.emit(f"icmp ne ptr {v.ref}, null")
        if v.kind == "mem" and v.nullable:
            # an optional integer is true when present and non-zero, as in Python
            some, end = self.new_label("some"), self.new_label("truth")
            isnull = self.emit(f"icmp eq ptr {v.ref}, null")
            pre = self.cur_block()
            self.cbr(isnull, end, some)
            self.block(some)
            ty = "i8" if v.ty is bool_ else lt(v.ty)
            val = self.emit(f"load {ty}, ptr {v.ref}, align {v.ty._align}")
            nz = self.emit(f"icmp ne {ty} {val}, 0")
            self.br(end)
            self.block(end)
            return self.emit(f"phi i1 [ false, %{pre} ], [ {nz}, %{some} ]")
        v = self.rvalue(v, node)
        if v.kind == "lit":
            return "true" if v.val else "false"
        if v.kind == "int":
            return v.ref if v.ty is bool_ else self.emit(f"icmp ne {lt(v.ty)} {v.ref}, 0")
        if v.kind == "none":
            return "false"
        self.err(node, f"not a condition: {v.kind}")
        return ""

    # ---- function bodies ----------------------------------------------------------------
    def lower_body(self, stmts):
        for s in stmts:
            if self.term:
                # unreachable code after return/break/continue: still checked, never dropped silently
                self.block(self.new_label("dead"))
            self.stmt(s)

    def stmt(self, s):
        self.at(s)
        getattr(self, "s_" + type(s).__name__)(s)

    def s_Pass(self, s):
        pass

    def s_Global(self, s):
        pass   # the names were collected up front

    def s_Expr(self, s):
        if isinstance(s.value, ast.Constant) and (isinstance(s.value.value, str) or s.value.value is Ellipsis):
            return  # docstring or `...`
        self.expr(s.value)

    def s_Return(self, s):
        if self.ret_type is None:
            self.terminate("ret void")
            return
        if s.value is None or (isinstance(s.value, ast.Constant) and s.value.value is None):
            self.terminate(f"ret {lt(self.ret_type)} 0")
            return
        v = self.int_value(s.value, self.ret_type)
        self.terminate(f"ret {lt(self.ret_type)} {self.as_int(v, self.ret_type, s.value)}")

    def s_Assert(self, s):
        pass   # the typing pass evaluated it (compile-time constant, true)

    def const_eval(self, node):
        v = self.expr(node)
        if v.kind == "lit":
            return v.val
        if v.kind == "int" and v.ref in ("true", "false"):
            return v.ref == "true"
        if v.kind in ("bytes", "str"):
            return v.val
        return None

    def s_If(self, s):
        yes, no, end = self.new_label("then"), self.new_label("else"), self.new_label("endif")
        t_nn, f_nn = self.null_facts(s.test)
        self.cbr(self.truth(s.test), yes, no)
        before = set(self.nonnull)
        self.block(yes)
        self.nonnull = before | t_nn
        self.lower_body(s.body)
        states = []
        if not self.term:
            states.append(set(self.nonnull))
        self.br(end)
        self.block(no)
        self.nonnull = before | f_nn
        self.lower_body(s.orelse)
        if not self.term:
            states.append(set(self.nonnull))
        self.br(end)
        self.block(end)
        if states:
            self.nonnull = set.intersection(*states)
        else:
            self.nonnull = before
            self.term = False
            self.terminate("unreachable")

    def null_facts(self, test) -> tuple[set, set]:
        """Variables known not None when the test is true / false."""
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Name) \
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
            n = {test.left.id}
            if isinstance(test.ops[0], (ast.Is, ast.Eq)):
                return set(), n
            if isinstance(test.ops[0], (ast.IsNot, ast.NotEq)):
                return n, set()
        if isinstance(test, ast.Name) and test.id in self.locals and self.locals[test.id].kind == "ref":
            return {test.id}, set()
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            a, b = self.null_facts(test.operand)
            return b, a
        if isinstance(test, ast.BoolOp):
            facts = [self.null_facts(v) for v in test.values]
            if isinstance(test.op, ast.And):
                return set().union(*[f[0] for f in facts]), set()
            return set(), set().union(*[f[1] for f in facts])
        return set(), set()

    def assigned_in(self, stmts) -> set:
        out = set()
        for s in stmts:
            for n in ast.walk(s):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    out.add(n.id)
        return out

    def s_While(self, s):
        head, body, end = self.new_label("while"), self.new_label("body"), self.new_label("wend")
        self.nonnull -= self.assigned_in(s.body)
        self.br(head)
        self.block(head)
        self.at(s)
        self.cbr(self.truth(s.test), body, end)
        self.block(body)
        saved = set(self.nonnull)
        self.loops.append(Loop(end, head))
        self.lower_body(s.body)
        self.loops.pop()
        self.br(head)
        self.block(end)
        self.nonnull = saved

    def s_For(self, s):
        it = s.iter
        args = [self.int_value(a) for a in it.args]
        start, stop = (V("lit", val=0), args[0]) if len(args) == 1 else (args[0], args[1])
        step = 1
        if len(args) == 3:
            step = args[2].val
        name = s.target.id
        ty = self.tf.steps[(s, "for")]
        var = self.local_slot(name, "int", ty, s.target)
        stop_v = self.as_int(stop, ty, it)
        # the bound is evaluated once, like Python
        stop_slot = self.alloca(ty._size, ty._align)
        self.store_int(stop_slot, ty, stop_v)
        self.store_int(var.slot, ty, self.as_int(start, ty, it))
        head, body, nxt, end = (self.new_label("for"), self.new_label("fbody"), self.new_label("fnext"),
                                self.new_label("fend"))
        self.nonnull -= self.assigned_in(s.body)
        self.br(head)
        self.block(head)
        cur = self.load_int(var.slot, ty)
        lim = self.load_int(stop_slot, ty)
        pred = ("slt" if step > 0 else "sgt") if signed(ty) else ("ult" if step > 0 else "ugt")
        self.cbr(self.emit(f"icmp {pred} {lt(ty)} {cur}, {lim}"), body, end)
        self.block(body)
        saved = set(self.nonnull)
        # the loop variable is private: the body may assign it without changing the iteration
        ctr = self.alloca(ty._size, ty._align)
        self.store_int(ctr, ty, cur)
        self.loops.append(Loop(end, nxt))
        self.lower_body(s.body)
        self.loops.pop()
        self.br(nxt)
        self.block(nxt)
        self.at(s)
        c = self.load_int(ctr, ty)
        self.store_int(var.slot, ty, self.emit(f"add {lt(ty)} {c}, {step}"))
        self.br(head)
        self.block(end)
        self.nonnull = saved

    def s_Break(self, s):
        self.br(self.loops[-1].brk)

    def s_Continue(self, s):
        self.br(self.loops[-1].cont)

    def s_AnnAssign(self, s):
        name = s.target.id
        t = self.tf.locals[name].ty     # the annotation (the typer rejects a second declaration)
        if is_int(t):
            var = self.local_slot(name, "int", t, s)
            if s.value is not None:
                self.store_int(var.slot, t, self.as_int(self.int_value(s.value, t), t, s.value))
            return
        if s.value is None:
            mem = self.alloca(t._size, t._align)
            self.memset(mem, t._size)
            self.bind_ref(name, V("mem", t, mem), s)
            return
        v = self.expr(s.value, t)
        self.bind_ref(name, v, s)

    def annotation_type(self, node):
        v = self.expr(node)
        if v.kind == "py" and isinstance(v.val, type) and hasattr(v.val, "_size"):
            return v.val
        if v.kind == "py" and v.val is int:
            return i64
        if v.kind == "py" and v.val is bool:
            return bool_
        self.err(node, "not a type")

    def s_Assign(self, s):
        target = s.targets[0]
        if isinstance(target, ast.Tuple):
            vals = []
            for tgt, e in zip(target.elts, s.value.elts):
                v = self.rvalue(self.expr(e), e)
                if v.kind == "int":  # snapshot: `a, b = b, a` swaps
                    tmp = self.alloca(v.ty._size, v.ty._align)
                    self.store_int(tmp, v.ty, v.ref)
                    v = V("mem", v.ty, tmp)
                vals.append((tgt, v))
            for tgt, v in vals:
                self.assign(tgt, self.rvalue(v, tgt), s)
            return
        want = None
        if isinstance(target, ast.Name) and target.id in self.locals and self.locals[target.id].kind == "int":
            want = self.locals[target.id].ty
        if isinstance(target, ast.Attribute) and self.is_comm_call(s.value):
            self.assign(target, V("comm"), s.value)   # the helper writes straight into the field
            return
        self.assign(target, self.expr(s.value, want), s.value)

    def is_comm_call(self, node) -> bool:
        if not (isinstance(node, ast.Call) and not node.args and not node.keywords
                and isinstance(node.func, ast.Attribute) and node.func.attr in ("comm", "get_current_comm")
                and isinstance(node.func.value, ast.Name)):
            return False
        return isinstance(self.globals_ns.get(node.func.value.id), _Bpf) and node.func.value.id not in self.locals

    def comm_into(self, target, vnode):
        """`x.f = bpf.comm()` fills x.f directly (no temporary); other targets get a Str[16] value."""
        base = self.expr(target.value)
        if base.kind == "mem" and is_struct(base.ty):
            self.need_checked(base, target.value)
            fld = self.field(base, target.attr, target)
            if is_str(fld.ty):
                n = min(fld.ty._len, 16)
                self.helper_call(U.HELPERS["get_current_comm"], [("ptr", fld.ref), ("i32", str(n))])
                return None
        return self.expr(vnode)

    def assign(self, target, v: V, vnode):
        if isinstance(target, ast.Name):
            name = target.id
            g = self.lookup_global(name)
            if g is not None and name in self.declared_global:
                self.store_global(g, v, vnode, target)
                return
            if v.kind in ("int", "lit"):
                ty = self.tf.locals[name].ty     # the type of the first assignment
                var = self.local_slot(name, "int", ty, target)
                self.store_int(var.slot, ty, self.as_int(v, ty, vnode))
                self.nonnull.discard(name)
                return
            if v.kind == "mem" or v.kind == "none":
                self.bind_ref(name, v, target)
                return
            self.err(vnode, f"a {v.kind} value in a local")
        if isinstance(target, ast.Attribute):
            if v.kind == "comm":
                v = self.comm_into(target, vnode)
                if v is None:
                    return
            dst = self.expr(target.value)
            self.need_checked(dst, target.value)
            fld = self.field(dst, target.attr, target)
            self.store_into(fld, v, vnode)
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value)
            if base.kind == "map":
                self.map_update(base, target.slice, v, vnode, None, target)
                return
            elem = self.subscript(base, target.slice, target, store=True)
            self.store_into(elem, v, vnode)
            return
        self.err(target, "assignment target")

    def store_into(self, dst: V, v: V, vnode):
        """Write a value into memory of dst.ty (ints convert; Str takes bytes; Structs copy)."""
        t = dst.ty
        if is_int(t):
            self.store_int(dst.ref, t, self.as_int(self.rvalue(v, vnode), t, vnode))
            return
        if is_str(t) and v.kind == "bytes":
            data = v.val
            self.store_bytes(dst.ref, data.ljust(t._len, b"\0"))
            return
        if v.kind == "mem" and (v.ty is t or (is_str(t) and is_str(v.ty))):
            self.need_checked(v, vnode)
            n = min(t._size, v.ty._size)
            self.memcpy(dst.ref, v.ref, n, dst.alignment(), v.alignment())
            if n < t._size:
                self.memset(self.gep(dst.ref, n), t._size - n)
            return
        self.err(vnode, f"a {v.kind} value stored into {tname(t)}")

    def store_bytes(self, ptr: str, data: bytes):
        i = 0
        while i < len(data):
            for w in (8, 4, 2, 1):
                if len(data) - i >= w:
                    val = int.from_bytes(data[i:i + w], "little", signed=True)
                    self.emit(f"store i{w * 8} {val}, ptr {self.gep(ptr, i)}, align 1", False)
                    i += w
                    break

    def bind_ref(self, name: str, v: V, node):
        if v.kind == "none":
            self.emit(f"store ptr null, ptr {self.locals[name].slot}, align 8", False)
            self.nonnull.discard(name)
            return
        var = self.locals.get(name)
        if var is None:
            slot = self.t()
            self.allocas.append(f"  {slot} = alloca ptr, align 8")
            self.allocas.append(f"  store ptr null, ptr {slot}, align 8")
            var = self.locals[name] = Local(name, slot, "ref", self.declared(name, "ref", v.ty))
            var.shared, var.volatile, var.align = v.shared, v.volatile, v.align
        elif var.ty is not v.ty:
            self.err(node, f"'{name}' rebound to another type")
        else:   # what every assignment guarantees
            var.align = min(var.align or var.ty._align, v.alignment())
            var.shared = var.shared or v.shared
        self.emit(f"store ptr {v.ref}, ptr {var.slot}, align 8", False)
        var.nullable = var.nullable or v.nullable
        if v.nullable:
            self.nonnull.discard(name)
        else:
            self.nonnull.add(name)

    def local_slot(self, name, kind, ty, node) -> Local:
        var = self.locals.get(name)
        if var is None:
            ty = self.declared(name, kind, ty)
            slot = self.alloca(ty._size, ty._align)
            # zeroed at entry: a variable set only on some paths never reads uninitialised stack
            self.allocas.append(f"  store {lt(ty) if ty is not bool_ else 'i8'} 0, ptr {slot}, align {ty._align}")
            var = self.locals[name] = Local(name, slot, kind, ty)
        return var

    def s_AugAssign(self, s):
        op = s.op
        tgt = s.target
        if isinstance(tgt, ast.Subscript):
            base = self.expr(tgt.value)
            if base.kind == "map":
                self.map_augassign(base, tgt, op, s.value, s)
                return
            dst = self.subscript(base, tgt.slice, tgt, store=True)
        elif isinstance(tgt, ast.Attribute):
            base = self.expr(tgt.value)
            self.need_checked(base, tgt.value)
            dst = self.field(base, tgt.attr, tgt)
        elif isinstance(tgt, ast.Name):
            g = self.lookup_global(tgt.id)
            if g is not None:
                dst = self.global_mem(g)
            elif tgt.id in self.locals and self.locals[tgt.id].kind == "int":
                var = self.locals[tgt.id]
                dst = V("mem", var.ty, var.slot)
            else:
                self.err(tgt, f"'{tgt.id}' is not an integer local")
        else:
            self.err(tgt, "augmented assignment target")
        self.update_mem(dst, op, s.value, s)

    def update_mem(self, dst: V, op, value_node, node):
        """dst op= value; += and -= on shared memory (maps, globals) are atomic."""
        t = dst.ty
        if dst.shared and isinstance(op, (ast.Add, ast.Sub)) and t is not bool_:
            v = self.as_int(self.int_value(value_node, t), t, value_node)
            if isinstance(op, ast.Sub):
                v = self.emit(f"sub {lt(t)} 0, {v}")
            self.emit(f"atomicrmw add ptr {dst.ref}, {lt(t)} {v} monotonic, align {t._align}")
            return
        cur = V("int", t, self.load_int(dst.ref, t))
        r = self.binop(op, cur, self.int_value(value_node, t), node, key=(node, "aug"))
        self.store_int(dst.ref, t, self.as_int(r, t, node))

    # ---- expressions --------------------------------------------------------------------
    def expr(self, node, want=None) -> V:
        meth = getattr(self, "e_" + type(node).__name__, None)
        v = meth(node, want)
        self.check_typed(node, v)
        return v

    def check_typed(self, node, v: V):
        """Lowering runs only on programs the typing pass accepted: every expression it lowers was
        typed there, and must come out with exactly that type."""
        t = self.tf.exprs.get(node)
        assert t is not None and t.kind == v.kind and (t.ty is v.ty if v.kind in ("int", "mem") else True) \
            and (t.val == v.val if v.kind == "lit" else True) and (t.nullable == v.nullable if v.kind == "mem" else True), \
            f"typer/codegen disagree at {self.file}:{node.lineno}:{node.col_offset + 1}: {t} vs {v.kind} {tname(v.ty)}"

    def declared(self, name, kind, ty):
        """The type the typing pass gave local `name` (lowering's own reading must agree)."""
        lv = self.tf.locals.get(name)
        assert lv is not None and lv.kind == kind and lv.ty is ty, \
            f"typer/codegen disagree on '{name}' in {self.llname}: {lv and lv.show()} vs {kind} {tname(ty)}"
        return lv.ty

    def e_Constant(self, node, want):
        v = node.value
        if v is None:
            return V("none")
        if isinstance(v, bool):
            return V("int", bool_, "true" if v else "false")
        if isinstance(v, int):
            return V("lit", val=v)
        if isinstance(v, bytes):
            return V("bytes", val=v)
        if isinstance(v, str):
            return V("str", val=v)
        self.err(node, f"{type(v).__name__} constant")

    def e_Name(self, node, want):
        name = node.id
        if name in self.locals:
            var = self.locals[name]
            if var.kind == "int":
                return V("int", var.ty, self.load_int(var.slot, var.ty))
            ref = self.emit(f"load ptr, ptr {var.slot}, align 8")
            return V("mem", var.ty, ref, nullable=name not in self.nonnull, shared=var.shared,
                     volatile=var.volatile, var=name, align=var.align)
        if name == self.ctx_name:
            return V("ctx", ref=self.ctx_ref)
        # (a use before the first assignment was reported by the typing pass)
        g = self.lookup_global(name)
        if g is not None:
            return self.global_mem(g)
        obj = self.name_obj(name)
        return self.from_py(obj, node, name)

    def is_module_name(self, name) -> bool:
        return name in self.globals_ns

    def name_obj(self, name):
        if name in self.globals_ns:
            return self.globals_ns[name]
        b = getattr(builtins, name, _MISSING)
        return b

    def from_py(self, obj, node, name="") -> V:
        if isinstance(obj, bool):
            return V("int", bool_, "true" if obj else "false")
        if isinstance(obj, int):
            if isinstance(obj, IntType):
                return V("lit", val=int(obj))
            return V("lit", val=obj)
        if isinstance(obj, Map):
            return V("map", val=obj, ref=self.m.map_ref(obj, name, node, self.file))
        if isinstance(obj, bytes):
            return V("bytes", val=obj)
        if isinstance(obj, str):
            return V("str", val=obj)
        if obj is None:
            return V("none")
        if isinstance(obj, (type, _Bpf, pytypes.FunctionType, pytypes.ModuleType)):
            return V("py", val=obj)
        if isinstance(obj, pytypes.BuiltinFunctionType) or obj in (range, int, bool):
            if getattr(obj, "__name__", "") in BUILTIN_OK and getattr(builtins, obj.__name__, None) is obj:
                return V("py", val=obj)
        self.err(node, f"'{name}' ({type(obj).__name__}) in a program")

    def e_Attribute(self, node, want):
        base = self.expr(node.value)
        a = node.attr
        if base.kind == "py":
            obj = base.val
            if isinstance(obj, _Bpf):
                return V("method", val=("bpf", a), ref="")
            if isinstance(obj, pytypes.ModuleType):
                g = self.m.module_global(obj, a)
                if g is not None:
                    return self.global_mem(g)
                return self.from_py(getattr(obj, a), node, a)
            self.err(node, f"attribute '{a}' of {tname(obj)}")
        if base.kind == "map":
            return V("method", val=("map", a), ref=base.ref, ty=base)
        if base.kind == "ctx":
            return self.ctx_field(base, a, node)
        if base.kind == "mem" and is_struct(base.ty):
            self.need_checked(base, node.value)
            return self.field(base, a, node)
        self.err(node, f"attribute '{a}' of a {base.kind}")

    def field(self, base: V, name: str, node) -> V:
        for fname, ft, off in base.ty._fields_:
            if fname == name:
                al = max(math.gcd(base.alignment(), off) if off else base.alignment(), ft._align)
                return V("mem", ft, self.gep(base.ref, off), shared=base.shared, volatile=base.volatile, align=al)
        self.err(node, f"{tname(base.ty)}.{name}")

    def ctx_field(self, ctx: V, a: str, node) -> V:
        p = self.prog
        if a == "packet":
            return V("method", val=("ctx", "packet"), ref=ctx.ref)
        if a == "args" and p and p.kind in ("raw_tracepoint", "fentry", "fexit"):
            return V("mem", Array[u64, 12], ctx.ref)
        if p is not None and a in p.fields:
            off, t, _ = p.fields[a]
            return V("mem", t, self.gep(ctx.ref, off))
        self.err(node, f"context field '{a}'")

    def e_Subscript(self, node, want):
        base = self.expr(node.value)
        if base.kind == "map":
            return self.map_read(base, node.slice, node)
        if base.kind == "py" and isinstance(base.val, type) and base.val in (Array, Str):
            try:
                params = ast.literal_eval(node.slice) if base.val is Str else None
            except ValueError:
                params = None
            if base.val is Str and isinstance(params, int):
                return V("py", val=Str[params])
            if base.val is Array and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
                et = self.annotation_type(node.slice.elts[0])
                n = self.const_eval(node.slice.elts[1])
                if isinstance(n, int):
                    return V("py", val=Array[et, n])
            self.err(node, "type parameters")
        return self.rvalue(self.subscript(base, node.slice, node), node)

    def subscript(self, base: V, idx_node, node, store=False) -> V:
        self.need_checked(base, node.value)
        et = base.ty._elem if is_array(base.ty) else u8
        n = base.ty._len
        idx = self.int_value(idx_node)
        if idx.kind == "lit":
            i = idx.val + n if idx.val < 0 else idx.val
            return V("mem", et, self.gep(base.ref, i * et._size), shared=base.shared)
        # variable index: clamp into range so the verifier sees a bounded offset
        iv = self.as_int(idx, u64, idx_node) if bits(idx.ty) == 64 or not signed(idx.ty) else \
            self.emit(f"sext {lt(idx.ty)} {idx.ref} to i64")
        if idx.kind == "int" and bits(idx.ty) < 64 and not signed(idx.ty):
            iv = self.emit(f"zext {lt(idx.ty)} {idx.ref} to i64")
        ok = self.emit(f"icmp ult i64 {iv}, {n}")
        safe = self.emit(f"select i1 {ok}, i64 {iv}, i64 0")
        off = self.emit(f"mul i64 {safe}, {et._size}")
        # out-of-range accesses read 0 / write nothing
        tmp = self.alloca(et._size, et._align)
        self.memset(tmp, et._size)
        p = self.emit(f"getelementptr inbounds i8, ptr {base.ref}, i64 {off}")
        sel = self.emit(f"select i1 {ok}, ptr {p}, ptr {tmp}")
        return V("mem", et, sel, shared=base.shared)

    def e_UnaryOp(self, node, want):
        if isinstance(node.op, ast.Not):
            c = self.truth(node.operand)
            if c in ("true", "false"):
                return V("int", bool_, "false" if c == "true" else "true")
            return V("int", bool_, self.emit(f"xor i1 {c}, true"))
        v = self.int_value(node.operand, want)
        if v.kind == "lit":
            return V("lit", val={ast.USub: lambda x: -x, ast.UAdd: lambda x: x,
                                 ast.Invert: lambda x: ~x}[type(node.op)](v.val))
        t = self.typed(node).ty
        r = self.convert(v.ref, v.ty, t)
        if isinstance(node.op, ast.USub):
            return V("int", t, self.emit(f"sub {lt(t)} 0, {r}"))
        if isinstance(node.op, ast.Invert):
            return V("int", t, self.emit(f"xor {lt(t)} {r}, -1"))
        return V("int", t, r)

    def e_BinOp(self, node, want):
        a = self.int_value(node.left, want)
        b = self.int_value(node.right, want if a.kind == "lit" else a.ty)
        return self.binop(node.op, a, b, node, self.typed(node).ty)

    def typed(self, node):
        """The type the typing pass gave node (lowering only sees fully typed programs)."""
        return self.tf.exprs[node]

    def binop(self, op, a: V, b: V, node, t=None, key=None) -> V:
        """a op b of type t, or of the type the typed program recorded at steps[key] (the steps of
        `**` and `x op= y` are not expressions of their own)."""
        if a.kind == "lit" and b.kind == "lit":
            return V("lit", val=_PYOPS[type(op)](a.val, b.val))   # the typing pass folded it too
        if isinstance(op, ast.Pow):
            if b.kind == "lit" and 0 <= b.val <= 64:
                t = self.tf.steps[(node, "pow")]
                acc = V("lit", val=1)
                for i in range(b.val):
                    acc = self.binop(ast.Mult(), acc, a, node, key=(node, "pow", i))
                return acc if acc.kind == "int" else V("int", t, self.as_int(acc, t, node))
            self.err(node, "'**' exponent")
        t = t or self.tf.steps[key]
        if isinstance(op, (ast.LShift, ast.RShift)):
            x = self.as_int(a, t, node)
            y = self.as_int(b, t, node) if b.kind == "lit" else self.convert(b.ref, b.ty, t)
            if isinstance(op, ast.LShift):
                return V("int", t, self.emit(f"shl {lt(t)} {x}, {y}"))
            return V("int", t, self.emit(f"{'ashr' if signed(t) else 'lshr'} {lt(t)} {x}, {y}"))
        x, y = self.as_int(a, t, node), self.as_int(b, t, node)
        L = lt(t)
        simple = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.BitAnd: "and", ast.BitOr: "or",
                  ast.BitXor: "xor"}
        if type(op) in simple:
            return V("int", t, self.emit(f"{simple[type(op)]} {L} {x}, {y}"))
        if isinstance(op, (ast.FloorDiv, ast.Mod)):
            if not signed(t):
                return V("int", t, self.emit(f"{'udiv' if isinstance(op, ast.FloorDiv) else 'urem'} {L} {x}, {y}"))
            return V("int", t, self.floordiv_signed(t, x, y, isinstance(op, ast.FloorDiv)))
        self.err(node, f"operator {type(op).__name__}")

    def floordiv_signed(self, t, x, y, want_q: bool) -> str:
        """Python floor division/modulo on signed values, from unsigned operations (BPF v1-v3 have
        no signed divide)."""
        L = lt(t)
        xn = self.emit(f"icmp slt {L} {x}, 0")
        yn = self.emit(f"icmp slt {L} {y}, 0")
        ax = self.emit(f"select i1 {xn}, {L} {self.emit(f'sub {L} 0, {x}')}, {L} {x}")
        ay = self.emit(f"select i1 {yn}, {L} {self.emit(f'sub {L} 0, {y}')}, {L} {y}")
        q0 = self.emit(f"udiv {L} {ax}, {ay}")
        r0 = self.emit(f"urem {L} {ax}, {ay}")
        diff = self.emit(f"xor i1 {xn}, {yn}")
        rnz = self.emit(f"icmp ne {L} {r0}, 0")
        adj = self.emit(f"and i1 {diff}, {rnz}")
        qa = self.emit(f"add {L} {q0}, {self.emit(f'zext i1 {adj} to {L}')}")
        q = self.emit(f"select i1 {diff}, {L} {self.emit(f'sub {L} 0, {qa}')}, {L} {qa}")
        if want_q:
            return q
        return self.emit(f"sub {L} {x}, {self.emit(f'mul {L} {q}, {y}')}")

    def e_BoolOp(self, node, want):
        is_and = isinstance(node.op, ast.And)
        end = self.new_label("bend")
        incoming = []
        saved = set(self.nonnull)
        for i, v in enumerate(node.values):
            c = self.truth(v)
            if i == len(node.values) - 1:
                incoming.append((c, self.cur_block()))
                self.br(end)
                break
            nxt = self.new_label("bnext")
            incoming.append(("false" if is_and else "true", self.cur_block()))
            if is_and:
                self.cbr(c, nxt, end)
                self.block(nxt)
                self.nonnull |= self.null_facts(v)[0]
            else:
                self.cbr(c, end, nxt)
                self.block(nxt)
                self.nonnull |= self.null_facts(v)[1]
        self.block(end)
        self.nonnull = saved
        phi = ", ".join(f"[ {v}, %{b} ]" for v, b in incoming)
        return V("int", bool_, self.emit(f"phi i1 {phi}"))

    def cur_block(self) -> str:
        for line in reversed(self.lines):
            if line.endswith(":") and not line.startswith(" "):
                return line[:-1]
        return "entry"

    def e_IfExp(self, node, want):
        yes, no, end = self.new_label("ift"), self.new_label("iff"), self.new_label("ifend")
        t_nn, f_nn = self.null_facts(node.test)
        self.cbr(self.truth(node.test), yes, no)
        saved = set(self.nonnull)
        self.block(yes)
        self.nonnull = saved | t_nn
        a = self.rvalue(self.expr(node.body, want), node.body)
        a_pos, a_block = len(self.lines), self.cur_block()
        self.br(end)
        self.block(no)
        self.nonnull = saved | f_nn
        b = self.rvalue(self.expr(node.orelse, want), node.orelse)
        self.nonnull = saved
        if a.kind in ("int", "lit") and b.kind in ("int", "lit"):
            t = self.typed(node).ty
            bv = self.as_int(b, t, node.orelse)
            b_block = self.cur_block()
            self.br(end)
            # convert the first branch's value inside its own block
            body, term = self.lines, self.term
            self.lines, self.term = [], False
            av = self.as_int(a, t, node.body)
            extra, self.lines, self.term = self.lines, body, term
            self.lines[a_pos:a_pos] = extra
            self.block(end)
            return V("int", t, self.emit(f"phi {lt(t)} [ {av}, %{a_block} ], [ {bv}, %{b_block} ]"))
        if (a.kind == "mem" and b.kind in ("mem", "none")) or (a.kind == "none" and b.kind == "mem"):
            ty = a.ty if a.kind == "mem" else b.ty
            b_block = self.cur_block()
            self.br(end)
            self.block(end)
            ra = a.ref if a.kind == "mem" else "null"
            rb = b.ref if b.kind == "mem" else "null"
            return V("mem", ty, self.emit(f"phi ptr [ {ra}, %{a_block} ], [ {rb}, %{b_block} ]"), nullable=True)
        self.err(node, "conditional expression branches")

    def e_Compare(self, node, want):
        if len(node.ops) > 1:   # a < b < c  ->  a < b and b < c (each operand evaluated once)
            vals = [self.rvalue(self.expr(node.left), node.left)] + \
                   [self.rvalue(self.expr(c), c) for c in node.comparators]
            acc = None
            for i, op in enumerate(node.ops):
                c = self.compare(op, vals[i], vals[i + 1], node, i)
                acc = c if acc is None else self.emit(f"and i1 {acc}, {c}")
            return V("int", bool_, acc)
        a = self.expr(node.left)
        b = self.expr(node.comparators[0], a.ty if a.kind == "int" else None)
        return V("int", bool_, self.compare(node.ops[0], a, b, node))

    def compare(self, op, a: V, b: V, node, i=0) -> str:
        if isinstance(op, (ast.Is, ast.IsNot)) or (isinstance(op, (ast.Eq, ast.NotEq)) and "none" in (a.kind, b.kind)):
            if b.kind == "none" and a.kind == "none":
                return "true" if isinstance(op, (ast.Is, ast.Eq)) else "false"
            ref = a if b.kind == "none" else b
            pred = "eq" if isinstance(op, (ast.Is, ast.Eq)) else "ne"
            return self.emit(f"icmp {pred} ptr {ref.ref}, null")
        if (a.kind == "mem" and is_str(a.ty)) or (b.kind == "mem" and is_str(b.ty)):
            return self.str_compare(op, a, b, node)
        a, b = self.rvalue(a, node), self.rvalue(b, node)
        if a.kind == "lit" and b.kind == "lit":
            return "true" if _PYCMP[type(op)](a.val, b.val) else "false"
        t = self.tf.steps[(node, "cmp", i)]
        if t is None:
            return self.mixed_compare(op, a, b)
        lit = a if a.kind == "lit" else b if b.kind == "lit" else None
        assert lit is None or fits(lit.val, t), "the typing pass rejects out-of-range comparisons"
        if t is bool_:
            t = u8
        x, y = self.as_int(a, t, node), self.as_int(b, t, node)
        s = signed(t)
        pred = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "slt" if s else "ult", ast.LtE: "sle" if s else "ule",
                ast.Gt: "sgt" if s else "ugt", ast.GtE: "sge" if s else "uge"}[type(op)]
        return self.emit(f"icmp {pred} {lt(t)} {x}, {y}")

    def mixed_compare(self, op, a: V, b: V) -> str:
        """Signed with unsigned compares by value, as in Python (not C's conversion)."""
        w = max(bits(a.ty), bits(b.ty))
        if w < 64:
            t = {8: i16, 16: i32, 32: i64}[w]
            x, y = self.convert(a.ref, a.ty, t), self.convert(b.ref, b.ty, t)
            pred = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "slt", ast.LtE: "sle", ast.Gt: "sgt", ast.GtE: "sge"}
            return self.emit(f"icmp {pred[type(op)]} {lt(t)} {x}, {y}")
        x, y = self.convert(a.ref, a.ty, u64), self.convert(b.ref, b.ty, u64)
        neg_side = a if signed(a.ty) else b
        neg = self.emit(f"icmp slt i64 {x if neg_side is a else y}, 0")
        upred = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "ult", ast.LtE: "ule", ast.Gt: "ugt", ast.GtE: "uge"}
        u = self.emit(f"icmp {upred[type(op)]} i64 {x}, {y}")
        # when the signed side is negative it is the smaller value
        a_smaller = neg_side is a
        known = {ast.Eq: False, ast.NotEq: True, ast.Lt: a_smaller, ast.LtE: a_smaller,
                 ast.Gt: not a_smaller, ast.GtE: not a_smaller}[type(op)]
        return self.emit(f"select i1 {neg}, i1 {'true' if known else 'false'}, i1 {u}")

    def str_compare(self, op, a: V, b: V, node) -> str:
        if a.kind == "bytes":
            a, b = b, a
        self.need_checked(a, node)
        if b.kind == "bytes":
            data = b.val
            if len(data) > a.ty._len:
                return "false" if isinstance(op, ast.Eq) else "true"
            # compare the literal and its NUL terminator (unless it fills the whole Str)
            cmp = data + (b"\0" if len(data) < a.ty._len else b"")
            acc = None
            i = 0
            while i < len(cmp):
                w = 8 if len(cmp) - i >= 8 else 4 if len(cmp) - i >= 4 else 2 if len(cmp) - i >= 2 else 1
                val = int.from_bytes(cmp[i:i + w], "little", signed=True)
                ld = self.emit(f"load i{w * 8}, ptr {self.gep(a.ref, i)}, align 1")
                c = self.emit(f"icmp eq i{w * 8} {ld}, {val}")
                acc = c if acc is None else self.emit(f"and i1 {acc}, {c}")
                i += w
            return acc if isinstance(op, ast.Eq) else self.emit(f"xor i1 {acc}, true")
        if b.kind == "mem" and is_str(b.ty):
            self.need_checked(b, node)
            # Str vs Str: equal up to and including the first NUL; compared bytewise over the shorter
            n = min(a.ty._len, b.ty._len)
            acc = "true"
            done = "false"
            for i in range(n):
                x = self.emit(f"load i8, ptr {self.gep(a.ref, i)}, align 1")
                y = self.emit(f"load i8, ptr {self.gep(b.ref, i)}, align 1")
                same = self.emit(f"icmp eq i8 {x}, {y}")
                ok = self.emit(f"or i1 {done}, {same}")
                acc = self.emit(f"and i1 {acc}, {ok}")
                z = self.emit(f"icmp eq i8 {x}, 0")
                done = self.emit(f"or i1 {done}, {z}")
            return acc if isinstance(op, ast.Eq) else self.emit(f"xor i1 {acc}, true")
        self.err(node, f"comparison of {a.kind} with {b.kind}")

    def e_Call(self, node, want):
        fv = self.expr(node.func)
        if fv.kind == "method":
            owner, name = fv.val
            if owner == "bpf":
                return self.bpf_call(name, node)
            if owner == "map":
                return self.map_method(fv.ty, name, node)
            if owner == "ctx":
                return self.packet(node)
        if fv.kind == "py":
            obj = fv.val
            if isinstance(obj, type) and is_int(obj):
                return self.int_cast(obj, node)
            if obj is int or obj is bool:
                if obj is bool:
                    return V("int", bool_, self.truth(node.args[0]))
                return self.int_value(node.args[0], want)
            if isinstance(obj, type) and is_struct(obj):
                return self.construct(obj, node)
            if obj in (min, max):
                return self.minmax(obj is min, node, want)
            if obj is abs:
                return self.abs_(node, want)
            if obj is len:
                return self.len_(node)
            if obj is ord:
                c = self.const_eval(node.args[0]) if len(node.args) == 1 and not node.keywords else None
                return V("lit", val=ord(c))
            if obj is print:
                return self.print_(node)
            if isinstance(obj, pytypes.FunctionType):
                return self.user_call(obj, node)
        self.err(node, f"call of a {fv.kind}")

    def int_cast(self, t, node) -> V:
        v = self.int_value(node.args[0], t)
        if v.kind == "lit":
            return V("int", t, self.as_int(V("lit", val=int(t(v.val))), t, node))
        return V("int", t, self.convert(v.ref, v.ty, t))

    def construct(self, t, node) -> V:
        mem = self.alloca(t._size, max(t._align, 8))
        self.memset(mem, t._size)
        v = V("mem", t, mem, align=max(t._align, 8))
        for kw in node.keywords:
            fld = self.field(v, kw.arg, kw.value)
            self.store_into(fld, self.expr(kw.value, fld.ty if is_int(fld.ty) else None), kw.value)
        return v

    def minmax(self, is_min, node, want) -> V:
        acc = self.int_value(node.args[0], want)
        for i, a in enumerate(node.args[1:]):
            b = self.int_value(a, want if acc.kind == "lit" else acc.ty)
            if acc.kind == "lit" and b.kind == "lit":
                acc = V("lit", val=min(acc.val, b.val) if is_min else max(acc.val, b.val))
                continue
            t, by_value = self.tf.steps[(node, "minmax", i)]
            c = self.mixed_compare(ast.Lt() if is_min else ast.Gt(), acc, b) if by_value else None
            x, y = self.as_int(acc, t, node), self.as_int(b, t, node)
            if c is None:
                pred = ("slt" if is_min else "sgt") if signed(t) else ("ult" if is_min else "ugt")
                c = self.emit(f"icmp {pred} {lt(t)} {x}, {y}")
            acc = V("int", t, self.emit(f"select i1 {c}, {lt(t)} {x}, {lt(t)} {y}"))
        return acc

    def abs_(self, node, want) -> V:
        v = self.int_value(node.args[0], want)
        if v.kind == "lit":
            return V("lit", val=abs(v.val))
        if not signed(v.ty):
            return v
        neg = self.emit(f"sub {lt(v.ty)} 0, {v.ref}")
        c = self.emit(f"icmp slt {lt(v.ty)} {v.ref}, 0")
        return V("int", v.ty, self.emit(f"select i1 {c}, {lt(v.ty)} {neg}, {lt(v.ty)} {v.ref}"))

    def len_(self, node) -> V:
        v = self.expr(node.args[0])
        if v.kind == "mem" and (is_array(v.ty) or is_str(v.ty)):
            return V("lit", val=v.ty._len)
        if v.kind == "bytes":
            return V("lit", val=len(v.val))
        self.err(node.args[0], f"len() of a {v.kind}")

    def print_(self, node) -> V:
        """print(...) -> bpf_trace_printk (at most 3 values; a newline is added like Python)."""
        end = "\n"
        for kw in node.keywords:
            e = self.const_eval(kw.value)
            end = e
        fmt, args = "", []
        parts = []
        for i, a in enumerate(node.args):
            if i:
                parts.append(" ")
            if isinstance(a, ast.JoinedStr):
                parts.extend(a.values)
            else:
                parts.append(a)
        for p in parts:
            if isinstance(p, str):
                fmt += p.replace("%", "%%")
            elif isinstance(p, ast.Constant) and isinstance(p.value, str):
                fmt += p.value.replace("%", "%%")
            else:
                expr, spec = (p.value, p.format_spec) if isinstance(p, ast.FormattedValue) else (p, None)
                sp = ""
                if spec is not None:
                    sp = spec.values[0].value
                v = self.rvalue(self.expr(expr), expr)
                if v.kind == "lit":
                    fmt += format(v.val, sp)
                    continue
                if v.kind == "mem" and is_str(v.ty):
                    self.need_checked(v, expr)
                    fmt += "%s"
                    args.append(("ptr", v.ref))
                    continue
                conv = {"": None, "d": None, "x": "x", "X": "X", "o": "o"}.get(sp.lstrip("0123456789"), "bad")
                width = sp[:len(sp) - len(sp.lstrip("0123456789"))]
                letter = conv or ("d" if signed(v.ty) else "u")
                fmt += f"%{width}ll{letter}"
                args.append(("i64", self.convert(v.ref, v.ty, i64 if signed(v.ty) else u64)))
        fmt += end
        data = fmt.encode() + b"\0"
        s = self.ir.cstring(data)
        r = self.helper_call(U.HELPERS["trace_printk"], [("ptr", s), ("i32", str(len(data)))] + args)
        return V("int", i64, r)

    # ---- helpers ------------------------------------------------------------------------
    def bpf_call(self, name, node) -> V:
        short = {"pid": ("get_current_pid_tgid", 32, u32), "tgid": ("get_current_pid_tgid", 32, u32),
                 "tid": ("get_current_pid_tgid", 0, u32), "uid": ("get_current_uid_gid", 0, u32),
                 "gid": ("get_current_uid_gid", 32, u32)}
        if name in short:
            h, shift, t = short[name]
            r = self.helper_call(U.HELPERS[h], [])
            if shift:
                r = self.emit(f"lshr i64 {r}, {shift}")
            return V("int", t, self.emit(f"trunc i64 {r} to i32"))
        if name in ("ktime_ns", "cpu"):
            h = {"ktime_ns": "ktime_get_ns", "cpu": "get_smp_processor_id"}[name]
            r = self.helper_call(U.HELPERS[h], [])
            return V("int", u64, r) if name == "ktime_ns" else V("int", u32, self.emit(f"trunc i64 {r} to i32"))
        if name in ("comm", "get_current_comm") and not node.args:
            mem = self.alloca(16, 8)
            self.helper_call(U.HELPERS["get_current_comm"], [("ptr", mem), ("i32", "16")])
            return V("mem", Str[16], mem, align=8)
        if name in ("load_byte", "load_half", "load_word"):
            skb = self.expr(node.args[0])
            off = self.as_int(self.int_value(node.args[1], u64), u64, node.args[1])
            intr = f"llvm.bpf.load.{name.split('_')[1]}"
            self.ir.declares.add(f"declare i64 @{intr}(ptr, i64)")
            r = self.emit(f"call i64 @{intr}(ptr {skb.ref}, i64 {off})")
            t = {"byte": u8, "half": u16, "word": u32}[name.split("_")[1]]
            return V("int", t, self.emit(f"trunc i64 {r} to {lt(t)}"))
        hs = H.helpers()
        h = hs[name]
        args = list(node.args)
        vals: list[tuple[str, str]] = []
        pi = 0
        for a in args:
            p = h.params[pi]
            if isinstance(a, ast.Name) and a.id in self.locals and self.locals[a.id].kind == "int" \
                    and p.is_pointer and H.size_param_after(h, pi) and len(args) < len(h.params):
                # an integer variable as a helper's output buffer: `bpf.probe_read_user(x, addr)`
                var = self.locals[a.id]
                vals += [("ptr", var.slot), ("i64", str(var.ty._size))]
                pi += 2
                continue
            v = self.expr(a)
            # memory goes by address; an integer field does only where a buffer and its size are expected
            # (pointer fields of contexts are u64 addresses and go by value)
            buffer = v.kind == "mem" and is_int(v.ty) and p.is_pointer and H.size_param_after(h, pi)
            if v.kind == "mem" and not is_int(v.ty) or v.kind in ("map", "ctx") or buffer:
                if v.kind == "mem":
                    self.need_checked(v, a)
                vals.append(("ptr", v.ref))
                pi += 1
                if v.kind == "mem" and H.size_param_after(h, pi - 1) and len(args) < len(h.params):
                    vals.append(("i64", str(v.ty._size)))
                    pi += 1
                continue
            if v.kind == "bytes":
                vals.append(("ptr", self.ir.cstring(v.val + b"\0")))
                pi += 1
                continue
            if v.kind == "none":
                vals.append(("ptr", "null"))
                pi += 1
                continue
            iv = self.int_value(a, u64)
            vals.append(("i64", self.as_int(iv, u64 if iv.kind == "lit" or not signed(iv.ty) else i64, a)
                         if iv.kind == "lit" or bits(iv.ty) == 64 else
                         self.convert(iv.ref, iv.ty, i64 if signed(iv.ty) else u64)))
            pi += 1
        if h.returns_pointer:
            r = self.helper_call(h.id, vals, "ptr")
            return V("int", u64, self.emit(f"ptrtoint ptr {r} to i64"))
        r = self.helper_call(h.id, vals)
        rt = {"u64": u64, "u32": u32, "int": i32, "long": i64, "__u64": u64, "s64": i64, "u16": u16,
              "void": None}.get(h.ret, i64)
        if rt is None:
            return V("void")
        return V("int", rt, r if rt._size == 8 else self.emit(f"trunc i64 {r} to {lt(rt)}"))

    def packet(self, node) -> V:
        """ctx.packet(T, offset): a reference to T at offset in the packet, None when too short."""
        tv = self.expr(node.args[0])
        t = tv.val
        off = self.int_value(node.args[1], u64)
        doff, eoff = self.prog.packet
        data = self.emit(f"load i32, ptr {self.gep(self.ctx_ref, doff)}, align 4")
        end = self.emit(f"load i32, ptr {self.gep(self.ctx_ref, eoff)}, align 4")
        dp = self.emit(f"inttoptr i64 {self.emit(f'zext i32 {data} to i64')} to ptr")
        ep = self.emit(f"inttoptr i64 {self.emit(f'zext i32 {end} to i64')} to ptr")
        # packet data is never NULL; telling LLVM spares a NULL test of `data` in `is None` checks
        self.ir.declares.add("declare void @llvm.assume(i1)")
        self.emit(f"call void @llvm.assume(i1 {self.emit(f'icmp ne ptr {dp}, null')})", False)
        if off.kind == "lit":
            p = self.gep(dp, off.val)
        else:
            o = self.as_int(off, u64, node.args[1])
            o = self.emit(f"and i64 {o}, 65535")   # the verifier needs a bounded variable offset
            p = self.emit(f"getelementptr inbounds i8, ptr {dp}, i64 {o}")
        lim = self.emit(f"getelementptr inbounds i8, ptr {p}, i64 {t._size}")
        short = self.emit(f"icmp ugt ptr {lim}, {ep}")
        return V("mem", t, self.emit(f"select i1 {short}, ptr null, ptr {p}"), nullable=True)

    # ---- maps ---------------------------------------------------------------------------
    def key_ptr(self, m: Map, node, t=None) -> str:
        """Pointer to a key (or value) of type t, materialised on the stack when needed."""
        t = t or m.key
        v = self.expr(node, t if is_int(t) else None)
        if v.kind == "mem" and v.ty is t:
            self.need_checked(v, node)
            return v.ref
        if is_int(t):
            iv = self.as_int(self.rvalue(v, node), t, node)
            mem = self.alloca(t._size, t._align)
            self.store_int(mem, t, iv)
            return mem
        if is_str(t) and v.kind == "bytes":
            mem = self.alloca(t._size, 1)
            self.store_into(V("mem", t, mem), v, node)
            return mem
        self.err(node, f"a {v.kind} value as {tname(t)}")

    def map_lookup(self, mv: V, key_node) -> str:
        m = mv.val
        k = self.key_ptr(m, key_node)
        return self.helper_call(U.HELPERS["map_lookup_elem"], [("ptr", mv.ref), ("ptr", k)], "ptr")

    def value_ref(self, mv: V, p: str, nullable=True) -> V:
        percpu = mv.val.map_type in (U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_PERCPU_HASH,
                                     U.BPF_MAP_TYPE_LRU_PERCPU_HASH)
        return V("mem", mv.val.value, p, nullable=nullable, shared=not percpu, align=8)

    def map_read(self, mv: V, key_node, node) -> V:
        m = mv.val
        p = self.map_lookup(mv, key_node)
        return self.load_or_default(p, m.value, V("lit", val=0), node)

    def load_or_default(self, p: str, t, default: V, node) -> V:
        yes, no, end = self.new_label("found"), self.new_label("missing"), self.new_label("got")
        self.cbr(self.emit(f"icmp ne ptr {p}, null"), yes, no)
        self.block(yes)
        a = self.load_int(p, t)
        self.br(end)
        self.block(no)
        d = self.as_int(default, t, node)
        nb = self.cur_block()
        self.br(end)
        self.block(end)
        return V("int", t, self.emit(f"phi {lt(t)} [ {a}, %{yes} ], [ {d}, %{nb} ]"))

    def map_update(self, mv: V, key_node, v: V, vnode, flags_node, node):
        m = mv.val
        k = self.key_ptr(m, key_node)
        val = self.value_ptr(m.value, v, vnode)
        flags = "0"
        if flags_node is not None:
            flags = self.as_int(self.int_value(flags_node, u64), u64, flags_node)
        return self.helper_call(U.HELPERS["map_update_elem"], [("ptr", mv.ref), ("ptr", k), ("ptr", val),
                                                                ("i64", flags)])

    def value_ptr(self, t, v: V, vnode) -> str:
        if v.kind == "mem" and v.ty is t:
            self.need_checked(v, vnode)
            return v.ref
        mem = self.alloca(t._size, t._align)
        if not is_int(t):
            self.memset(mem, t._size)
        self.store_into(V("mem", t, mem), v, vnode)
        return mem

    def map_augassign(self, mv: V, tgt, op, value_node, node):
        """m[k] op= n: lookup, insert zero when missing (hash maps), then update in place
        (atomically for += / -= on shared maps)."""
        m = mv.val
        k = self.key_ptr(m, tgt.slice)
        p = self.helper_call(U.HELPERS["map_lookup_elem"], [("ptr", mv.ref), ("ptr", k)], "ptr")
        slot = self.t()
        self.allocas.append(f"  {slot} = alloca ptr, align 8")
        self.emit(f"store ptr {p}, ptr {slot}, align 8", False)
        if m.kind == "hash":
            miss, end = self.new_label("insert"), self.new_label("have")
            self.cbr(self.emit(f"icmp eq ptr {p}, null"), miss, end)
            self.block(miss)
            zero = self.alloca(m.value._size, m.value._align)
            self.store_int(zero, m.value, "0")
            self.helper_call(U.HELPERS["map_update_elem"], [("ptr", mv.ref), ("ptr", k), ("ptr", zero),
                                                            ("i64", str(U.BPF_NOEXIST))])
            p2 = self.helper_call(U.HELPERS["map_lookup_elem"], [("ptr", mv.ref), ("ptr", k)], "ptr")
            self.emit(f"store ptr {p2}, ptr {slot}, align 8", False)
            self.br(end)
            self.block(end)
        p = self.emit(f"load ptr, ptr {slot}, align 8")
        ok, end = self.new_label("upd"), self.new_label("updend")
        self.cbr(self.emit(f"icmp ne ptr {p}, null"), ok, end)
        self.block(ok)
        self.update_mem(self.value_ref(mv, p, nullable=False), op, value_node, node)
        self.br(end)
        self.block(end)

    def map_method(self, mv: V, name: str, node) -> V:
        m = mv.val
        kind = m.kind
        args = node.args
        kw = {k.arg: k.value for k in node.keywords}

        if kind in ("hash", "array"):
            if name == "lookup":
                return self.value_ref(mv, self.map_lookup(mv, args[0]))
            if name == "get":
                p = self.map_lookup(mv, args[0])
                if len(args) == 2:
                    return self.load_or_default(p, m.value, self.int_value(args[1], m.value), node)
                # a private copy: later map updates do not change it
                t = m.value
                mem = self.alloca(t._size, t._align)
                yes, end = self.new_label("copy"), self.new_label("copied")
                isnull = self.emit(f"icmp eq ptr {p}, null")
                self.cbr(isnull, end, yes)
                self.block(yes)
                self.memcpy(mem, p, t._size, max(t._align, 1), 8)
                self.br(end)
                self.block(end)
                return V("mem", t, self.emit(f"select i1 {isnull}, ptr null, ptr {mem}"), nullable=True)
            if name == "update":
                fl = args[2] if len(args) == 3 else kw.get("flags")
                r = self.map_update(mv, args[0], self.expr(args[1], m.value if is_int(m.value) else None),
                                    args[1], fl, node)
                return V("int", i64, r)
            if name == "delete":
                k = self.key_ptr(m, args[0])
                return V("int", i64, self.helper_call(U.HELPERS["map_delete_elem"], [("ptr", mv.ref), ("ptr", k)]))
            if name == "record" and m.tags.get("histogram"):
                v = self.as_int(self.int_value(args[0], u64), u64, args[0])
                # floor(log2(v)) + 1 by binary search: BPF has no count-leading-zeros instruction
                b = "0"
                for sh in (32, 16, 8, 4, 2, 1):
                    t = self.emit(f"lshr i64 {v}, {sh}")
                    c = self.emit(f"icmp ne i64 {t}, 0")
                    v = self.emit(f"select i1 {c}, i64 {t}, i64 {v}")
                    b = self.emit(f"add i64 {b}, {self.emit(f'select i1 {c}, i64 {sh}, i64 0')}")
                nz = self.emit(f"zext i1 {self.emit(f'icmp ne i64 {v}, 0')} to i64")
                b32 = self.emit(f"trunc i64 {self.emit(f'add i64 {b}, {nz}')} to i32")
                k = self.alloca(4, 4)
                self.store_int(k, u32, b32)
                p = self.helper_call(U.HELPERS["map_lookup_elem"], [("ptr", mv.ref), ("ptr", k)], "ptr")
                ok, end = self.new_label("hist"), self.new_label("histend")
                self.cbr(self.emit(f"icmp ne ptr {p}, null"), ok, end)
                self.block(ok)
                self.emit(f"atomicrmw add ptr {p}, i64 1 monotonic, align 8")
                self.br(end)
                self.block(end)
                return V("void")
        if kind == "ringbuf":
            if name == "reserve":
                tv = self.expr(args[0])
                r = self.helper_call(U.HELPERS["ringbuf_reserve"], [("ptr", mv.ref), ("i64", str(tv.val._size)),
                                                                    ("i64", "0")], "ptr")
                return V("mem", tv.val, r, nullable=True, shared=True, align=8)
            if name in ("submit", "discard"):
                e = self.expr(args[0])
                self.need_checked(e, args[0])
                fl = self.flags_arg(args, 1, kw)
                self.helper_call(U.HELPERS[f"ringbuf_{name}"], [("ptr", e.ref), ("i64", fl)], "void")
                if isinstance(args[0], ast.Name):
                    self.nonnull.discard(args[0].id)
                return V("void")
            if name == "output":
                e = self.expr(args[0])
                self.need_checked(e, args[0])
                fl = self.flags_arg(args, 1, kw)
                return V("int", i64, self.helper_call(U.HELPERS["ringbuf_output"],
                                                      [("ptr", mv.ref), ("ptr", e.ref), ("i64", str(e.ty._size)),
                                                       ("i64", fl)]))
        if kind == "perf" and name == "output":
            if len(args) == 2:
                c, ev = self.expr(args[0]), args[1]
            elif len(args) == 1:
                c, ev = V("ctx", ref=self.ctx_ref), args[0]
            else:
                self.err(node, "PerfEventArray.output arguments")
            e = self.expr(ev)
            self.need_checked(e, ev)
            return V("int", i64, self.helper_call(U.HELPERS["perf_event_output"],
                                                  [("ptr", c.ref), ("ptr", mv.ref), ("i64", str(BPF_F_CURRENT_CPU)),
                                                   ("ptr", e.ref), ("i64", str(e.ty._size))]))
        if kind == "progarray" and name == "tail_call":
            c = self.expr(args[0])
            idx = self.as_int(self.int_value(args[1], u32), u32, args[1])
            idx = self.emit(f"zext i32 {idx} to i64")
            return V("int", i64, self.helper_call(U.HELPERS["tail_call"], [("ptr", c.ref), ("ptr", mv.ref),
                                                                           ("i64", idx)]))
        if kind == "stack_trace" and name == "get_stackid":
            c = self.expr(args[0])
            fl = self.flags_arg(args, 1, kw)
            return V("int", i64, self.helper_call(U.HELPERS["get_stackid"], [("ptr", c.ref), ("ptr", mv.ref),
                                                                              ("i64", fl)]))
        if kind in ("queue", "bloom") and name == "push":
            val = self.value_ptr(m.value, self.expr(args[0], m.value), args[0])
            fl = self.flags_arg(args, 1, kw)
            return V("int", i64, self.helper_call(U.HELPERS["map_push_elem"], [("ptr", mv.ref), ("ptr", val),
                                                                               ("i64", fl)]))
        if kind == "queue" and name in ("pop", "peek"):
            t = m.value
            mem = self.alloca(t._size, t._align)
            r = self.helper_call(U.HELPERS[f"map_{name}_elem"], [("ptr", mv.ref), ("ptr", mem)])
            ok = self.emit(f"icmp eq i64 {r}, 0")
            return V("mem", t, self.emit(f"select i1 {ok}, ptr {mem}, ptr null"), nullable=True)
        if kind == "bloom" and name == "contains":
            val = self.value_ptr(m.value, self.expr(args[0], m.value), args[0])
            r = self.helper_call(U.HELPERS["map_peek_elem"], [("ptr", mv.ref), ("ptr", val)])
            return V("int", bool_, self.emit(f"icmp eq i64 {r}, 0"))
        self.err(node.func, f"{type(m).__name__}.{name}")

    def flags_arg(self, args, i, kw) -> str:
        n = args[i] if len(args) > i else kw.get("flags")
        if n is None:
            return "0"
        return self.as_int(self.int_value(n, u64), u64, n)

    # ---- user functions -----------------------------------------------------------------
    def user_call(self, fn, node) -> V:
        sub = self.m.subprogram(fn, node, self.file)
        vals = []
        for a, (pname, pt) in zip(node.args, sub.params):
            if is_int(pt):
                vals.append(f"{lt(pt)} {self.as_int(self.int_value(a, pt), pt, a)}")
            else:
                v = self.expr(a)
                self.need_checked(v, a)
                vals.append(f"ptr {v.ref}")
        rt = "void" if sub.ret is None else lt(sub.ret)
        if sub.ret is None:
            self.emit(f"call void @{sub.llname}({', '.join(vals)})", False)
            return V("void")
        return V("int", sub.ret, self.emit(f"call {rt} @{sub.llname}({', '.join(vals)})"))

    # ---- globals ------------------------------------------------------------------------
    def lookup_global(self, name) -> GlobalVar | None:
        modname = self.globals_ns.get("__name__")
        return self.m.globals.get((modname, name))

    def global_mem(self, g: GlobalVar) -> V:
        ref = self.m.global_ref(g)
        return V("mem", g.type, ref, shared=True, volatile=g.kind == "const")

    def store_global(self, g: GlobalVar, v: V, vnode, node):
        self.store_into(self.global_mem(g), v, vnode)


_MISSING = object()
def s_Delete(self, s):
    for t in s.targets:
        base = self.expr(t.value)
        k = self.key_ptr(base.val, t.slice)
        self.helper_call(U.HELPERS["map_delete_elem"], [("ptr", base.ref), ("ptr", k)])


FunctionLowering.s_Delete = s_Delete


@dataclass
class Subprogram:
    fn: Any
    llname: str
    params: list = field(default_factory=list)
    ret: Any = None
    done: bool = False

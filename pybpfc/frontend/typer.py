"""The typing pass: checked module -> typed program (see docs/language.md, "Typing").

`type_module(info, tracepoint_formats)` walks every program and every function they call, in
the order codegen lowers them, and records:
  - for every expression node it could type, a `T` (kind, integer/memory type, literal value,
    resolved Python object / map / method, None-ness);
  - for every function, its locals (kind "int" or "ref", type, whether it may hold None),
    parameters, return type and (programs) the context layout;
  - which event type each ring/perf buffer carries.

The rules are those of `typing.py` plus the reference/None rules of the language. The pass does
not report errors yet: where a program is wrong it leaves the node (and the rest of that
statement) untyped, and codegen, which still runs every check, reports the error. Codegen reads
locals' types and context layouts from here and checks, for programs without errors, that what
it lowers has exactly the type recorded here.
"""
from __future__ import annotations

import ast
import builtins
import os
import types as pytypes
from dataclasses import dataclass, field
from typing import Any

from ..lang.bpf import _Bpf
from ..lang.maps import Map
from ..lang.types import Array, IntType, Str, Struct, bool_, i16, i32, i64, u8, u16, u32, u64
from . import helpers as H
from . import tracepoint as TP
from .module import collect_globals, function_ast
from .typing import binop_type, bits, common, compare_type, is_int, literal_type

# struct pt_regs on x86-64 (arch/x86/include/uapi/asm/ptrace.h), byte offsets
PT_REGS = {"r15": 0, "r14": 8, "r13": 16, "r12": 24, "bp": 32, "bx": 40, "r11": 48, "r10": 56, "r9": 64,
           "r8": 72, "ax": 80, "cx": 88, "dx": 96, "si": 104, "di": 112, "orig_ax": 120, "ip": 128, "cs": 136,
           "flags": 144, "sp": 152, "ss": 160}
ARG_REGS = ["di", "si", "dx", "cx", "r8", "r9"]
XDP_MD = {"data": 0, "data_end": 4, "data_meta": 8, "ingress_ifindex": 12, "rx_queue_index": 16,
          "egress_ifindex": 20}
SK_BUFF = {n: 4 * i for i, n in enumerate(
    "len pkt_type mark queue_mapping protocol vlan_present vlan_tci vlan_proto priority ingress_ifindex "
    "ifindex tc_index cb0 cb1 cb2 cb3 cb4 hash tc_classid data data_end napi_id family remote_ip4 "
    "local_ip4".split())}
SK_BUFF.update({"remote_port": 140, "local_port": 144, "data_meta": 148})
PERF_EVENT = {"sample_period": 168, "addr": 176}
BUILTIN_OK = {"range", "min", "max", "abs", "len", "print", "int", "bool", "ord"}
PROBE_KINDS = ("uprobe", "kprobe", "uretprobe", "kretprobe", "raw_tracepoint", "fentry", "fexit")
_MISSING = object()


def tname(t) -> str:
    return getattr(t, "__name__", str(t))


def _sub(t, base) -> bool:
    return isinstance(t, type) and issubclass(t, base)


@dataclass(frozen=True)
class T:
    """The type of one expression.

    kind: int (a typed integer value), lit (an untyped integer literal, `val`), mem (a reference
    to memory of `ty`: Struct/Array/Str/int; `nullable` when it may be None), none, map (`val` the
    Map), ctx, bytes/str (`val`), py (a compile-time Python object `val`: type, function, module,
    the bpf namespace), method (`val` = (owner, name), owner "bpf" | "map" | "ctx"), void."""
    kind: str
    ty: Any = None
    val: Any = None
    nullable: bool = False

    def show(self) -> str:
        if self.kind == "int":
            return tname(self.ty)
        if self.kind == "lit":
            return f"literal {self.val}"
        if self.kind == "mem":
            return ("optional " if self.nullable else "ref ") + tname(self.ty)
        if self.kind == "method":
            return f"method {self.val[0]}.{self.val[1]}"
        if self.kind == "py":
            return f"python {getattr(self.val, '__name__', type(self.val).__name__)}"
        return self.kind


@dataclass
class LocalVar:
    name: str
    kind: str            # "int" | "ref"
    ty: Any
    nullable: bool = False

    def show(self) -> str:
        return ("ref " if self.kind == "ref" else "") + tname(self.ty)


@dataclass
class TypedFunction:
    name: str
    fn: Any
    node: ast.FunctionDef
    file: str
    kind: str                                   # program kind, or "subprogram"
    section: str
    params: list = field(default_factory=list)  # [(name, type)] (programs: the typed probe arguments)
    ret: Any = None                             # None: returns nothing
    ctx_name: str = ""
    ctx_fields: dict = field(default_factory=dict)   # field -> (offset, type, is_pointer)
    packet: tuple | None = None                 # (data offset, data_end offset) in the context
    ctx_error: str | None = None                # why the context layout is unknown
    locals: dict = field(default_factory=dict)  # name -> LocalVar, in order of first assignment
    exprs: dict = field(default_factory=dict)   # ast node -> T
    callees: list = field(default_factory=list)  # functions called, in order

    def type_of(self, node) -> T | None:
        return self.exprs.get(node)


@dataclass
class TypedModule:
    path: str
    functions: list = field(default_factory=list)   # programs, then called functions as discovered
    by_node: dict = field(default_factory=dict)     # FunctionDef node -> TypedFunction
    events: dict = field(default_factory=dict)      # id(map) -> event type

    def function(self, node) -> TypedFunction | None:
        return self.by_node.get(node)

    def describe_function(self, f: TypedFunction, name: str | None = None) -> list[str]:
        ret = tname(f.ret) if f.ret is not None else "None"
        out = [f"{name or f.name} ({f.kind}, section {f.section}) -> {ret}"
               f"    # {os.path.basename(f.file)}:{f.node.lineno}"]
        out += [f"    {n}: {v.show()}" for n, v in f.locals.items()]
        return out


class _Unknown(Exception):
    """This expression (and so its statement) has no type: the program is wrong here."""


def _unknown():
    raise _Unknown()


def type_module(info, tracepoint_formats: str | None = None) -> TypedModule:
    return _ModuleTyper(info, tracepoint_formats).run()


class _ModuleTyper:
    def __init__(self, info, tp_dir):
        self.info, self.tp_dir = info, tp_dir
        self.tm = TypedModule(info.path)
        self.globals = dict(info.globals)
        self.queue: list = []

    def run(self) -> TypedModule:
        for p in self.info.programs:
            self.program(p)
        while self.queue:
            self.body(self.queue.pop(0))
        return self.tm

    def module_global(self, mod, name):
        key = (mod.__name__, name)
        if key not in self.globals:
            f = getattr(mod, "__file__", None)
            if f and f.endswith(".py"):
                found: dict = {}
                try:
                    collect_globals(mod, os.path.abspath(f), found)
                except (OSError, SyntaxError):
                    pass
                self.globals.update(found)
        return self.globals.get(key)

    def program(self, p):
        decl, node, kind = p.decl, p.node, p.decl.kind
        tf = TypedFunction(p.name, p.fn, node, p.file, kind, decl.section, ret=i32)
        if kind == "xdp":
            tf.ctx_fields = {k: (v, u32, False) for k, v in XDP_MD.items() if k not in ("data", "data_end", "data_meta")}
            tf.packet = (0, 4)
        elif kind in ("socket_filter", "tc", "cgroup_skb"):
            tf.ctx_fields = {k: (v, u32, False) for k, v in SK_BUFF.items() if k not in ("data", "data_end", "data_meta")}
            if kind != "socket_filter":
                tf.packet = (76, 80)
        elif kind == "tracepoint":
            try:
                tf.ctx_fields = TP.load(decl.target, self.tp_dir)
            except TP.TracepointNotFound as e:
                tf.ctx_error = str(e)
        elif kind == "perf_event":   # struct bpf_perf_event_data: the registers, then these
            tf.ctx_fields = {k: (v, u64, False) for k, v in {**PT_REGS, **PERF_EVENT}.items()}
        elif kind in ("uprobe", "uretprobe", "kprobe", "kretprobe"):
            tf.ctx_fields = {k: (v, u64, False) for k, v in PT_REGS.items()}
        params = list(node.args.args)
        if params and params[0].annotation is None:
            tf.ctx_name = params[0].arg
            params = params[1:]
        ft = _FunctionTyper(self, tf)
        for q in params:
            t = ft.annotation(q.annotation) if q.annotation is not None else None
            if is_int(t):
                tf.params.append((q.arg, t))
        if kind not in PROBE_KINDS:
            tf.params = []
        for name, t in tf.params:
            tf.locals[name] = LocalVar(name, "int", t)
        self.add(tf)
        self.body(tf)

    def add(self, tf: TypedFunction):
        self.tm.functions.append(tf)
        self.tm.by_node[tf.node] = tf

    def subprogram(self, fn) -> TypedFunction | None:
        fnode, ffile = function_ast(fn, None)
        if fnode is None:
            return None
        if fnode in self.tm.by_node:
            return self.tm.by_node[fnode]
        tf = TypedFunction(fn.__name__, fn, fnode, ffile, "subprogram", ".text")
        ft = _FunctionTyper(self, tf)
        for p in fnode.args.args:
            t = ft.annotation(p.annotation) if p.annotation is not None else None
            if t is None:
                return None
            tf.params.append((p.arg, t))
        if fnode.returns is None:
            has_value = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fnode))
            tf.ret = i64 if has_value else None
        elif isinstance(fnode.returns, ast.Constant) and fnode.returns.value is None:
            tf.ret = None
        else:
            tf.ret = ft.annotation(fnode.returns)
            if not is_int(tf.ret):
                tf.ret = None
        for name, t in tf.params:
            tf.locals[name] = LocalVar(name, "int", t) if is_int(t) else LocalVar(name, "ref", t)
        self.add(tf)
        self.queue.append(tf)
        return tf

    def body(self, tf: TypedFunction):
        ft = _FunctionTyper(self, tf)
        for name, t in tf.params:
            if not is_int(t):
                ft.nonnull.add(name)
        ft.stmts(tf.node.body)


class _FunctionTyper:
    """Mirrors codegen's walk (statement order, None-ness facts), producing types only."""

    def __init__(self, mt: _ModuleTyper, tf: TypedFunction):
        self.mt, self.tf = mt, tf
        self.ns = tf.fn.__globals__
        self.locals: dict = tf.locals
        self.nonnull: set = set()
        self.poisoned: set = set()
        self.declared_global = {n for s in ast.walk(tf.node) if isinstance(s, ast.Global) for n in s.names}

    # ---- statements ---------------------------------------------------------------------
    def stmts(self, body):
        for s in body:
            try:
                meth = getattr(self, "s_" + type(s).__name__, None)
                if meth is None:
                    _unknown()
                meth(s)
            except _Unknown:
                for n in ast.walk(s):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in self.locals:
                        self.poisoned.add(n.id)

    def s_Pass(self, s):
        pass

    s_Global = s_Break = s_Continue = s_Assert = s_Pass

    def s_Expr(self, s):
        if isinstance(s.value, ast.Constant) and (isinstance(s.value.value, str) or s.value.value is Ellipsis):
            return
        if isinstance(s.value, (ast.Compare, ast.Name, ast.Attribute, ast.BinOp, ast.Constant, ast.Subscript,
                                ast.UnaryOp)):
            _unknown()
        self.expr(s.value)

    def s_Return(self, s):
        if s.value is None or (isinstance(s.value, ast.Constant) and s.value.value is None):
            return
        if self.tf.ret is not None:
            self.int_value(s.value, self.tf.ret)

    def s_If(self, s):
        t_nn, f_nn = self.null_facts(s.test)
        self.truth(s.test)
        before = set(self.nonnull)
        self.nonnull = before | t_nn
        self.stmts(s.body)
        states = [] if self.ends(s.body) else [set(self.nonnull)]
        self.nonnull = before | f_nn
        self.stmts(s.orelse)
        if not self.ends(s.orelse):
            states.append(set(self.nonnull))
        self.nonnull = set.intersection(*states) if states else before

    @staticmethod
    def ends(body) -> bool:
        """The block always leaves (codegen's `term` after it): its last statement jumps away."""
        if not body:
            return False
        last = body[-1]
        if isinstance(last, (ast.Return, ast.Break, ast.Continue)):
            return True
        if isinstance(last, ast.If):
            return _FunctionTyper.ends(last.body) and _FunctionTyper.ends(last.orelse)
        return False

    def null_facts(self, test) -> tuple[set, set]:
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

    @staticmethod
    def assigned_in(stmts) -> set:
        return {n.id for s in stmts for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    def s_While(self, s):
        self.nonnull -= self.assigned_in(s.body)
        self.truth(s.test)
        saved = set(self.nonnull)
        self.stmts(s.body)
        self.nonnull = saved

    def s_For(self, s):
        it = s.iter
        if s.orelse or not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range") \
                or not isinstance(s.target, ast.Name) or not 1 <= len(it.args) <= 3:
            _unknown()
        args = [self.int_value(a) for a in it.args]
        self.expr_record(it.func, self.name_type(it.func))
        start, stop = (T("lit", val=0), args[0]) if len(args) == 1 else (args[0], args[1])
        name = s.target.id
        known = [v.ty for v in (start, stop) if v.kind == "int"]
        ty = self.locals[name].ty if name in self.locals and self.locals[name].kind == "int" else None
        if ty is None:
            ty = known[0] if known else i64
            for k in known[1:]:
                ty = common(ty, k)
        self.local_int(name, ty)
        self.nonnull -= self.assigned_in(s.body)
        saved = set(self.nonnull)
        self.stmts(s.body)
        self.nonnull = saved

    def local_int(self, name, ty):
        v = self.locals.get(name)
        if v is None:
            self.locals[name] = LocalVar(name, "int", ty)
        elif v.kind != "int":
            _unknown()

    def s_AnnAssign(self, s):
        if not isinstance(s.target, ast.Name):
            _unknown()
        t = self.annotation(s.annotation)
        if t is None:
            _unknown()
        name = s.target.id
        if is_int(t):
            if name in self.locals and self.locals[name].ty is not t:
                _unknown()
            self.local_int(name, t)
            if s.value is not None:
                self.int_value(s.value, t)
            return
        if s.value is None:
            self.bind_ref(name, T("mem", t))
            return
        v = self.expr(s.value, t)
        if v.kind != "mem" or v.ty is not t:
            _unknown()
        self.bind_ref(name, v)

    def s_Assign(self, s):
        if len(s.targets) != 1:
            _unknown()
        target = s.targets[0]
        if isinstance(target, ast.Tuple):
            if not isinstance(s.value, ast.Tuple) or len(s.value.elts) != len(target.elts):
                _unknown()
            vals = [(tgt, self.rvalue(self.expr(e))) for tgt, e in zip(target.elts, s.value.elts)]
            for tgt, v in vals:
                self.assign(tgt, self.rvalue(v))
            return
        want = None
        if isinstance(target, ast.Name) and target.id in self.locals and self.locals[target.id].kind == "int":
            want = self.locals[target.id].ty
        if isinstance(target, ast.Attribute) and self.is_comm_call(s.value):
            base = self.expr(target.value)
            if base.kind == "mem" and _sub(base.ty, Struct):
                fld = self.field(base, target.attr)
                if _sub(fld.ty, Str):
                    self.tf.callees.append(("helper", "get_current_comm"))
                    return
            self.expr(s.value)
            return
        self.assign(target, self.expr(s.value, want))

    def is_comm_call(self, node) -> bool:
        if not (isinstance(node, ast.Call) and not node.args and not node.keywords
                and isinstance(node.func, ast.Attribute) and node.func.attr in ("comm", "get_current_comm")
                and isinstance(node.func.value, ast.Name)):
            return False
        return isinstance(self.ns.get(node.func.value.id), _Bpf) and node.func.value.id not in self.locals

    def lookup_global(self, name):
        return self.mt.globals.get((self.ns.get("__name__"), name))

    def assign(self, target, v: T):
        if isinstance(target, ast.Name):
            name = target.id
            g = self.lookup_global(name)
            if g is not None and name in self.declared_global:
                return
            if g is not None or (name in self.ns and name not in self.locals):
                if g is not None or isinstance(self.ns.get(name), Map):
                    _unknown()
            if v.kind in ("int", "lit"):
                if name in self.locals and self.locals[name].kind != "int":
                    _unknown()
                ty = self.locals[name].ty if name in self.locals else (v.ty if v.kind == "int" else literal_type(v.val))
                self.local_int(name, ty)
                self.nonnull.discard(name)
                return
            if v.kind in ("mem", "none"):
                self.bind_ref(name, v)
                return
            _unknown()
        if isinstance(target, ast.Attribute):
            self.expr_record(target, self.field(self.expr(target.value), target.attr))
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value)
            if base.kind != "map":
                self.expr_record(target, self.subscript(base, target))
            else:
                self.key(base.val, target.slice)
                self.expr_record(target, T("mem", base.val.value))
            return
        _unknown()

    def bind_ref(self, name, v: T):
        var = self.locals.get(name)
        if var is not None and var.kind == "int":
            _unknown()
        if v.kind == "none":
            if var is None:
                _unknown()
            self.nonnull.discard(name)
            var.nullable = True
            return
        if var is None:
            var = self.locals[name] = LocalVar(name, "ref", v.ty)
        elif var.ty is not v.ty:
            _unknown()
        var.nullable = var.nullable or v.nullable
        if v.nullable:
            self.nonnull.discard(name)
        else:
            self.nonnull.add(name)

    def s_AugAssign(self, s):
        tgt = s.target
        if isinstance(tgt, ast.Subscript):
            base = self.expr(tgt.value)
            if base.kind == "map":
                self.key(base.val, tgt.slice)
                t = self.expr_record(tgt, T("mem", base.val.value)).ty
            else:
                t = self.expr_record(tgt, self.subscript(base, tgt)).ty
        elif isinstance(tgt, ast.Attribute):
            t = self.expr_record(tgt, self.field(self.expr(tgt.value), tgt.attr)).ty
        elif isinstance(tgt, ast.Name):
            g = self.lookup_global(tgt.id)
            if g is not None:
                t = g.type
            elif tgt.id in self.locals and self.locals[tgt.id].kind == "int":
                t = self.locals[tgt.id].ty
            else:
                _unknown()
        else:
            _unknown()
        if not is_int(t):
            _unknown()
        self.int_value(s.value, t)

    def s_Delete(self, s):
        for t in s.targets:
            if not isinstance(t, ast.Subscript):
                _unknown()
            base = self.expr(t.value)
            if base.kind != "map":
                _unknown()
            self.key(base.val, t.slice)

    # ---- expressions --------------------------------------------------------------------
    def expr_record(self, node, t: T) -> T:
        self.tf.exprs[node] = t
        return t

    def expr(self, node, want=None) -> T:
        meth = getattr(self, "e_" + type(node).__name__, None)
        if meth is None:
            _unknown()
        return self.expr_record(node, meth(node, want))

    def rvalue(self, v: T) -> T:
        if v.kind == "mem" and is_int(v.ty):
            if v.nullable:
                _unknown()
            return T("int", v.ty)
        return v

    def int_value(self, node, want=None) -> T:
        v = self.rvalue(self.expr(node, want))
        if v.kind not in ("int", "lit"):
            _unknown()
        return v

    def truth(self, node):
        self.expr(node)

    def annotation(self, node):
        try:
            v = self.expr(node)
        except _Unknown:
            return None
        if v.kind == "py" and isinstance(v.val, type) and hasattr(v.val, "_size"):
            return v.val
        if v.kind == "py" and v.val is int:
            return i64
        if v.kind == "py" and v.val is bool:
            return bool_
        return None

    def e_Constant(self, node, want):
        v = node.value
        if v is None:
            return T("none")
        if isinstance(v, bool):
            return T("int", bool_)
        if isinstance(v, int):
            return T("lit", val=v)
        if isinstance(v, bytes):
            return T("bytes", val=v)
        if isinstance(v, str):
            return T("str", val=v)
        _unknown()

    def e_Name(self, node, want):
        return self.name_type(node)

    def name_type(self, node) -> T:
        name = node.id
        if name in self.poisoned and name not in self.locals:
            _unknown()
        if name in self.locals:
            var = self.locals[name]
            if var.kind == "int":
                return T("int", var.ty)
            return T("mem", var.ty, nullable=name not in self.nonnull)
        if name == self.tf.ctx_name:
            return T("ctx")
        if name not in self.declared_global and any(
                isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store) for n in ast.walk(self.tf.node)):
            _unknown()
        g = self.lookup_global(name)
        if g is not None:
            return T("mem", g.type)
        obj = self.ns[name] if name in self.ns else getattr(builtins, name, _MISSING)
        if obj is _MISSING:
            _unknown()
        return self.from_py(obj)

    @staticmethod
    def from_py(obj) -> T:
        if isinstance(obj, bool):
            return T("int", bool_)
        if isinstance(obj, int):
            return T("lit", val=int(obj) if isinstance(obj, IntType) else obj)
        if isinstance(obj, Map):
            return T("map", val=obj)
        if isinstance(obj, bytes):
            return T("bytes", val=obj)
        if isinstance(obj, str):
            return T("str", val=obj)
        if obj is None:
            return T("none")
        if isinstance(obj, (type, _Bpf, pytypes.FunctionType, pytypes.ModuleType)):
            return T("py", val=obj)
        if isinstance(obj, pytypes.BuiltinFunctionType) or obj in (range, int, bool):
            if getattr(obj, "__name__", "") in BUILTIN_OK and getattr(builtins, obj.__name__, None) is obj:
                return T("py", val=obj)
        _unknown()

    def e_Attribute(self, node, want):
        base = self.expr(node.value)
        a = node.attr
        if base.kind == "py":
            obj = base.val
            if isinstance(obj, _Bpf):
                return T("method", val=("bpf", a))
            if isinstance(obj, pytypes.ModuleType) and hasattr(obj, a):
                g = self.mt.module_global(obj, a)
                if g is not None:
                    return T("mem", g.type)
                return self.from_py(getattr(obj, a))
            _unknown()
        if base.kind == "map":
            return T("method", val=("map", a), ty=base.val)
        if base.kind == "ctx":
            tf = self.tf
            if a == "packet" and tf.packet is not None:
                return T("method", val=("ctx", "packet"))
            if a == "args" and tf.kind in ("raw_tracepoint", "fentry", "fexit"):
                return T("mem", Array[u64, 12])
            if a in tf.ctx_fields:
                return T("mem", tf.ctx_fields[a][1])
            _unknown()
        return self.field(base, a)

    def field(self, base: T, name: str) -> T:
        if base.kind != "mem" or not _sub(base.ty, Struct) or base.nullable:
            _unknown()
        for fname, ft, _ in base.ty._fields_:
            if fname == name:
                return T("mem", ft)
        _unknown()

    def e_Subscript(self, node, want):
        base = self.expr(node.value)
        if base.kind == "map":
            m = base.val
            if m.kind not in ("hash", "array") or not is_int(m.value):
                _unknown()
            self.key(m, node.slice)
            return T("int", m.value)
        if base.kind == "py" and isinstance(base.val, type) and base.val in (Array, Str):
            try:
                params = ast.literal_eval(node.slice) if base.val is Str else None
            except ValueError:
                params = None
            if base.val is Str and isinstance(params, int):
                return T("py", val=Str[params])
            if base.val is Array and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
                et = self.annotation(node.slice.elts[0])
                n = self.expr(node.slice.elts[1])
                if et is not None and n.kind == "lit":
                    return T("py", val=Array[et, n.val])
            _unknown()
        return self.rvalue(self.subscript(base, node))

    def subscript(self, base: T, node) -> T:
        if base.kind != "mem" or base.nullable or not (_sub(base.ty, Array) or _sub(base.ty, Str)):
            _unknown()
        self.int_value(node.slice)
        return T("mem", base.ty._elem if _sub(base.ty, Array) else u8)

    def key(self, m: Map, node):
        t = m.key
        if t is None:
            _unknown()
        self.expr(node, t if is_int(t) else None)

    def e_UnaryOp(self, node, want):
        if isinstance(node.op, ast.Not):
            self.truth(node.operand)
            return T("int", bool_)
        v = self.int_value(node.operand, want)
        if v.kind == "lit":
            return T("lit", val={ast.USub: lambda x: -x, ast.UAdd: lambda x: x,
                                 ast.Invert: lambda x: ~x}[type(node.op)](v.val))
        return T("int", v.ty if v.ty is not bool_ else i64)

    def e_BinOp(self, node, want):
        if isinstance(node.op, (ast.Div, ast.MatMult)):
            _unknown()
        a = self.int_value(node.left, want)
        b = self.int_value(node.right, want if a.kind == "lit" else a.ty)
        return self.binop(node.op, a, b)

    def binop(self, op, a: T, b: T) -> T:
        if a.kind == "lit" and b.kind == "lit":
            try:
                return T("lit", val=_PYOPS[type(op)](a.val, b.val))
            except (ZeroDivisionError, ValueError, OverflowError, KeyError):
                _unknown()
        if isinstance(op, ast.Pow):
            if b.kind == "lit" and 0 <= b.val <= 64:
                t = a.ty if a.kind == "int" else literal_type(a.val)
                acc = T("lit", val=1)
                for _ in range(b.val):
                    acc = self.binop(ast.Mult(), acc, a)
                return acc if acc.kind == "int" else T("int", t)
            _unknown()
        if isinstance(op, (ast.LShift, ast.RShift)):
            return T("int", binop_type("shift", a.ty if a.kind == "int" else a.val, None))
        kind = "bitwise" if isinstance(op, (ast.BitAnd, ast.BitOr, ast.BitXor)) else \
            "div" if isinstance(op, (ast.FloorDiv, ast.Mod)) else "arith"
        return T("int", binop_type(kind, a.ty if a.kind == "int" else a.val, b.ty if b.kind == "int" else b.val))

    def e_BoolOp(self, node, want):
        saved = set(self.nonnull)
        for i, v in enumerate(node.values):
            self.truth(v)
            if i < len(node.values) - 1:
                self.nonnull |= self.null_facts(v)[0 if isinstance(node.op, ast.And) else 1]
        self.nonnull = saved
        return T("int", bool_)

    def e_IfExp(self, node, want):
        t_nn, f_nn = self.null_facts(node.test)
        self.truth(node.test)
        saved = set(self.nonnull)
        self.nonnull = saved | t_nn
        a = self.rvalue(self.expr(node.body, want))
        self.nonnull = saved | f_nn
        b = self.rvalue(self.expr(node.orelse, want))
        self.nonnull = saved
        if a.kind in ("int", "lit") and b.kind in ("int", "lit"):
            if a.kind == b.kind == "lit":
                t = want if want is not None and is_int(want) else literal_type(max(abs(a.val), abs(b.val)))
            else:
                t = a.ty if b.kind == "lit" else b.ty if a.kind == "lit" else common(a.ty, b.ty)
            return T("int", t)
        if (a.kind == "mem" and b.kind in ("mem", "none")) or (a.kind == "none" and b.kind == "mem"):
            if a.kind == b.kind == "mem" and a.ty is not b.ty:
                _unknown()
            return T("mem", a.ty if a.kind == "mem" else b.ty, nullable=True)
        _unknown()

    def e_Compare(self, node, want):
        if len(node.ops) > 1:
            for c in [node.left] + node.comparators:
                self.rvalue(self.expr(c))
            return T("int", bool_)
        a = self.expr(node.left)
        self.expr(node.comparators[0], a.ty if a.kind == "int" else None)
        return T("int", bool_)

    # ---- calls --------------------------------------------------------------------------
    def e_Call(self, node, want):
        fv = self.expr(node.func)
        if fv.kind == "method":
            owner, name = fv.val
            if owner == "bpf":
                return self.bpf_call(name, node)
            if owner == "map":
                return self.map_method(fv.ty, name, node)
            return self.packet(node)
        if fv.kind != "py":
            _unknown()
        obj = fv.val
        if isinstance(obj, type) and is_int(obj) and len(node.args) == 1 and not node.keywords:
            self.int_value(node.args[0], obj)
            return T("int", obj)
        if (obj is int or obj is bool) and len(node.args) == 1 and not node.keywords:
            if obj is bool:
                self.truth(node.args[0])
                return T("int", bool_)
            return self.int_value(node.args[0], want)
        if isinstance(obj, type) and _sub(obj, Struct) and not node.args:
            for kw in node.keywords:
                if kw.arg is None:
                    _unknown()
                ft = next((f[1] for f in obj._fields_ if f[0] == kw.arg), None)
                if ft is None:
                    _unknown()
                self.expr(kw.value, ft if is_int(ft) else None)
            return T("mem", obj)
        if obj in (min, max) and len(node.args) >= 2 and not node.keywords:
            return self.minmax(obj is min, node, want)
        if obj is abs and len(node.args) == 1 and not node.keywords:
            v = self.int_value(node.args[0], want)
            return T("lit", val=abs(v.val)) if v.kind == "lit" else v
        if obj is len and len(node.args) == 1:
            v = self.expr(node.args[0])
            if v.kind == "mem" and (_sub(v.ty, Array) or _sub(v.ty, Str)):
                return T("lit", val=v.ty._len)
            if v.kind == "bytes":
                return T("lit", val=len(v.val))
            _unknown()
        if obj is ord and len(node.args) == 1 and not node.keywords:
            c = self.expr(node.args[0])
            if c.kind in ("str", "bytes") and len(c.val) == 1:
                return T("lit", val=ord(c.val))
            _unknown()
        if obj is print:
            for a in node.args:
                parts = [v.value for v in a.values if isinstance(v, ast.FormattedValue)] \
                    if isinstance(a, ast.JoinedStr) else [a]
                for p in parts:
                    self.rvalue(self.expr(p))
            self.tf.callees.append(("helper", "trace_printk"))
            return T("int", i64)
        if isinstance(obj, pytypes.FunctionType) and getattr(obj, "__pybpfc_prog__", None) is None:
            sub = self.mt.subprogram(obj)
            if sub is None or node.keywords or len(node.args) != len(sub.params):
                _unknown()
            self.tf.callees.append(("function", sub.name))
            for a, (_, pt) in zip(node.args, sub.params):
                if is_int(pt):
                    self.int_value(a, pt)
                else:
                    self.expr(a)
            return T("void") if sub.ret is None else T("int", sub.ret)
        _unknown()

    def minmax(self, is_min, node, want) -> T:
        acc = self.int_value(node.args[0], want)
        for a in node.args[1:]:
            b = self.int_value(a, want if acc.kind == "lit" else acc.ty)
            if acc.kind == "lit" and b.kind == "lit":
                acc = T("lit", val=min(acc.val, b.val) if is_min else max(acc.val, b.val))
                continue
            if acc.kind == b.kind == "int" and compare_type(acc.ty, b.ty) is None:
                w = max(bits(acc.ty), bits(b.ty))
                t = {8: i16, 16: i32, 32: i64}.get(w, i64 if is_min else u64)
            else:
                t = binop_type("arith", acc.ty if acc.kind == "int" else acc.val, b.ty if b.kind == "int" else b.val)
            acc = T("int", t)
        return acc

    def bpf_call(self, name, node) -> T:
        if node.keywords:
            _unknown()
        short = {"pid": u32, "tgid": u32, "tid": u32, "uid": u32, "gid": u32, "ktime_ns": u64, "cpu": u32}
        if name in short:
            if node.args:
                _unknown()
            self.tf.callees.append(("bpf", name))
            return T("int", short[name])
        if name in ("comm", "get_current_comm") and not node.args:
            self.tf.callees.append(("bpf", name))
            return T("mem", Str[16])
        if name in ("load_byte", "load_half", "load_word"):
            if len(node.args) != 2:
                _unknown()
            self.expr(node.args[0])
            self.int_value(node.args[1], u64)
            self.tf.callees.append(("bpf", name))
            return T("int", {"byte": u8, "half": u16, "word": u32}[name.split("_")[1]])
        h = H.helpers().get(name)
        if h is None:
            _unknown()
        args, pi = list(node.args), 0
        for a in args:
            if pi >= len(h.params):
                _unknown()
            p = h.params[pi]
            if isinstance(a, ast.Name) and a.id in self.locals and self.locals[a.id].kind == "int" \
                    and p.is_pointer and H.size_param_after(h, pi) and len(args) < len(h.params):
                pi += 2   # an integer variable as the output buffer (and its size)
                continue
            v = self.expr(a)
            buffer = v.kind == "mem" and is_int(v.ty) and p.is_pointer and H.size_param_after(h, pi)
            if v.kind == "mem" and not is_int(v.ty) or v.kind in ("map", "ctx") or buffer:
                pi += 1
                if v.kind == "mem" and H.size_param_after(h, pi - 1) and len(args) < len(h.params):
                    pi += 1
                continue
            if v.kind not in ("bytes", "none"):
                self.int_value(a, u64)
            pi += 1
        if pi != len(h.params):
            _unknown()
        self.tf.callees.append(("helper", name))
        if h.returns_pointer:
            return T("int", u64)
        rt = {"u64": u64, "u32": u32, "int": i32, "long": i64, "__u64": u64, "s64": i64, "u16": u16,
              "void": None}.get(h.ret, i64)
        return T("void") if rt is None else T("int", rt)

    def packet(self, node) -> T:
        if node.keywords or len(node.args) != 2:
            _unknown()
        tv = self.expr(node.args[0])
        if tv.kind != "py" or not isinstance(tv.val, type) or not hasattr(tv.val, "_size"):
            _unknown()
        self.int_value(node.args[1], u64)
        return T("mem", tv.val, nullable=True)

    def event(self, m: Map, t):
        prev = self.mt.tm.events.get(id(m)) or m.event
        if prev is not None and prev is not t:
            _unknown()
        self.mt.tm.events[id(m)] = t

    def map_method(self, m: Map, name: str, node) -> T:
        kind, args = m.kind, node.args
        kw = {k.arg: k.value for k in node.keywords}
        for v in kw.values():
            self.int_value(v, u64)
        self.tf.callees.append(("map", name))
        if kind in ("hash", "array"):
            if name == "lookup" and len(args) == 1:
                self.key(m, args[0])
                return T("mem", m.value, nullable=True)
            if name == "get" and len(args) in (1, 2):
                self.key(m, args[0])
                if len(args) == 2:
                    self.int_value(args[1], m.value)
                    return T("int", m.value)
                return T("mem", m.value, nullable=True)
            if name == "update" and len(args) in (2, 3):
                self.key(m, args[0])
                self.expr(args[1], m.value if is_int(m.value) else None)
                if len(args) == 3:
                    self.int_value(args[2], u64)
                return T("int", i64)
            if name == "delete" and len(args) == 1:
                self.key(m, args[0])
                return T("int", i64)
            if name == "record" and m.tags.get("histogram") and len(args) == 1:
                self.int_value(args[0], u64)
                return T("void")
        if kind == "ringbuf":
            if name == "reserve" and len(args) == 1:
                tv = self.expr(args[0])
                if tv.kind != "py" or not isinstance(tv.val, type) or not hasattr(tv.val, "_size"):
                    _unknown()
                self.event(m, tv.val)
                return T("mem", tv.val, nullable=True)
            if name in ("submit", "discard") and len(args) in (1, 2):
                self.expr(args[0])
                if len(args) == 2:
                    self.int_value(args[1], u64)
                if isinstance(args[0], ast.Name):
                    self.nonnull.discard(args[0].id)
                return T("void")
            if name == "output" and len(args) in (1, 2):
                e = self.expr(args[0])
                if e.kind != "mem":
                    _unknown()
                if len(args) == 2:
                    self.int_value(args[1], u64)
                self.event(m, e.ty)
                return T("int", i64)
        if kind == "perf" and name == "output" and len(args) in (1, 2):
            if len(args) == 2:
                self.expr(args[0])
            e = self.expr(args[-1])
            if e.kind != "mem":
                _unknown()
            self.event(m, e.ty)
            return T("int", i64)
        if kind == "progarray" and name == "tail_call" and len(args) == 2:
            self.expr(args[0])
            self.int_value(args[1], u32)
            return T("int", i64)
        if kind == "stack_trace" and name == "get_stackid" and len(args) in (1, 2):
            self.expr(args[0])
            if len(args) == 2:
                self.int_value(args[1], u64)
            return T("int", i64)
        if kind in ("queue", "bloom") and name == "push" and len(args) in (1, 2):
            self.expr(args[0], m.value)
            if len(args) == 2:
                self.int_value(args[1], u64)
            return T("int", i64)
        if kind == "queue" and name in ("pop", "peek") and not args:
            return T("mem", m.value, nullable=True)
        if kind == "bloom" and name == "contains" and len(args) == 1:
            self.expr(args[0], m.value)
            return T("int", bool_)
        _unknown()


_PYOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b, ast.Pow: lambda a, b: a ** b,
          ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b, ast.BitAnd: lambda a, b: a & b,
          ast.BitOr: lambda a, b: a | b, ast.BitXor: lambda a, b: a ^ b}

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

from .. import uapi as U
from ..lang.bpf import _Bpf
from ..lang.maps import Map
from ..lang.types import Array, IntType, Str, Struct, bool_, i16, i32, i64, u8, u16, u32, u64
from . import helpers as H
from . import tracepoint as TP
from .module import collect_globals, function_ast
from .typing import binop_type, bits, common, compare_type, fits, is_int, literal_type

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
OP_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
              ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
              ast.Div: "/", ast.MatMult: "@"}
_PYOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b, ast.Pow: lambda a, b: a ** b,
          ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b, ast.BitAnd: lambda a, b: a & b,
          ast.BitOr: lambda a, b: a | b, ast.BitXor: lambda a, b: a ^ b}
_PYCMP = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
          ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}
EXPR_NAMES = {"List": "a list", "Dict": "a dict", "Set": "a set", "ListComp": "a list comprehension",
              "DictComp": "a dict comprehension", "SetComp": "a set comprehension",
              "GeneratorExp": "a generator expression", "Lambda": "lambda", "Await": "await",
              "Yield": "yield", "YieldFrom": "yield from", "Starred": "*unpacking", "JoinedStr": "an f-string",
              "Tuple": "a tuple", "NamedExpr": "':=' (assignment expression)", "Slice": "slicing"}
EXPR_HINTS = {"List": "use Array[T, N] in a Struct or a map", "Dict": "use a HashMap declared at module level",
              "Lambda": "define a function at module level", "JoinedStr": "f-strings work only inside print()",
              "Tuple": "tuples are only allowed in tuple assignment (a, b = x, y)",
              "ListComp": "use a for loop over range(...)"}
STMT_NAMES = {"FunctionDef": "nested function definitions", "AsyncFunctionDef": "async functions",
              "ClassDef": "class definitions inside functions", "Import": "imports inside functions",
              "ImportFrom": "imports inside functions", "Try": "try/except statements", "TryStar": "try/except*",
              "Raise": "raise statements", "With": "with statements", "Match": "match statements",
              "AsyncFor": "async for loops", "AsyncWith": "async with statements"}
STMT_HINTS = {"Try": "BPF has no exceptions; check values with if", "Raise": "return an error code instead",
              "With": "with is not available in BPF programs", "FunctionDef": "define functions at module level",
              "ClassDef": "define Structs at module level", "Import": "import at module level",
              "ImportFrom": "import at module level", "Delete": None}
MAP_METHODS = {"hash": "hash/array maps: get, lookup, update, delete, m[k], m[k] = v, m[k] += n, del m[k]",
               "array": "array maps: get, lookup, update, m[k], m[k] = v, m[k] += n",
               "ringbuf": "RingBuf: reserve, submit, discard, output",
               "perf": "PerfEventArray: output", "progarray": "ProgArray: tail_call",
               "stack_trace": "StackTraceMap: get_stackid", "queue": "Queue/Stack: push, pop, peek",
               "bloom": "BloomFilter: push, contains"}




def tname(t) -> str:
    return getattr(t, "__name__", str(t))


def describe(v) -> str:
    if v.kind == "py":
        o = v.val
        if isinstance(o, _Bpf):
            return "the bpf namespace"
        if isinstance(o, type):
            return f"the type {tname(o)}"
        if isinstance(o, pytypes.ModuleType):
            return f"module '{o.__name__}'"
        return f"function '{getattr(o, '__name__', o)}'"
    if v.kind == "method" and isinstance(v.val, tuple):
        return f"method '{v.val[1]}'"
    return {"int": f"{tname(v.ty)} value", "lit": "integer literal", "mem": f"{tname(v.ty)}",
            "none": "None", "map": "map", "ctx": "program context", "bytes": "bytes literal",
            "str": "string", "void": "nothing (None)", "method": "method"}.get(v.kind, "Python object")


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
    var: str = field(default="", compare=False)        # the local it was read from (for messages)
    shared: bool = field(default=False, compare=False)  # memory other CPUs may write (maps, globals)
    const: Any = field(default=None, compare=False)     # a bool known at compile time

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
    shared: bool = False

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
    # types decided inside one node, keyed (node, what[, i]): "cmp" i -> operand type of the
    # i-th comparison (None: signed with unsigned, compared by value); "minmax" i -> (type, by
    # value) of the i-th step; "pow" i -> type of the i-th multiplication of `**` (and "pow" -> its
    # result); "aug" -> the operation's type in `x op= y`; "for" -> the loop variable's type
    steps: dict = field(default_factory=dict)

    def type_of(self, node) -> T | None:
        return self.exprs.get(node)


@dataclass
class TypedModule:
    path: str
    functions: list = field(default_factory=list)   # programs, then called functions as discovered
    by_node: dict = field(default_factory=dict)     # FunctionDef node -> TypedFunction
    by_fn: dict = field(default_factory=dict)       # called Python function -> TypedFunction
    events: dict = field(default_factory=dict)      # id(map) -> event type
    # maps, Const/Global variables and called functions in the order lowering meets them (it
    # names their symbols in that order): ("map", map, name) | ("global", GlobalVar) | ("function", fn)
    symbols: list = field(default_factory=list)

    def function(self, node) -> TypedFunction | None:
        return self.by_node.get(node)

    def symbol_names(self, info) -> tuple[dict, dict, dict]:
        """The object's symbols, named as lowering names them: (FunctionDef node -> name,
        id(map) -> (name, map), (module, name) of each global used -> name). A name taken by a
        program, map, function or global gets '_' appended."""
        funcs, maps, globs = {}, {}, {}
        taken: set = set()

        def fresh(n):
            while n in taken:
                n += "_"
            taken.add(n)
            return n

        def add_map(m, name):
            if id(m) not in maps:
                maps[id(m)] = (fresh(name), m)
        for name, m in info.maps.items():     # named before the programs (lowering's order)
            add_map(m, name)
        for p in info.programs:
            taken.add(p.name)
            funcs[p.node] = p.name
        for sym in self.symbols:
            if sym[0] == "map":
                add_map(sym[1], sym[2])
            elif sym[0] == "global":
                key = (sym[1].module, sym[1].name)
                if key not in globs:
                    globs[key] = fresh(sym[1].name)
            else:
                tf = self.by_fn.get(sym[1])     # None: its source was not found (an error)
                if tf is not None and tf.node not in funcs:
                    funcs[tf.node] = fresh(sym[1].__name__)
        return funcs, maps, globs

    def describe(self, info) -> str:
        """Each function with its locals' types, then the maps and globals used
        (`pybpfc dump --types`)."""
        funcs, maps, globs = self.symbol_names(info)
        out = []
        for f in self.functions:
            if f.node in funcs:
                out += self.describe_function(f, funcs[f.node])
        for name, m in maps.values():
            ev = self.events.get(id(m)) or m.event
            parts = []
            if m.key is not None or m.value is not None:
                parts.append(f"{tname(m.key)} -> {tname(m.value)}")
            if ev is not None:
                parts.append(f"event {tname(ev)}")
            parts.append(f"max_entries={m.max_entries}")
            out.append(f"map {name}: {type(m).__name__}({', '.join(parts)})")
        gvars = dict(info.globals)
        for sym in self.symbols:
            if sym[0] == "global":
                gvars.setdefault((sym[1].module, sym[1].name), sym[1])
        for key, g in sorted(gvars.items(), key=lambda kv: kv[0][1]):
            if key in globs:
                out.append(f"{'const' if g.kind == 'const' else 'global'} {g.name}: {tname(g.type)} = {g.init!r}")
        return "\n".join(out) + "\n"

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


def type_module(info, tracepoint_formats: str | None = None, diags=None) -> TypedModule:
    """The typed program. Errors found go to diags (a frontend.module.Diagnostics), if given."""
    return _ModuleTyper(info, tracepoint_formats, diags).run()


def describe_types(path: str, tracepoint_formats: str | None = None) -> str:
    """`pybpfc dump --types`: the typed program as text, without lowering it. Raises CompileError."""
    from .module import Diagnostics, load_module

    diags = Diagnostics()
    info = load_module(path, diags)
    diags.raise_if_any()
    tm = type_module(info, tracepoint_formats, diags)
    diags.raise_if_any()
    return tm.describe(info)


class _ModuleTyper:
    def __init__(self, info, tp_dir, diags):
        self.info, self.tp_dir, self.diags = info, tp_dir, diags
        self.tm = TypedModule(info.path)
        self.globals = dict(info.globals)
        self.queue: list = []
        self.calls: dict = {}      # FunctionDef node -> nodes of the functions it calls
        self.bad: set = set()      # functions whose signature is wrong
        self.checked_globals: set = set()
        self.stored: dict = {}
        self.declared: dict = {}
        self.sources: dict = {}    # function -> (FunctionDef node, file)

    def error(self, file, node, msg, hint=None):
        if self.diags is not None:
            self.diags.at(file, node, msg, hint)

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
        decl, node, kind, file = p.decl, p.node, p.decl.kind, p.file
        tf = TypedFunction(p.name, p.fn, node, file, kind, decl.section, ret=i32)
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
                self.error(file, node.decorator_list[0] if node.decorator_list else node, str(e),
                           hint="check the name under /sys/kernel/tracing/events, "
                                "or compile with tracepoint_formats=<dir of saved formats>")
        elif kind == "perf_event":   # struct bpf_perf_event_data: the registers, then these
            tf.ctx_fields = {k: (v, u64, False) for k, v in {**PT_REGS, **PERF_EVENT}.items()}
        elif kind in ("uprobe", "uretprobe", "kprobe", "kretprobe"):
            tf.ctx_fields = {k: (v, u64, False) for k, v in PT_REGS.items()}
        a = node.args
        params = list(a.args)
        if a.vararg or a.kwarg or a.kwonlyargs or a.defaults:
            self.error(file, node, "BPF programs take only plain parameters")
        if params and params[0].annotation is None:
            tf.ctx_name = params[0].arg
            params = params[1:]
        ft = _FunctionTyper(self, tf)
        typed = []
        for q in params:
            if q.annotation is None:
                self.error(file, q, f"parameter '{q.arg}' needs a type annotation",
                           hint="only the first parameter (the context) may be unannotated")
                continue
            t = ft.annotation(q.annotation)
            if t is None:
                continue
            if not is_int(t):
                self.error(file, q.annotation, f"parameter '{q.arg}': probe arguments are integers "
                                               f"(pointers are u64 addresses)")
                continue
            typed.append((q, t))
        if typed and kind not in PROBE_KINDS:
            self.error(file, typed[0][0], f"{kind} programs take only the context parameter")
            typed = []
        if kind in ("uretprobe", "kretprobe") and len(typed) > 1:
            self.error(file, typed[1][0], f"a {kind} has one parameter: the return value")
        if kind in ("uprobe", "kprobe") and len(typed) > 6:
            self.error(file, typed[6][0], "at most 6 arguments are passed in registers")
        if isinstance(node.returns, ast.Constant) and node.returns.value is None:
            self.error(file, node.returns, "BPF programs return an int", hint="annotate `-> int`")
        elif node.returns is not None:
            rt = ft.annotation(node.returns)
            if rt is not None and not is_int(rt):
                self.error(file, node.returns, "BPF programs return an int")
        tf.params = [(q.arg, t) for q, t in typed]
        for name, t in tf.params:
            tf.locals[name] = LocalVar(name, "int", t)
        self.add(tf)
        self.body(tf)

    def add(self, tf: TypedFunction):
        self.tm.functions.append(tf)
        self.tm.by_node[tf.node] = tf

    def subprogram(self, fn, caller: "_FunctionTyper", node) -> TypedFunction:
        """The callee's typed signature (its body is typed later, in discovery order)."""
        self.tm.symbols.append(("function", fn))
        if fn not in self.sources:
            self.sources[fn] = function_ast(fn, None)
        fnode, ffile = self.sources[fn]
        if fnode is None:
            caller.err(node, f"cannot find the source of '{fn.__name__}'")
        tf = self.tm.by_node.get(fnode)
        if tf is None:
            tf = TypedFunction(fn.__name__, fn, fnode, ffile, "subprogram", ".text")
            ft = _FunctionTyper(self, tf)
            a = fnode.args
            if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
                self.error(ffile, fnode, f"'{fn.__name__}': only plain positional parameters are supported")
            for p in a.args:
                if p.annotation is None:
                    self.error(ffile, p, f"parameter '{p.arg}' needs a type annotation", hint=f"e.g. `{p.arg}: u64`")
                    t = None
                else:
                    t = ft.annotation(p.annotation)
                if t is None:
                    self.bad.add(fnode)
                tf.params.append((p.arg, t))
            if fnode.returns is None:
                has_value = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fnode))
                tf.ret = i64 if has_value else None
            elif isinstance(fnode.returns, ast.Constant) and fnode.returns.value is None:
                tf.ret = None
            else:
                tf.ret = ft.annotation(fnode.returns)
                if tf.ret is not None and not is_int(tf.ret):
                    self.error(ffile, fnode.returns, "BPF functions return integers (or nothing)")
                    tf.ret = None
            if len(tf.params) > 5:
                self.error(ffile, fnode, f"'{fn.__name__}' has {len(tf.params)} parameters; BPF allows 5")
            for name, t in tf.params:
                if t is not None:
                    tf.locals[name] = LocalVar(name, "int", t) if is_int(t) else LocalVar(name, "ref", t)
            self.add(tf)
            self.tm.by_fn[fn] = tf
            if fnode not in self.bad:
                self.queue.append(tf)
        if fnode in self.bad:
            raise _Unknown()
        cur = caller.tf.node
        self.calls.setdefault(cur, set()).add(fnode)
        if self._reaches(fnode, cur):
            caller.err(node, f"recursive call to '{fn.__name__}': BPF programs cannot recurse",
                       hint="rewrite it as a bounded loop")
        return tf

    def globals_declared(self, fnode) -> set:
        names = self.declared.get(fnode)
        if names is None:
            names = self.declared[fnode] = {n for s in ast.walk(fnode) if isinstance(s, ast.Global) for n in s.names}
        return names

    def stored_names(self, fnode) -> set:
        """Names the function assigns somewhere (a use before the first assignment is an error)."""
        names = self.stored.get(fnode)
        if names is None:
            names = self.stored[fnode] = {n.id for n in ast.walk(fnode)
                                          if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        return names

    def _reaches(self, a, b) -> bool:
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x in seen:
                continue
            seen.add(x)
            todo.extend(self.calls.get(x, ()))
        return False

    def body(self, tf: TypedFunction):
        ft = _FunctionTyper(self, tf)
        for name, t in tf.params:
            if t is not None and not is_int(t):
                ft.nonnull.add(name)
        ft.stmts(tf.node.body)


class _FunctionTyper:
    """Mirrors codegen's walk (statement order, None-ness facts), producing types and reporting
    the errors it recognises (with codegen's messages and locations)."""

    def __init__(self, mt: _ModuleTyper, tf: TypedFunction):
        self.mt, self.tf = mt, tf
        self.ns = tf.fn.__globals__
        self.locals: dict = tf.locals
        self.nonnull: set = set()
        self.poisoned: set = set()
        self.loops = 0
        self.term = False      # the statement just typed always jumps away (return/break/continue)
        self.declared_global = mt.globals_declared(tf.node)

    # ---- diagnostics --------------------------------------------------------------------
    def err(self, node, msg: str, hint: str | None = None):
        if self.mt.diags is not None:
            self.mt.diags.at(self.tf.file, node, msg, hint)
        raise _Unknown()

    def soft_err(self, node, msg: str, hint: str | None = None):
        if self.mt.diags is not None:
            self.mt.diags.at(self.tf.file, node, msg, hint)

    def need_checked(self, v: T, node):
        if v.nullable:
            what = f"'{v.var}'" if v.var else "this value"
            self.err(node, f"{what} may be None here", hint=f"check it first: `if {v.var or 'x'} is None: return 0`")

    def fit(self, v: T, t, node):
        """A literal converted to t must fit (codegen's as_int)."""
        if v.kind == "lit" and not fits(v.val, t):
            self.err(node, f"literal {v.val} does not fit in {tname(t)}",
                     hint=f"{tname(t)} holds {t._min()}..{t._max()}" if t is not bool_ else None)
        if v.kind == "mem":
            if is_int(v.ty) and not v.nullable:
                return
            self.need_checked(v, node)
            self.err(node, f"expected an integer, got {describe(v)}")
        if v.kind not in ("lit", "int", "mem"):
            self.err(node, f"expected an integer, got {describe(v)}")

    # ---- statements ---------------------------------------------------------------------
    def stmts(self, body):
        for s in body:
            self.term = False
            try:
                meth = getattr(self, "s_" + type(s).__name__, None)
                if meth is None:
                    self.err(s, STMT_NAMES.get(type(s).__name__, f"{type(s).__name__.lower()} statements") +
                             " are not supported in BPF programs", hint=STMT_HINTS.get(type(s).__name__))
                meth(s)
            except _Unknown:
                for n in ast.walk(s):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in self.locals:
                        self.poisoned.add(n.id)

    def s_Pass(self, s):
        pass

    def s_Global(self, s):
        for n in s.names:
            if self.lookup_global(n) is None:
                self.err(s, f"'{n}' is not a Global[...] variable",
                         hint=f"declare it at module level: `{n}: Global[u64] = 0`")

    def s_Nonlocal(self, s):
        self.err(s, "nonlocal is not supported (no closures in BPF programs)")

    def s_Break(self, s):
        if not self.loops:
            self.err(s, "'break' outside a loop")
        self.term = True

    def s_Continue(self, s):
        if not self.loops:
            self.err(s, "'continue' outside a loop")
        self.term = True

    def s_Expr(self, s):
        if isinstance(s.value, ast.Constant) and (isinstance(s.value.value, str) or s.value.value is Ellipsis):
            return
        if isinstance(s.value, ast.Compare):
            self.err(s.value, "the result of this comparison is unused", hint="did you mean `=`?")
        if isinstance(s.value, (ast.Name, ast.Attribute, ast.BinOp, ast.Constant, ast.Subscript, ast.UnaryOp)):
            self.err(s.value, "this expression has no effect")
        self.expr(s.value)

    def s_Return(self, s):
        ret = self.tf.ret
        if ret is None:
            if s.value is not None and not (isinstance(s.value, ast.Constant) and s.value.value is None):
                self.err(s.value, "this function returns None (no return annotation); it cannot return a value",
                         hint="annotate the return type, e.g. `-> int`")
        elif s.value is None or (isinstance(s.value, ast.Constant) and s.value.value is None):
            if self.tf.kind == "subprogram":
                self.err(s, "missing return value", hint=f"this function returns {tname(ret)}")
        else:
            self.fit(self.int_value(s.value, ret), ret, s.value)
        self.term = True

    def s_Assert(self, s):
        v = self.const_eval(s.test)
        if v is None:
            self.err(s, "assert needs a condition known at compile time",
                     hint="use `if not cond: return 0` for run-time checks")
        if not v:
            msg = self.const_eval(s.msg) if s.msg is not None else None
            self.err(s, "assertion failed at compile time" + (f": {msg}" if msg else ""))

    def const_eval(self, node):
        """The compile-time value of node, or None (codegen folds the same constants)."""
        try:
            v = self.expr(node)
        except _Unknown:
            return None
        if v.kind == "lit":
            return v.val
        if v.kind == "int" and v.const is not None:
            return v.const
        if v.kind in ("bytes", "str"):
            return v.val
        return None

    def s_If(self, s):
        t_nn, f_nn = self.null_facts(s.test)
        self.truth(s.test)
        before = set(self.nonnull)
        self.nonnull = before | t_nn
        self.stmts(s.body)
        states = [] if self.term else [set(self.nonnull)]
        self.nonnull = before | f_nn
        self.term = False
        self.stmts(s.orelse)
        if not self.term:
            states.append(set(self.nonnull))
        # None-ness after the if: what both branches that fall through agree on
        self.nonnull = set.intersection(*states) if states else before
        self.term = not states

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
        if s.orelse:
            self.err(s, "while ... else is not supported")
        if isinstance(s.test, ast.Constant) and s.test.value and not any(
                isinstance(n, (ast.Break, ast.Return)) for b in s.body for n in ast.walk(b)):
            self.err(s, "this loop never ends (no break or return)",
                     hint="BPF programs must terminate; bound the loop, e.g. `for i in range(n):`")
        self.nonnull -= self.assigned_in(s.body)
        self.truth(s.test)
        saved = set(self.nonnull)
        self.loops += 1
        self.stmts(s.body)
        self.loops -= 1
        self.nonnull = saved
        self.term = False

    def s_For(self, s):
        if s.orelse:
            self.err(s, "for ... else is not supported")
        it = s.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and self.name_obj(it.func.id) is builtins.range):
            self.err(it, "for loops must iterate over range(...)",
                     hint="write `for i in range(n):` with a bound the verifier can see")
        if not isinstance(s.target, ast.Name):
            self.err(s.target, "the loop variable must be a plain name")
        if it.keywords or not 1 <= len(it.args) <= 3:
            self.err(it, "range() takes 1 to 3 positional arguments")
        args = [self.int_value(a) for a in it.args]
        start, stop = (T("lit", val=0), args[0]) if len(args) == 1 else (args[0], args[1])
        if len(args) == 3 and (args[2].kind != "lit" or args[2].val == 0):
            self.err(it.args[2], "range() step must be a non-zero constant")
        name = s.target.id
        known = [v.ty for v in (start, stop) if v.kind == "int"]
        ty = self.locals[name].ty if name in self.locals and self.locals[name].kind == "int" else None
        if ty is None:
            ty = known[0] if known else i64
            for k in known[1:]:
                ty = common(ty, k)
        self.tf.steps[(s, "for")] = ty
        self.local_int(name, ty)
        self.fit(stop, ty, it)
        self.fit(start, ty, it)
        self.nonnull -= self.assigned_in(s.body)
        saved = set(self.nonnull)
        self.loops += 1
        self.stmts(s.body)
        self.loops -= 1
        self.nonnull = saved
        self.term = False

    def local_int(self, name, ty):
        if name not in self.locals:
            self.locals[name] = LocalVar(name, "int", ty)

    def s_AnnAssign(self, s):
        if not isinstance(s.target, ast.Name):
            self.err(s.target, "annotated assignment needs a plain name")
        t = self.annotation_type(s.annotation)
        name = s.target.id
        if is_int(t):
            if name in self.locals and self.locals[name].ty is not t:
                self.err(s, f"'{name}' already has type {tname(self.locals[name].ty)}")
            self.local_int(name, t)
            if s.value is not None:
                self.fit(self.int_value(s.value, t), t, s.value)
            return
        if s.value is None:
            self.bind_ref(name, T("mem", t), s)
            return
        v = self.expr(s.value, t)
        if v.kind != "mem" or v.ty is not t:
            self.err(s.value, f"expected {tname(t)}, got {describe(v)}")
        self.bind_ref(name, v, s)

    def s_Assign(self, s):
        if len(s.targets) != 1:
            self.err(s, "chained assignment (a = b = ...) is not supported")
        target = s.targets[0]
        if isinstance(target, ast.Tuple):
            if not isinstance(s.value, ast.Tuple) or len(s.value.elts) != len(target.elts):
                self.err(s, "tuple assignment needs a tuple of the same length on the right",
                         hint="e.g. `a, b = b, a`")
            vals = []
            for tgt, e in zip(target.elts, s.value.elts):
                v = self.rvalue(self.expr(e), e)
                vals.append((tgt, T("mem", v.ty) if v.kind == "int" else v))
            for tgt, v in vals:
                self.assign(tgt, self.rvalue(v, tgt), s)
            return
        want = None
        if isinstance(target, ast.Name) and target.id in self.locals and self.locals[target.id].kind == "int":
            want = self.locals[target.id].ty
        if isinstance(target, ast.Attribute) and self.is_comm_call(s.value):
            base = self.expr(target.value)
            if base.kind == "mem" and _sub(base.ty, Struct):
                self.need_checked(base, target.value)
                fld = self.field(base, target.attr, target)
                if _sub(fld.ty, Str):
                    self.expr_record(target, fld)
                    self.tf.callees.append(("helper", "get_current_comm"))
                    return
            self.assign(target, self.expr(s.value), s.value)
            return
        self.assign(target, self.expr(s.value, want), s.value)

    def is_comm_call(self, node) -> bool:
        if not (isinstance(node, ast.Call) and not node.args and not node.keywords
                and isinstance(node.func, ast.Attribute) and node.func.attr in ("comm", "get_current_comm")
                and isinstance(node.func.value, ast.Name)):
            return False
        return isinstance(self.ns.get(node.func.value.id), _Bpf) and node.func.value.id not in self.locals

    def lookup_global(self, name):
        return self.mt.globals.get((self.ns.get("__name__"), name))

    def global_mem(self, g) -> T:
        """A Const/Global variable: its initial value must pack into its type (checked once)."""
        self.mt.tm.symbols.append(("global", g))
        key = (g.module, g.name)
        if key not in self.mt.checked_globals:
            self.mt.checked_globals.add(key)
            try:
                g.type._pack(g.init if g.init is not None else 0)
            except (ValueError, TypeError, OverflowError, AttributeError) as e:
                if self.mt.diags is not None:
                    self.mt.diags.error(g.file, g.line, 1, f"bad initial value for '{g.name}' ({tname(g.type)}): {e}")
        return T("mem", g.type, shared=True)

    def assign(self, target, v: T, vnode):
        if isinstance(target, ast.Name):
            name = target.id
            g = self.lookup_global(name)
            if g is not None and name in self.declared_global:
                if g.kind == "const":
                    self.err(target, f"'{g.name}' is a Const; programs cannot change it",
                             hint="use Global[...] for values programs write")
                self.store_into(self.global_mem(g), v, vnode)
                return
            if g is not None or name in self.ns and name not in self.locals:
                if isinstance(self.ns.get(name), Map):
                    self.err(target, f"cannot assign to map '{name}'", hint=f"to store a value write `{name}[key] = value`")
                if g is not None:
                    self.err(target, f"assigning the module global '{name}' needs `global {name}` first")
            if v.kind in ("int", "lit"):
                var = self.locals.get(name)
                ty = var.ty if var is not None and var.kind == "int" else (v.ty if v.kind == "int" else literal_type(v.val))
                if var is not None and var.kind != "int":
                    self.err(target, f"'{name}' holds a {tname(var.ty)}; cannot assign an integer to it")
                self.local_int(name, ty)
                self.fit(v, ty, vnode)
                self.nonnull.discard(name)
                return
            if v.kind in ("mem", "none"):
                self.bind_ref(name, v, target)
                return
            self.err(vnode, f"cannot store {describe(v)} in a variable",
                     hint="use maps, helpers and types by their module-level names" if v.kind in ("map", "py", "method")
                     else None)
        if isinstance(target, ast.Attribute):
            dst = self.expr(target.value)
            if dst.kind == "ctx":
                self.err(target, "program context fields are read-only")
            if dst.kind != "mem" or not _sub(dst.ty, Struct):
                self.err(target, f"cannot set attribute '{target.attr}' on {describe(dst)}")
            self.need_checked(dst, target.value)
            fld = self.expr_record(target, self.field(dst, target.attr, target))
            self.store_into(fld, v, vnode)
            return
        if isinstance(target, ast.Subscript):
            base = self.expr(target.value)
            if base.kind == "map":
                self.map_update(base.val, target.slice, v, vnode, None, target)
                self.expr_record(target, T("mem", base.val.value))
                return
            elem = self.expr_record(target, self.subscript(base, target.slice, target))
            self.store_into(elem, v, vnode)
            return
        self.err(target, f"cannot assign to {type(target).__name__.lower()}")

    def store_into(self, dst: T, v: T, vnode):
        t = dst.ty
        if is_int(t):
            self.fit(self.rvalue(v, vnode), t, vnode)
            return
        if _sub(t, Str) and v.kind == "bytes":
            if len(v.val) > t._len:
                self.err(vnode, f"{len(v.val)} bytes do not fit in {tname(t)}")
            return
        if v.kind == "mem" and (v.ty is t or (_sub(t, Str) and _sub(v.ty, Str))):
            self.need_checked(v, vnode)
            return
        hint = None
        if _sub(t, Str) and v.kind in ("int", "mem") and (v.kind == "int" or is_int(v.ty)):
            hint = "a pointer (address) is not the string: bpf.probe_read_user_str(dst, address) copies it"
        self.err(vnode, f"cannot store {describe(v)} into {tname(t)}", hint=hint)

    def bind_ref(self, name, v: T, node):
        var = self.locals.get(name)
        if var is not None and var.kind == "int":
            self.err(node, f"'{name}' holds an integer; cannot assign {describe(v)} to it")
        if v.kind == "none":
            if var is None:
                self.err(node, f"'{name}' = None: the variable's type is unknown",
                         hint="assign a map lookup or reservation first")
            self.nonnull.discard(name)
            var.nullable = True
            return
        if var is None:
            var = self.locals[name] = LocalVar(name, "ref", v.ty, shared=v.shared)
        elif var.ty is not v.ty:
            self.err(node, f"'{name}' holds a {tname(var.ty)}; cannot assign a {tname(v.ty)} to it")
        var.shared = var.shared or v.shared
        var.nullable = var.nullable or v.nullable
        if v.nullable:
            self.nonnull.discard(name)
        else:
            self.nonnull.add(name)

    def s_AugAssign(self, s):
        op, tgt = s.op, s.target
        if isinstance(tgt, ast.Subscript):
            base = self.expr(tgt.value)
            if base.kind == "map":
                self.map_augassign(base.val, tgt, op, s.value, s)
                return
            dst = self.expr_record(tgt, self.subscript(base, tgt.slice, tgt))
        elif isinstance(tgt, ast.Attribute):
            base = self.expr(tgt.value)
            if base.kind != "mem" or not _sub(base.ty, Struct):
                self.err(tgt, f"cannot update attribute '{tgt.attr}' on {describe(base)}")
            self.need_checked(base, tgt.value)
            dst = self.expr_record(tgt, self.field(base, tgt.attr, tgt))
        elif isinstance(tgt, ast.Name):
            g = self.lookup_global(tgt.id)
            if g is not None:
                if tgt.id not in self.declared_global:
                    self.err(tgt, f"assigning the module global '{tgt.id}' needs `global {tgt.id}` first")
                if g.kind == "const":
                    self.err(tgt, f"'{tgt.id}' is a Const; programs cannot change it")
                dst = self.global_mem(g)
            elif tgt.id in self.locals and self.locals[tgt.id].kind == "int":
                dst = T("mem", self.locals[tgt.id].ty)
            elif tgt.id in self.locals:
                sym, lv = OP_SYMBOLS.get(type(op), "?"), self.locals[tgt.id]
                if lv.kind == "ref" and is_int(lv.ty):
                    # Python would rebind the name, C would write through: neither is obvious here
                    self.err(tgt, f"cannot use '{sym}=' on '{tgt.id}', a reference to a {tname(lv.ty)} map value",
                             hint=f"update the map in place with `m[k] {sym}= n` (atomic for += and -=), "
                                  f"or copy the value first with `m.get(k, 0)`")
                else:
                    self.err(tgt, f"cannot use '{sym}=' on {tname(lv.ty)}")
            else:
                self.err(tgt, f"'{tgt.id}' is used before it is assigned")
        else:
            self.err(tgt, "unsupported augmented assignment target")
        if not is_int(dst.ty):
            self.err(tgt, f"cannot use augmented assignment on {tname(dst.ty)}")
        self.update_mem(dst.ty, op, s.value, s, dst.shared)

    def update_mem(self, t, op, value_node, node, shared):
        if shared and isinstance(op, (ast.Add, ast.Sub)) and t is not bool_:
            # an atomic add of the value converted to t (codegen)
            self.fit(self.int_value(value_node, t), t, value_node)
            return
        r = self.binop(op, T("int", t), self.int_value(value_node, t), node, key=(node, "aug"))
        self.fit(r, t, node)

    def s_Delete(self, s):
        for t in s.targets:
            if not isinstance(t, ast.Subscript):
                self.err(t, "del works only on map entries: `del m[key]`")
            base = self.expr(t.value)
            if base.kind != "map" or base.val.kind != "hash":
                self.err(t, "del works only on hash map entries")
            self.key(base.val, t.slice)

    # ---- expressions --------------------------------------------------------------------
    def expr_record(self, node, t: T) -> T:
        self.tf.exprs[node] = t
        return t

    def expr(self, node, want=None) -> T:
        meth = getattr(self, "e_" + type(node).__name__, None)
        if meth is None:
            self.err(node, f"{EXPR_NAMES.get(type(node).__name__, type(node).__name__)} is not supported "
                           f"in BPF programs", hint=EXPR_HINTS.get(type(node).__name__))
        return self.expr_record(node, meth(node, want))

    def rvalue(self, v: T, node) -> T:
        if v.kind == "mem" and is_int(v.ty):
            self.need_checked(v, node)
            return T("int", v.ty)
        return v

    def int_value(self, node, want=None) -> T:
        v = self.rvalue(self.expr(node, want), node)
        if v.kind in ("int", "lit"):
            return v
        if v.kind == "mem":
            self.need_checked(v, node)
        self.err(node, f"expected an integer, got {describe(v)}")

    def truth(self, node):
        """Checks a condition; its value when known at compile time (codegen folds the same)."""
        v = self.expr(node)
        if v.kind == "mem":
            return None
        v = self.rvalue(v, node)
        if v.kind == "lit":
            return bool(v.val)
        if v.kind == "int":
            return v.const if v.ty is bool_ else None
        if v.kind == "none":
            return False
        self.err(node, f"{describe(v)} cannot be used as a condition")

    def annotation_type(self, node):
        v = self.expr(node)
        if v.kind == "py" and isinstance(v.val, type) and hasattr(v.val, "_size"):
            return v.val
        if v.kind == "py" and v.val is int:
            return i64
        if v.kind == "py" and v.val is bool:
            return bool_
        self.err(node, "not a pybpfc type", hint="use u8..u64, i8..i64, bool, a Struct, Array[T, N] or Str[N]")

    def annotation(self, node):
        try:
            return self.annotation_type(node)
        except _Unknown:
            return None

    def e_Constant(self, node, want):
        v = node.value
        if v is None:
            return T("none")
        if isinstance(v, bool):
            return T("int", bool_, const=v)
        if isinstance(v, int):
            return T("lit", val=v)
        if isinstance(v, bytes):
            return T("bytes", val=v)
        if isinstance(v, str):
            return T("str", val=v)
        if isinstance(v, float):
            self.err(node, "floating-point numbers are not supported in BPF programs",
                     hint="use integers (e.g. scale by 1000)")
        self.err(node, f"{type(v).__name__} constants are not supported")

    def e_Name(self, node, want):
        name = node.id
        if name in self.poisoned and name not in self.locals:
            raise _Unknown()
        if name in self.locals:
            var = self.locals[name]
            if var.kind == "int":
                return T("int", var.ty)
            return T("mem", var.ty, nullable=name not in self.nonnull, var=name, shared=var.shared)
        if name == self.tf.ctx_name:
            return T("ctx")
        if name not in self.declared_global and name in self.mt.stored_names(self.tf.node):
            self.err(node, f"'{name}' is used before it is assigned")
        g = self.lookup_global(name)
        if g is not None:
            return self.global_mem(g)
        obj = self.name_obj(name)
        if obj is _MISSING:
            self.err(node, f"name '{name}' is not defined")
        return self.from_py(obj, node, name)

    def name_obj(self, name):
        return self.ns[name] if name in self.ns else getattr(builtins, name, _MISSING)

    def from_py(self, obj, node, name="") -> T:
        if isinstance(obj, bool):
            return T("int", bool_, const=obj)
        if isinstance(obj, int):
            return T("lit", val=int(obj) if isinstance(obj, IntType) else obj)
        if isinstance(obj, Map):
            self.mt.tm.symbols.append(("map", obj, name))
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
            qual = ast.unparse(node) if isinstance(node, (ast.Name, ast.Attribute)) else obj.__name__
            self.err(node, f"'{qual}' is plain Python; it cannot run in a BPF program",
                     hint="kernel helpers are under bpf.*, e.g. bpf.pid(), bpf.ktime_ns()")
        if isinstance(obj, float):
            self.err(node, f"'{name}' is a float; BPF programs have no floating point")
        self.err(node, f"'{name}' ({type(obj).__name__}) cannot be used in a BPF program",
                 hint="programs can use ints, maps, Structs, Const/Global variables and functions")

    def e_Attribute(self, node, want):
        base = self.expr(node.value)
        a = node.attr
        if base.kind == "py":
            obj = base.val
            if isinstance(obj, _Bpf):
                return T("method", val=("bpf", a))
            if isinstance(obj, pytypes.ModuleType):
                if not hasattr(obj, a):
                    self.err(node, f"module '{obj.__name__}' has no attribute '{a}'")
                g = self.mt.module_global(obj, a)
                if g is not None:
                    return self.global_mem(g)
                return self.from_py(getattr(obj, a), node, a)
            self.err(node, f"attribute '{a}' of {tname(obj)} is not usable in BPF programs")
        if base.kind == "map":
            return T("method", val=("map", a), ty=base.val)
        if base.kind == "ctx":
            return self.ctx_field(a, node)
        if base.kind == "mem" and _sub(base.ty, Struct):
            self.need_checked(base, node.value)
            return self.field(base, a, node)
        self.err(node, f"{describe(base)} has no attribute '{a}'")

    def ctx_field(self, a, node) -> T:
        tf = self.tf
        prog = tf.kind != "subprogram"
        if a == "packet":
            if not prog or tf.packet is None:
                self.err(node, f"ctx.packet() is not available in {tf.kind if prog else 'this'} programs",
                         hint="direct packet access works in xdp, tc and cgroup_skb programs"
                              + ("; socket filters use bpf.load_byte/half/word(skb, off)"
                                 if prog and tf.kind == "socket_filter" else ""))
            return T("method", val=("ctx", "packet"))
        if a == "args" and tf.kind in ("raw_tracepoint", "fentry", "fexit"):
            return T("mem", Array[u64, 12])
        if prog and a in tf.ctx_fields:
            return T("mem", tf.ctx_fields[a][1])
        avail = ", ".join(sorted(tf.ctx_fields)) if prog and tf.ctx_fields else "none"
        hint = f"fields: {avail}"
        if a in ("data", "data_end", "data_meta") and prog and tf.packet is not None:
            hint = "read packet headers with ctx.packet(Type, offset) (it does the bounds check)"
        self.err(node, f"the {tf.kind if prog else ''} context has no field '{a}'", hint=hint)

    def field(self, base: T, name: str, node) -> T:
        for fname, ft, _ in base.ty._fields_:
            if fname == name:
                return T("mem", ft, shared=base.shared)
        names = ", ".join(f[0] for f in base.ty._fields_)
        self.err(node, f"{tname(base.ty)} has no field '{name}'", hint=f"fields: {names}")

    def e_Subscript(self, node, want):
        base = self.expr(node.value)
        if base.kind == "map":
            return self.map_read(base.val, node.slice, node)
        if base.kind == "py" and isinstance(base.val, type) and base.val in (Array, Str):
            try:
                params = ast.literal_eval(node.slice) if base.val is Str else None
            except ValueError:
                params = None
            if base.val is Str and isinstance(params, int):
                return T("py", val=Str[params])
            if base.val is Array and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
                et = self.annotation_type(node.slice.elts[0])
                n = self.const_eval(node.slice.elts[1])
                if isinstance(n, int):
                    return T("py", val=Array[et, n])
            self.err(node, "bad type parameters", hint="write Array[T, N] or Str[N] with a constant N")
        return self.rvalue(self.subscript(base, node.slice, node), node)

    def subscript(self, base: T, idx_node, node) -> T:
        if base.kind != "mem" or not (_sub(base.ty, Array) or _sub(base.ty, Str)):
            self.err(node, f"{describe(base)} cannot be indexed")
        self.need_checked(base, node.value)
        n = base.ty._len
        idx = self.int_value(idx_node)
        if idx.kind == "lit":
            i = idx.val + n if idx.val < 0 else idx.val
            if not 0 <= i < n:
                self.err(idx_node, f"index {idx.val} is out of range for {tname(base.ty)}")
        return T("mem", base.ty._elem if _sub(base.ty, Array) else u8, shared=base.shared)

    def e_UnaryOp(self, node, want):
        if isinstance(node.op, ast.Not):
            c = self.truth(node.operand)
            return T("int", bool_, const=None if c is None else not c)
        v = self.int_value(node.operand, want)
        if v.kind == "lit":
            return T("lit", val={ast.USub: lambda x: -x, ast.UAdd: lambda x: x,
                                 ast.Invert: lambda x: ~x}[type(node.op)](v.val))
        return T("int", v.ty if v.ty is not bool_ else i64)

    def e_BinOp(self, node, want):
        if isinstance(node.op, ast.Div):
            self.err(node, "'/' is true division (floats); BPF programs have only integers",
                     hint="use '//' for integer division")
        if isinstance(node.op, ast.MatMult):
            self.err(node, "'@' is not supported")
        a = self.int_value(node.left, want)
        b = self.int_value(node.right, want if a.kind == "lit" else a.ty)
        return self.binop(node.op, a, b, node)

    def binop(self, op, a: T, b: T, node, key=None) -> T:
        """key: where in TypedFunction.steps to record the operation's type (steps inside a node)."""
        if a.kind == "lit" and b.kind == "lit":
            try:
                return T("lit", val=_PYOPS[type(op)](a.val, b.val))
            except ZeroDivisionError:
                self.err(node, "division by zero in a constant expression")
            except (ValueError, OverflowError) as e:
                self.err(node, f"bad constant expression: {e}")
        if isinstance(op, ast.Pow):
            if b.kind == "lit" and 0 <= b.val <= 64:
                t = a.ty if a.kind == "int" else literal_type(a.val)
                self.tf.steps[(node, "pow")] = t
                acc = T("lit", val=1)
                for i in range(b.val):
                    acc = self.binop(ast.Mult(), acc, a, node, key=(node, "pow", i))
                if acc.kind != "int":
                    self.fit(acc, t, node)
                return acc if acc.kind == "int" else T("int", t)
            self.err(node, "'**' needs a small constant exponent")
        if isinstance(op, (ast.LShift, ast.RShift)):
            t = binop_type("shift", a.ty if a.kind == "int" else a.val, None)
            if key is not None:
                self.tf.steps[key] = t
            if b.kind == "lit" and not 0 <= b.val < bits(t):
                self.err(node, f"shift by {b.val} is out of range for {tname(t)}")
            self.fit(a, t, node)
            return T("int", t)
        kind = "bitwise" if isinstance(op, (ast.BitAnd, ast.BitOr, ast.BitXor)) else \
            "div" if isinstance(op, (ast.FloorDiv, ast.Mod)) else "arith"
        t = binop_type(kind, a.ty if a.kind == "int" else a.val, b.ty if b.kind == "int" else b.val)
        if key is not None:
            self.tf.steps[key] = t
        self.fit(a, t, node)
        self.fit(b, t, node)
        if isinstance(op, (ast.FloorDiv, ast.Mod)) and b.kind == "lit" and b.val == 0:
            self.err(node, "division by zero")
        if type(op) not in _PYOPS or isinstance(op, (ast.LShift, ast.RShift)):
            self.err(node, f"operator {type(op).__name__} is not supported")
        return T("int", t)

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
        a = self.rvalue(self.expr(node.body, want), node.body)
        self.nonnull = saved | f_nn
        b = self.rvalue(self.expr(node.orelse, want), node.orelse)
        self.nonnull = saved
        if a.kind in ("int", "lit") and b.kind in ("int", "lit"):
            if a.kind == b.kind == "lit":
                t = want if want is not None and is_int(want) else literal_type(max(abs(a.val), abs(b.val)))
            else:
                t = a.ty if b.kind == "lit" else b.ty if a.kind == "lit" else common(a.ty, b.ty)
            self.fit(b, t, node.orelse)
            self.fit(a, t, node.body)
            return T("int", t)
        if (a.kind == "mem" and b.kind in ("mem", "none")) or (a.kind == "none" and b.kind == "mem"):
            if a.kind == b.kind == "mem" and a.ty is not b.ty:
                self.err(node, f"conditional expression mixes {tname(a.ty)} and {tname(b.ty)}")
            return T("mem", a.ty if a.kind == "mem" else b.ty, nullable=True)
        self.err(node, "both branches of a conditional expression must be integers or references")

    def e_Compare(self, node, want):
        for op in node.ops:
            if isinstance(op, (ast.In, ast.NotIn)):
                self.err(node, "'in' is not supported", hint="use a map lookup or explicit == comparisons")
        if len(node.ops) > 1:
            vals = [self.rvalue(self.expr(c), c) for c in [node.left] + node.comparators]
            for i, op in enumerate(node.ops):
                self.compare(op, vals[i], vals[i + 1], node, i)
            return T("int", bool_)
        a = self.expr(node.left)
        b = self.expr(node.comparators[0], a.ty if a.kind == "int" else None)
        return T("int", bool_, const=self.compare(node.ops[0], a, b, node))

    def compare(self, op, a: T, b: T, node, i=0):
        """Checks a comparison; its value when known at compile time (codegen folds the same)."""
        if isinstance(op, (ast.Is, ast.IsNot)) or (isinstance(op, (ast.Eq, ast.NotEq)) and "none" in (a.kind, b.kind)):
            if b.kind == "none" and a.kind == "none":
                return isinstance(op, (ast.Is, ast.Eq))
            ref = a if b.kind == "none" else b
            if ref.kind != "mem" or (b.kind != "none" and a.kind != "none"):
                self.err(node, "'is' compares only with None", hint="use '==' to compare values")
            return None
        if (a.kind == "mem" and _sub(a.ty, Str)) or (b.kind == "mem" and _sub(b.ty, Str)):
            return self.str_compare(op, a, b, node)
        a, b = self.rvalue(a, node), self.rvalue(b, node)
        if a.kind not in ("int", "lit") or b.kind not in ("int", "lit"):
            self.err(node, f"cannot compare {describe(a)} with {describe(b)}")
        if a.kind == "lit" and b.kind == "lit":
            return bool(_PYCMP[type(op)](a.val, b.val))
        t = compare_type(a.ty if a.kind == "int" else a.val, b.ty if b.kind == "int" else b.val)
        self.tf.steps[(node, "cmp", i)] = t
        if t is None:
            return None
        lit = a if a.kind == "lit" else b if b.kind == "lit" else None
        if lit is not None and not fits(lit.val, t):
            self.soft_err(node, f"literal {lit.val} is out of range for {tname(t)}; the comparison is constant")
            return bool(_PYCMP[type(op)](a.val if a.kind == "lit" else 0, b.val if b.kind == "lit" else 0))
        return None

    def str_compare(self, op, a: T, b: T, node):
        if not isinstance(op, (ast.Eq, ast.NotEq)):
            self.err(node, "Str values compare only with == and !=")
        if a.kind == "bytes":
            a, b = b, a
        self.need_checked(a, node)
        if b.kind == "bytes":
            if len(b.val) > a.ty._len:
                return not isinstance(op, ast.Eq)
            return None
        if b.kind == "mem" and _sub(b.ty, Str):
            self.need_checked(b, node)
            return None
        self.err(node, f"cannot compare {describe(a)} with {describe(b)}")

    # ---- calls --------------------------------------------------------------------------
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
            if obj in (range,):
                self.err(node, "range() is only allowed as the iterable of a for loop")
            if isinstance(obj, type) and is_int(obj):
                self.no_kw(node)
                if len(node.args) != 1:
                    self.err(node, f"{tname(obj)}() takes exactly one argument")
                self.int_value(node.args[0], obj)
                return T("int", obj)
            if obj is int or obj is bool:
                self.no_kw(node)
                if len(node.args) != 1:
                    self.err(node, f"{obj.__name__}() takes one argument")
                if obj is bool:
                    return T("int", bool_, const=self.truth(node.args[0]))
                return self.int_value(node.args[0], want)
            if isinstance(obj, type) and _sub(obj, Struct):
                return self.construct(obj, node)
            if obj in (min, max):
                return self.minmax(obj is min, node, want)
            if obj is abs:
                self.no_kw(node)
                if len(node.args) != 1:
                    self.err(node, "abs() takes one argument")
                v = self.int_value(node.args[0], want)
                return T("lit", val=abs(v.val)) if v.kind == "lit" else v
            if obj is len:
                return self.len_(node)
            if obj is ord:
                c = self.const_eval(node.args[0]) if len(node.args) == 1 and not node.keywords else None
                if not isinstance(c, (str, bytes)) or len(c) != 1:
                    self.err(node, "ord() takes one constant character, e.g. ord('a')")
                return T("lit", val=ord(c))
            if obj is print:
                return self.print_(node)
            if isinstance(obj, pytypes.FunctionType):
                return self.user_call(obj, node)
        self.err(node, f"cannot call {describe(fv)}" + (f" '{getattr(fv.val, '__name__', '')}'" if fv.kind == "py" else ""),
                 hint="only helpers (bpf.*), map methods, int types, Structs and functions of this project can be called")

    def no_kw(self, node):
        if node.keywords:
            self.err(node.keywords[0].value, f"unexpected keyword argument '{node.keywords[0].arg}'")

    def construct(self, t, node) -> T:
        if node.args:
            self.err(node, f"{tname(t)}(...) takes keyword arguments only", hint=f"e.g. {tname(t)}(field=value)")
        v = T("mem", t)
        for kw in node.keywords:
            if kw.arg is None:
                self.err(kw.value, "**kwargs is not supported")
            fld = self.field(v, kw.arg, kw.value)
            self.store_into(fld, self.expr(kw.value, fld.ty if is_int(fld.ty) else None), kw.value)
        return v

    def minmax(self, is_min, node, want) -> T:
        self.no_kw(node)
        if len(node.args) < 2:
            self.err(node, f"{'min' if is_min else 'max'}() needs at least two integer arguments")
        acc = self.int_value(node.args[0], want)
        for i, a in enumerate(node.args[1:]):
            b = self.int_value(a, want if acc.kind == "lit" else acc.ty)
            if acc.kind == "lit" and b.kind == "lit":
                acc = T("lit", val=min(acc.val, b.val) if is_min else max(acc.val, b.val))
                continue
            by_value = acc.kind == b.kind == "int" and compare_type(acc.ty, b.ty) is None
            if by_value:
                # signed with unsigned: pick by value (as `<` does) into a type that holds the answer
                w = max(bits(acc.ty), bits(b.ty))
                t = {8: i16, 16: i32, 32: i64}.get(w, i64 if is_min else u64)
            else:
                t = binop_type("arith", acc.ty if acc.kind == "int" else acc.val, b.ty if b.kind == "int" else b.val)
            self.tf.steps[(node, "minmax", i)] = (t, by_value)
            self.fit(acc, t, node)
            self.fit(b, t, node)
            acc = T("int", t)
        return acc

    def len_(self, node) -> T:
        if len(node.args) != 1:
            self.err(node, "len() takes one argument")
        v = self.expr(node.args[0])
        if v.kind == "mem" and (_sub(v.ty, Array) or _sub(v.ty, Str)):
            return T("lit", val=v.ty._len)
        if v.kind == "bytes":
            return T("lit", val=len(v.val))
        self.err(node.args[0], f"len() of {describe(v)}", hint="len() works on Array[T, N] and Str[N] (it gives N)")

    def print_(self, node) -> T:
        for kw in node.keywords:
            if kw.arg not in ("end",):
                self.err(kw.value, f"print() keyword '{kw.arg}' is not supported")
        for kw in node.keywords:
            if not isinstance(self.const_eval(kw.value), str):
                self.err(kw.value, "print(end=...) must be a constant string")
        parts, nargs = [], 0
        for a in node.args:
            parts.extend(a.values if isinstance(a, ast.JoinedStr) else [a])
        for p in parts:
            if isinstance(p, ast.Constant) and isinstance(p.value, str):
                continue
            expr, spec = (p.value, p.format_spec) if isinstance(p, ast.FormattedValue) else (p, None)
            if isinstance(p, ast.FormattedValue) and p.conversion != -1:
                self.err(p, "!r/!s/!a conversions are not supported in print()")
            sp = ""
            if spec is not None:
                if not (len(spec.values) == 1 and isinstance(spec.values[0], ast.Constant)):
                    self.err(spec, "format specs must be constant")
                sp = spec.values[0].value
            v = self.rvalue(self.expr(expr), expr)
            if v.kind == "lit":
                try:
                    format(v.val, sp)
                except ValueError:
                    raise _Unknown() from None   # codegen fails here too (no user message yet)
                continue
            if v.kind == "mem" and _sub(v.ty, Str):
                self.need_checked(v, expr)
                nargs += 1
                continue
            if v.kind != "int":
                self.err(expr, f"print() cannot format {describe(v)}")
            if {"": None, "d": None, "x": "x", "X": "X", "o": "o"}.get(sp.lstrip("0123456789"), "bad") == "bad":
                self.err(expr, f"format spec '{sp}' is not supported", hint="use {x}, {x:x} or {x:08x}")
            nargs += 1
        if nargs > 3:
            self.err(node, f"print() can show at most 3 values (bpf_trace_printk), got {nargs}")
        self.tf.callees.append(("helper", "trace_printk"))
        return T("int", i64)

    def bpf_call(self, name, node) -> T:
        self.no_kw(node)
        short = {"pid": u32, "tgid": u32, "tid": u32, "uid": u32, "gid": u32}
        if name in short or name in ("ktime_ns", "cpu"):
            if node.args:
                self.err(node, f"bpf.{name}() takes no arguments")
            self.tf.callees.append(("bpf", name))
            return T("int", u64 if name == "ktime_ns" else u32)
        if name in ("comm", "get_current_comm") and not node.args:
            self.tf.callees.append(("bpf", name))
            return T("mem", Str[16])
        if name in ("load_byte", "load_half", "load_word"):
            if self.tf.kind not in ("socket_filter", "tc", "section"):
                self.err(node, f"bpf.{name}() works only in socket filter and tc programs")
            if len(node.args) != 2:
                self.err(node, f"bpf.{name}(skb, offset) takes two arguments")
            if self.expr(node.args[0]).kind != "ctx":
                self.err(node.args[0], "the first argument must be the program's context")
            self.fit(self.int_value(node.args[1], u64), u64, node.args[1])
            self.tf.callees.append(("bpf", name))
            return T("int", {"byte": u8, "half": u16, "word": u32}[name.split("_")[1]])
        h = H.helpers().get(name)
        if h is None:
            self.err(node.func, f"bpf.{name}: no such helper",
                     hint="helpers are named as in linux/bpf.h without the bpf_ prefix")
        args, pi = list(node.args), 0
        for a in args:
            if pi >= len(h.params):
                self.err(a, f"bpf.{name}() takes {len(h.params)} arguments")
            p = h.params[pi]
            if isinstance(a, ast.Name) and a.id in self.locals and self.locals[a.id].kind == "int" \
                    and p.is_pointer and H.size_param_after(h, pi) and len(args) < len(h.params):
                pi += 2   # an integer variable as the output buffer (and its size)
                continue
            v = self.expr(a)
            buffer = v.kind == "mem" and is_int(v.ty) and p.is_pointer and H.size_param_after(h, pi)
            if v.kind == "mem" and not is_int(v.ty) or v.kind in ("map", "ctx") or buffer:
                if v.kind == "mem":
                    self.need_checked(v, a)
                pi += 1
                if v.kind == "mem" and H.size_param_after(h, pi - 1) and len(args) < len(h.params):
                    pi += 1
                continue
            if v.kind not in ("bytes", "none"):
                iv = self.int_value(a, u64)
                if iv.kind == "lit":
                    self.fit(iv, u64, a)
            pi += 1
        if pi != len(h.params):
            self.err(node, f"bpf.{name}() takes {len(h.params)} arguments "
                           f"({', '.join(p.name for p in h.params)}), got {len(args)}")
        self.tf.callees.append(("helper", name))
        if h.returns_pointer:
            return T("int", u64)
        rt = {"u64": u64, "u32": u32, "int": i32, "long": i64, "__u64": u64, "s64": i64, "u16": u16,
              "void": None}.get(h.ret, i64)
        return T("void") if rt is None else T("int", rt)

    def packet(self, node) -> T:
        self.no_kw(node)
        if len(node.args) != 2:
            self.err(node, "ctx.packet(Type, offset) takes two arguments")
        tv = self.expr(node.args[0])
        if tv.kind != "py" or not isinstance(tv.val, type) or not hasattr(tv.val, "_size"):
            self.err(node.args[0], "the first argument of ctx.packet() must be a type (a Struct, int type or Array)")
        off = self.int_value(node.args[1], u64)
        if off.kind == "lit" and (off.val < 0 or off.val > 0xFFFF):
            self.err(node.args[1], f"packet offset {off.val} is out of range (0..65535)")
        self.fit(off, u64, node.args[1])
        return T("mem", tv.val, nullable=True)

    # ---- maps ---------------------------------------------------------------------------
    def key(self, m: Map, node, t=None):
        t = t or m.key
        v = self.expr(node, t if is_int(t) else None)
        if v.kind == "mem" and v.ty is t:
            self.need_checked(v, node)
            return
        if is_int(t):
            self.fit(self.rvalue(v, node), t, node)
            return
        if _sub(t, Str) and v.kind == "bytes":
            self.store_into(T("mem", t), v, node)
            return
        self.err(node, f"expected {tname(t)}, got {describe(v)}")

    def map_lookup(self, m: Map, key_node):
        if m.key is None:
            self.err(key_node, f"{type(m).__name__} has no keys")
        self.key(m, key_node)

    def map_read(self, m: Map, key_node, node) -> T:
        if m.kind not in ("hash", "array"):
            self.err(node, f"{type(m).__name__} cannot be indexed")
        if not is_int(m.value):
            self.err(node, f"reading m[key] works for integer values; this map holds {tname(m.value)}",
                     hint="use m.lookup(key) (a reference, None if absent) or m.get(key)")
        self.map_lookup(m, key_node)
        return T("int", m.value)

    def map_update(self, m: Map, key_node, v: T, vnode, flags_node, node):
        if m.kind not in ("hash", "array"):
            self.err(node, f"{type(m).__name__} does not support m[key] = value")
        self.key(m, key_node)
        self.value(m.value, v, vnode)
        if flags_node is not None:
            self.fit(self.int_value(flags_node, u64), u64, flags_node)

    def value(self, t, v: T, vnode):
        if v.kind == "mem" and v.ty is t:
            self.need_checked(v, vnode)
            return
        self.store_into(T("mem", t), v, vnode)

    def map_augassign(self, m: Map, tgt, op, value_node, node):
        if m.kind not in ("hash", "array"):
            self.err(tgt, f"{type(m).__name__} does not support m[key] {type(op).__name__}= ...")
        if not is_int(m.value):
            self.err(tgt, f"m[key] += n needs integer values; this map holds {tname(m.value)}",
                     hint="use r = m.lookup(key) and update fields of r")
        self.key(m, tgt.slice)
        self.expr_record(tgt, T("mem", m.value))
        self.update_mem(m.value, op, value_node, node, not self.percpu(m))

    @staticmethod
    def percpu(m: Map) -> bool:
        return m.map_type in (U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_LRU_PERCPU_HASH)

    def flags(self, args, i, kw):
        n = args[i] if len(args) > i else kw.get("flags")
        if n is not None:
            self.fit(self.int_value(n, u64), u64, n)

    def event(self, m: Map, t, node):
        prev = self.mt.tm.events.get(id(m)) or m.event
        if prev is not None and prev is not t:
            self.err(node, f"this buffer already carries {tname(prev)}; one event type per buffer",
                     hint="use a second RingBuf for another event type")
        self.mt.tm.events[id(m)] = t

    def map_method(self, m: Map, name: str, node) -> T:
        kind, args = m.kind, node.args
        kw = {k.arg: k.value for k in node.keywords}

        def nargs(lo, hi, sig):
            if not lo <= len(args) <= hi or (set(kw) - {"flags"}):
                self.err(node, f"{type(m).__name__}.{name}{sig}")

        self.tf.callees.append(("map", name))
        if kind in ("hash", "array"):
            if name == "lookup":
                nargs(1, 1, "(key) takes one argument")
                self.map_lookup(m, args[0])
                return T("mem", m.value, nullable=True, shared=not self.percpu(m))
            if name == "get":
                nargs(1, 2, "(key[, default])")
                self.map_lookup(m, args[0])
                if len(args) == 2:
                    if not is_int(m.value):
                        self.err(args[1], "a default works for integer values only")
                    self.fit(self.int_value(args[1], m.value), m.value, node)
                    return T("int", m.value)
                return T("mem", m.value, nullable=True)
            if name == "update":
                nargs(2, 3, "(key, value, flags=0)")
                fl = args[2] if len(args) == 3 else kw.get("flags")
                self.map_update(m, args[0], self.expr(args[1], m.value if is_int(m.value) else None), args[1], fl, node)
                return T("int", i64)
            if name == "delete":
                nargs(1, 1, "(key)")
                if m.map_type in (U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY):
                    self.err(node, "array map entries cannot be deleted", hint="store 0 instead")
                self.key(m, args[0])
                return T("int", i64)
            if name == "record" and m.tags.get("histogram"):
                nargs(1, 1, "(value)")
                self.fit(self.int_value(args[0], u64), u64, args[0])
                return T("void")
        if kind == "ringbuf":
            if name == "reserve":
                nargs(1, 1, "(Type)")
                tv = self.expr(args[0])
                if tv.kind != "py" or not isinstance(tv.val, type) or not hasattr(tv.val, "_size"):
                    self.err(args[0], "reserve() takes a type, e.g. events.reserve(Event)")
                self.event(m, tv.val, node)
                return T("mem", tv.val, nullable=True, shared=True)
            if name in ("submit", "discard"):
                nargs(1, 2, "(event, flags=0)")
                e = self.expr(args[0])
                if e.kind != "mem":
                    self.err(args[0], f"{name}() takes a reference from reserve()")
                self.need_checked(e, args[0])
                self.flags(args, 1, kw)
                if isinstance(args[0], ast.Name):
                    self.nonnull.discard(args[0].id)
                return T("void")
            if name == "output":
                nargs(1, 2, "(value, flags=0)")
                e = self.expr(args[0])
                if e.kind != "mem":
                    self.err(args[0], "output() takes a Struct value, e.g. events.output(Event(pid=pid))")
                self.need_checked(e, args[0])
                self.event(m, e.ty, node)
                self.flags(args, 1, kw)
                return T("int", i64)
        if kind == "perf" and name == "output":
            if len(args) == 2:
                if self.expr(args[0]).kind != "ctx":
                    self.err(args[0], "the first argument of output(ctx, value) must be the program context")
            elif len(args) == 1:
                if self.tf.kind == "subprogram":
                    self.err(node, "output(value) needs the program context", hint="write output(ctx, value)")
            else:
                self.err(node, "PerfEventArray.output([ctx,] value)")
            ev = args[-1]
            e = self.expr(ev)
            if e.kind != "mem":
                self.err(ev, "output() takes a Struct value")
            self.need_checked(e, ev)
            self.event(m, e.ty, node)
            return T("int", i64)
        if kind == "progarray" and name == "tail_call":
            nargs(2, 2, "(ctx, index)")
            if self.expr(args[0]).kind != "ctx":
                self.err(args[0], "tail_call() needs the program context first")
            self.fit(self.int_value(args[1], u32), u32, args[1])
            return T("int", i64)
        if kind == "stack_trace" and name == "get_stackid":
            nargs(1, 2, "(ctx, flags=0)")
            if self.expr(args[0]).kind != "ctx":
                self.err(args[0], "get_stackid() needs the program context")
            self.flags(args, 1, kw)
            return T("int", i64)
        if kind in ("queue", "bloom") and name == "push":
            nargs(1, 2, "(value, flags=0)")
            self.value(m.value, self.expr(args[0], m.value), args[0])
            self.flags(args, 1, kw)
            return T("int", i64)
        if kind == "queue" and name in ("pop", "peek"):
            nargs(0, 0, "() takes no arguments")
            return T("mem", m.value, nullable=True)
        if kind == "bloom" and name == "contains":
            nargs(1, 1, "(value)")
            self.value(m.value, self.expr(args[0], m.value), args[0])
            return T("int", bool_)
        self.err(node.func, f"{type(m).__name__} has no method '{name}'", hint=MAP_METHODS.get(kind))

    # ---- user functions -----------------------------------------------------------------
    def user_call(self, fn, node) -> T:
        if getattr(fn, "__pybpfc_prog__", None) is not None:
            self.err(node, f"'{fn.__name__}' is a BPF program; programs cannot be called",
                     hint="move the shared code into an undecorated function")
        sub = self.mt.subprogram(fn, self, node)
        self.tf.callees.append(("function", sub.name))
        if node.keywords:
            self.err(node, "keyword arguments are not supported in calls to BPF functions")
        if len(node.args) != len(sub.params):
            self.err(node, f"{fn.__name__}() takes {len(sub.params)} arguments, got {len(node.args)}")
        for a, (pname, pt) in zip(node.args, sub.params):
            if is_int(pt):
                self.fit(self.int_value(a, pt), pt, a)
            else:
                v = self.expr(a)
                if v.kind != "mem" or v.ty is not pt:
                    self.err(a, f"argument '{pname}' expects {tname(pt)}, got {describe(v)}")
                self.need_checked(v, a)
        return T("void") if sub.ret is None else T("int", sub.ret)

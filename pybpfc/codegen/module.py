"""Lowering of a whole module: programs, subprograms, maps, globals, license."""
from __future__ import annotations

import os

from ..frontend.module import GlobalVar, ModuleInfo, collect_globals
from ..frontend.typer import ARG_REGS, PT_REGS, type_module
from ..frontend.typing import is_int
from ..lang.maps import Map
from .ir import ModuleIR, esc
from .lower import FunctionLowering, ProgramCtx, Subprogram, lt, tname


class ModuleLowering:
    def __init__(self, info: ModuleInfo, diags, tracepoint_formats: str | None = None):
        self.info, self.diags = info, diags
        self.ir = ModuleIR(info.path)
        self.tp_dir = tracepoint_formats
        self.maps: dict[int, tuple[str, Map, int, str]] = {}     # id(map) -> (name, map, line, file)
        self.globals = dict(info.globals)
        self.global_refs: dict = {}
        self.subs: dict = {}
        self.sub_queue: list = []
        # the typing pass runs first; lowering reads locals' types and context layouts from it
        self.typed_module = type_module(info, tracepoint_formats, diags)
        # symbol names are chosen from the typed program (the typer records the order of use)
        self.fn_names, self.map_names, self.global_names = self.typed_module.symbol_names(info)
        for name, m in info.maps.items():
            self.map_ref(m, name, None, info.path, line=info.map_lines.get(name, 1))

    # ---- maps ---------------------------------------------------------------------------
    def map_ref(self, m: Map, name: str, node, file: str, line: int = 0) -> str:
        if id(m) not in self.maps:
            self.maps[id(m)] = (self.map_names[id(m)][0], m, line or getattr(node, "lineno", 1), file)
        return "@" + self.maps[id(m)][0]

    def emit_maps(self):
        ir = self.ir
        for name, m, line, file in self.maps.values():
            members = []

            def uint(field, value):
                members.append((field, ir.ptr_to(ir.array_type(ir.int_di(), value, 32))))

            def typ(field, t):
                members.append((field, ir.ptr_to(ir.ditype(t))))

            uint("type", m.map_type)
            if m.kind in ("hash", "array"):
                uint("max_entries", m.max_entries)
                typ("key", m.key)
                typ("value", m.value)
            elif m.kind == "stack_trace":
                uint("max_entries", m.max_entries)
                uint("key_size", 4)
                uint("value_size", m.value._size)
            elif m.kind in ("queue", "bloom"):
                uint("max_entries", m.max_entries)
                typ("value", m.value)
                if m.kind == "bloom" and m.hashes:
                    uint("map_extra", m.hashes)
            elif m.kind in ("perf", "progarray"):
                if m.max_entries:
                    uint("max_entries", m.max_entries)
                uint("key_size", 4)
                uint("value_size", 4)
            elif m.kind == "ringbuf":
                uint("max_entries", m.max_entries)
            if m.flags:
                uint("map_flags", m.flags)
            if m.pinned:
                uint("pinning", 1)   # LIBBPF_PIN_BY_NAME
            st = ir._reserve()
            elems = []
            for i, (fname, di) in enumerate(members):
                elems.append(ir.meta(f'!DIDerivedType(tag: DW_TAG_member, name: "{fname}", scope: {st}, '
                                     f"file: {ir.file}, line: {line}, baseType: {di}, size: 64, offset: {64 * i})"))
            ir.set_md(st, f"distinct !DICompositeType(tag: DW_TAG_structure_type, file: {ir.file}, line: {line}, "
                          f"size: {64 * len(members)}, elements: !{{{', '.join(elems)}}})")
            tags = [f"pybpfc:{k}={v}" for k, v in sorted(m.tags.items())]
            ev = self.typed_module.events.get(id(m)) or m.event
            if ev is not None:
                tags.append(f"pybpfc:event={tname(ev)}")
                # keep the event type in BTF: a pointer-typed .bss variable references it
                hold = f"__pybpfc_event_{name}"
                gve = ir.global_var(hold, ir.ptr_to(ir.ditype(ev)), line)
                ir.globals.append(f'@{hold} = dso_local global ptr null, section ".bss", align 8, !dbg {gve}')
            gve = ir.global_var(name, st, line, annotations=tags)
            ptrs = ", ".join(["ptr"] * len(members))
            ir.globals.append(f'@{name} = dso_local global {{ {ptrs} }} zeroinitializer, section ".maps", '
                              f"align 8, !dbg {gve}")

    # ---- globals ------------------------------------------------------------------------
    def module_global(self, mod, name) -> GlobalVar | None:
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

    def global_ref(self, g: GlobalVar) -> str:
        key = (g.module, g.name)
        if key in self.global_refs:
            return self.global_refs[key]
        t = g.type
        name = self.global_names[key]
        data = t._pack(g.init if g.init is not None else 0)   # the typing pass checked it packs
        if g.kind == "const":
            sec, kw = ".rodata", "constant"
        else:
            sec, kw = (".bss" if not any(data) else ".data"), "global"
        init = "zeroinitializer" if not any(data) else f'c"{esc(data)}"'
        gve = self.ir.global_var(name, self.ir.ditype(t), g.line)
        self.ir.globals.append(f'@{name} = dso_local {kw} [{t._size} x i8] {init}, section "{sec}", '
                               f"align {t._align}, !dbg {gve}")
        self.global_refs[key] = "@" + name
        return "@" + name

    # ---- functions ----------------------------------------------------------------------
    def subprogram(self, fn, node, file) -> Subprogram:
        """A called function, as the typing pass typed it (its signature was checked there); it gets
        its symbol name on first use."""
        sub = self.subs.get(fn)
        if sub is None:
            tf = self.typed_module.by_fn.get(fn)
            assert tf is not None and all(t is not None for _, t in tf.params), \
                f"{file}:{node.lineno}: call to '{fn.__name__}' was not typed"
            sub = Subprogram(fn, self.fn_names[tf.node], list(tf.params), tf.ret)
            sub.node, sub.file = tf.node, tf.file
            self.subs[fn] = sub
            self.sub_queue.append(sub)
        return sub

    def lower_function(self, fl: FunctionLowering, params_di: list, ret_di: str, header: str, entry_code):
        ir = self.ir
        node = fl.node
        file_md = ir.difile(fl.file)
        sp = ir._reserve()
        fl.scope = sp
        args_md = []
        for i, (pname, di) in enumerate(params_di):
            args_md.append(ir.meta(f'!DILocalVariable(name: "{pname}", arg: {i + 1}, scope: {sp}, file: {file_md}, '
                                   f"line: {node.lineno}, type: {di})", distinct=True))
        sty = ir.meta(f"!DISubroutineType(types: !{{{', '.join([ret_di] + [d for _, d in params_di])}}})")
        flags = "DISPFlagDefinition | DISPFlagOptimized" + (" | DISPFlagLocalToUnit" if "internal" in header else "")
        ir.set_md(sp, f'distinct !DISubprogram(name: "{fl.llname}", scope: {file_md}, file: {file_md}, '
                      f"line: {node.lineno}, type: {sty}, scopeLine: {node.lineno}, flags: DIFlagPrototyped, "
                      f"spFlags: {flags}, unit: {ir.cu}, retainedNodes: !{{{', '.join(args_md)}}})")
        fl.lines.append("entry:")
        fl.at(node)
        entry_code()
        body = node.body
        fl.lower_body(body)
        if not fl.term:
            fl.cur_loc = ir.loc(getattr(body[-1], "end_lineno", node.lineno) or node.lineno, 1, sp)
            if fl.ret_type is None:
                fl.terminate("ret void")
            else:
                fl.terminate(f"ret {lt(fl.ret_type)} 0")
        lines = [fl.lines[0]] + fl.allocas + fl.lines[1:]
        ir.functions.append(f"{header} !dbg {sp} {{\n" + "\n".join(lines) + "\n}\n")

    def describe(self) -> str:
        """The typed program: each function with its locals' types (`pybpfc dump --types`)."""
        return self.typed_module.describe(self.info)

    def lower_program(self, p):
        decl = p.decl
        pc = ProgramCtx(decl)
        kind = decl.kind
        node = p.node
        fl = FunctionLowering(self, p.fn, node, p.file, pc, p.name)
        tf = self.typed_module.function(node)
        pc.fields, pc.packet = tf.ctx_fields, tf.packet
        fl.ctx_name, fl.ctx_ref = tf.ctx_name, "%ctx"
        by_name = {q.arg: q for q in node.args.args}
        typed = [(by_name[name], t) for name, t in tf.params]

        def entry():
            for i, (q, t) in enumerate(typed):
                if kind in ("uprobe", "kprobe"):
                    off = PT_REGS[ARG_REGS[i]] if i < 6 else 0
                elif kind in ("uretprobe", "kretprobe"):
                    off = PT_REGS["ax"]
                else:
                    off = 8 * i
                fl.at(q)
                raw = fl.emit(f"load i64, ptr {fl.gep('%ctx', off)}, align 8")
                var = fl.local_slot(q.arg, "int", t, q)
                fl.store_int(var.slot, t, fl.convert(raw, U_u64(), t))

        void_ptr = self.ir.ptr_to("null")
        int_di = self.ir.int_di()
        header = f'define dso_local i32 @{p.name}(ptr noundef %ctx) #0 section "{decl.section}"'
        self.lower_function(fl, [(fl.ctx_name or "ctx", void_ptr)], int_di, header, entry)

    def lower_sub(self, sub: Subprogram):
        fl = FunctionLowering(self, sub.fn, sub.node, sub.file, None, sub.llname)
        fl.ret_type = sub.ret
        params_di, decls = [], []
        for i, (pname, t) in enumerate(sub.params):
            if is_int(t):
                decls.append(f"{lt(t)} %a{i}")
                params_di.append((pname, self.ir.ditype(t)))
            else:
                decls.append(f"ptr %a{i}")
                params_di.append((pname, self.ir.ptr_to(self.ir.ditype(t))))

        def entry():
            for i, (pname, t) in enumerate(sub.params):
                if is_int(t):
                    var = fl.local_slot(pname, "int", t, sub.node)
                    fl.store_int(var.slot, t, f"%a{i}")
                else:
                    from .lower import V
                    fl.bind_ref(pname, V("mem", t, f"%a{i}"), sub.node)

        rt = "void" if sub.ret is None else lt(sub.ret)
        ret_di = "null" if sub.ret is None else self.ir.ditype(sub.ret)
        header = f'define internal {rt} @{sub.llname}({", ".join(decls)}) #1 section ".text"'
        self.lower_function(fl, params_di, ret_di, header, entry)

    def run(self):
        if self.diags.items:
            return   # the typing pass reported errors: there is no typed program to lower
        info = self.info
        for p in info.programs:
            self.lower_program(p)
        while self.sub_queue:
            self.lower_sub(self.sub_queue.pop(0))
        self.emit_maps()
        lic = info.license.encode() + b"\0"
        gve = self.ir.global_var("LICENSE", self.ir.array_type(
            self.ir.meta('!DIBasicType(name: "char", size: 8, encoding: DW_ATE_signed_char)'), len(lic), 8), 1)
        self.ir.globals.append(f'@LICENSE = dso_local global [{len(lic)} x i8] c"{esc(lic)}", section "license", '
                               f"align 1, !dbg {gve}")


def U_u64():
    from ..lang.types import u64
    return u64

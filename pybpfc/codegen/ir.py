"""LLVM IR text for one module: globals, functions, and the debug-info metadata LLVM's BPF
backend turns into .BTF/.BTF.ext (struct layouts, map definitions, func_info, line_info)."""
from __future__ import annotations

import os

from ..frontend.typing import bits, is_int, signed
from ..lang.types import Array, Str, Struct, bool_

DATALAYOUT = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"


def esc(b: bytes) -> str:
    return "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\{c:02X}" for c in b)


class ModuleIR:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.md: list[str] = []
        self._md_index: dict[str, str] = {}
        self.globals: list[str] = []
        self.functions: list[str] = []
        self.declares: set[str] = set()
        self.cu_globals: list[str] = []
        self.files: dict[str, str] = {}
        self._types: dict = {}
        self.cu = self._reserve()
        self.file = self.difile(self.path)
        self.str_count = 0

    # ---- metadata -----------------------------------------------------------------------
    def _reserve(self) -> str:
        self.md.append("")
        return f"!{len(self.md) - 1}"

    def set_md(self, ref: str, text: str):
        self.md[int(ref[1:])] = text

    def meta(self, text: str, distinct: bool = False) -> str:
        if not distinct and text in self._md_index:
            return self._md_index[text]
        self.md.append(("distinct " if distinct else "") + text)
        ref = f"!{len(self.md) - 1}"
        if not distinct:
            self._md_index[text] = ref
        return ref

    def difile(self, path: str) -> str:
        path = os.path.abspath(path)
        if path not in self.files:
            self.files[path] = self.meta(f'!DIFile(filename: "{os.path.basename(path)}", '
                                         f'directory: "{os.path.dirname(path)}")')
        return self.files[path]

    def loc(self, line: int, col: int, scope: str) -> str:
        return self.meta(f"!DILocation(line: {max(line, 0)}, column: {max(col, 0)}, scope: {scope})")

    def ditype(self, t) -> str:
        """Debug type for a pybpfc type; Structs become named DICompositeTypes (BTF STRUCT)."""
        if t in self._types:
            return self._types[t]
        if t is None:
            return "null"
        if t is bool_:
            r = self.meta('!DIBasicType(name: "bool", size: 8, encoding: DW_ATE_boolean)')
        elif is_int(t):
            enc = "DW_ATE_signed" if signed(t) else "DW_ATE_unsigned"
            r = self.meta(f'!DIBasicType(name: "{t.__name__}", size: {bits(t)}, encoding: {enc})')
        elif isinstance(t, type) and issubclass(t, Str):
            char = self.meta('!DIBasicType(name: "char", size: 8, encoding: DW_ATE_signed_char)')
            r = self.array_type(char, t._len, 8)
        elif isinstance(t, type) and issubclass(t, Array):
            r = self.array_type(self.ditype(t._elem), t._len, t._elem._size * 8)
        elif isinstance(t, type) and issubclass(t, Struct):
            r = self._reserve()
            self._types[t] = r
            file = self.file
            try:
                import inspect
                file = self.difile(inspect.getsourcefile(t) or self.path)
                line = inspect.getsourcelines(t)[1]
            except (OSError, TypeError):
                line = 0
            members = []
            for name, ft, off in t._fields_:
                members.append(self.meta(
                    f'!DIDerivedType(tag: DW_TAG_member, name: "{name}", scope: {r}, file: {file}, line: {line}, '
                    f"baseType: {self.ditype(ft)}, size: {ft._size * 8}, offset: {off * 8})"))
            self.set_md(r, f'distinct !DICompositeType(tag: DW_TAG_structure_type, name: "{t.__name__}", '
                           f"file: {file}, line: {line}, size: {t._size * 8}, align: {t._align * 8}, "
                           f"elements: !{{{', '.join(members)}}})")
            return r
        else:
            raise TypeError(f"no debug type for {t!r}")
        self._types[t] = r
        return r

    def array_type(self, elem: str, n: int, elem_bits: int) -> str:
        sub = self.meta(f"!DISubrange(count: {n})")
        return self.meta(f"!DICompositeType(tag: DW_TAG_array_type, baseType: {elem}, size: {elem_bits * n}, "
                         f"elements: !{{{sub}}})")

    def ptr_to(self, di: str) -> str:
        return self.meta(f"!DIDerivedType(tag: DW_TAG_pointer_type, baseType: {di}, size: 64)")

    def int_di(self) -> str:
        return self.meta('!DIBasicType(name: "int", size: 32, encoding: DW_ATE_signed)')

    def global_var(self, name: str, di_type: str, line: int, annotations: list | None = None,
                   local: bool = False) -> str:
        ann = ""
        if annotations:
            items = [self.meta(f'!{{!"btf_decl_tag", !"{a}"}}') for a in annotations]
            ann = f", annotations: !{{{', '.join(items)}}}"
        var = self.meta(f'!DIGlobalVariable(name: "{name}", scope: {self.cu}, file: {self.file}, line: {line}, '
                        f"type: {di_type}, isLocal: {'true' if local else 'false'}, isDefinition: true{ann})",
                        distinct=True)
        gve = self.meta(f"!DIGlobalVariableExpression(var: {var}, expr: !DIExpression())")
        self.cu_globals.append(gve)
        return gve

    def cstring(self, data: bytes, section: str = ".rodata.str1.1") -> str:
        """A private constant string (format strings for trace_printk)."""
        self.str_count += 1
        name = f"@.str.{self.str_count}"
        self.globals.append(f'{name} = private unnamed_addr constant [{len(data)} x i8] c"{esc(data)}", '
                            f'align 1')
        return name

    # ---- text ---------------------------------------------------------------------------
    def text(self) -> str:
        cu_globals = self.meta(f"!{{{', '.join(self.cu_globals)}}}") if self.cu_globals else "!{}"
        self.set_md(self.cu, f"distinct !DICompileUnit(language: DW_LANG_C11, file: {self.file}, "
                             f'producer: "pybpfc", isOptimized: true, runtimeVersion: 0, emissionKind: FullDebug, '
                             f"globals: {cu_globals}, splitDebugInlining: false, nameTableKind: None)")
        f1 = self.meta('!{i32 7, !"Dwarf Version", i32 5}')
        f2 = self.meta('!{i32 2, !"Debug Info Version", i32 3}')
        out = [f'target datalayout = "{DATALAYOUT}"', 'target triple = "bpfel"', ""]
        out += self.globals + [""] + sorted(self.declares) + [""] + self.functions
        out += ['attributes #0 = { nounwind }', 'attributes #1 = { noinline nounwind }', ""]
        out.append(f"!llvm.dbg.cu = !{{{self.cu}}}")
        out.append(f"!llvm.module.flags = !{{{f1}, {f2}}}")
        out += [f"!{i} = {t}" for i, t in enumerate(self.md)]
        return "\n".join(out) + "\n"

"""The typing pass on its own: the typed program (locals, expression types, None-ness, callees,
event types) that codegen consumes, checked without lowering anything."""
from __future__ import annotations

import ast
import os

import pytest
from compiler_helpers import write
from test_compiler_errors import CASES

from pybpfc.frontend.module import Diagnostics, load_module
from pybpfc.frontend.typer import T, type_module
from pybpfc.lang.types import Str, bool_, i32, i64, u8, u16, u32, u64

HERE = os.path.dirname(os.path.abspath(__file__))


def typed(path):
    diags = Diagnostics()
    info = load_module(path, diags)
    assert info is not None and not diags.items, diags.items
    return info, type_module(info)


def locals_of(tf):
    return {n: (v.kind, v.ty) for n, v in tf.locals.items()}


def nodes(tf, src_text):
    """The expression nodes of tf whose source text is src_text, in source order."""
    found = [n for n in ast.walk(tf.node) if isinstance(n, ast.expr) and ast.unparse(n) == src_text]
    assert found, src_text
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def test_flows_program_is_typed_before_lowering():
    info, tm = typed(os.path.join(HERE, "programs", "flows.py"))
    assert [f.name for f in tm.functions] == ["track", "swap16", "fill_key"]
    track, swap16, fill_key = tm.functions
    assert track.kind == "xdp" and track.ret is i32 and track.ctx_name == "ctx" and track.packet == (0, 4)
    m = info.module
    assert locals_of(track) == {"eth": ("ref", m.EthHdr), "ip": ("ref", m.IpHdr), "size": ("int", u16),
                                "ports": ("ref", m.Ports), "key": ("ref", m.FlowKey), "st": ("ref", m.FlowStats),
                                "now": ("int", u64), "ev": ("ref", m.NewFlow)}
    assert track.locals["st"].nullable and not track.locals["key"].nullable
    assert swap16.params == [("x", u16)] and swap16.ret is u16 and locals_of(swap16) == {"x": ("int", u16)}
    assert fill_key.ret is None and [t for _, t in fill_key.params] == [m.FlowKey, m.IpHdr, m.Ports]
    assert ("function", "swap16") in track.callees and ("function", "fill_key") in track.callees
    assert tm.events[id(m.new_flows)] is m.NewFlow
    # the shift keeps the left operand's type; the literal mask does not widen u16
    body = nodes(swap16, "(x & 255) << 8 | x >> 8")[0]
    assert swap16.type_of(body) == T("int", u16)
    # None-ness follows the checks: optional before `if st is not None`, a plain reference inside
    st_uses = nodes(track, "st")
    assert track.type_of(st_uses[1]) == T("mem", m.FlowStats, nullable=True)     # in `st is not None`
    assert track.type_of(st_uses[2]) == T("mem", m.FlowStats)                     # st.packets += 1


def test_integer_expression_types(tmp_path):
    path = write(tmp_path, """
        counts = HashMap(u32, u64, max_entries=4)

        @bpf.xdp
        def prog(ctx) -> int:
            a = bpf.pid()
            e: u8 = 200
            wide = e * 256
            k = 3 * 4
            m = min(a, e)
            both = a - 1 if a > 2 else 7
            n = counts[a]
            neg = -a
            ok = a > 2 and e < 9
            s = bpf.comm()
            big = a << 4 >> 4
            return XDP_PASS
        """)
    _, tm = typed(path)
    (tf,) = tm.functions
    assert locals_of(tf) == {"a": ("int", u32), "e": ("int", u8), "wide": ("int", u16), "k": ("int", i64),
                             "m": ("int", u32), "both": ("int", u32), "n": ("int", u64), "neg": ("int", u32),
                             "ok": ("int", bool_), "s": ("ref", Str[16]), "big": ("int", u32)}
    assert tf.type_of(nodes(tf, "3 * 4")[0]) == T("lit", val=12)       # folded, typed at its use
    assert tf.type_of(nodes(tf, "e * 256")[0]) == T("int", u16)
    assert tf.type_of(nodes(tf, "counts")[0]).kind == "map"
    assert tf.type_of(nodes(tf, "bpf.pid")[0]) == T("method", val=("bpf", "pid"))
    assert ("helper", "trace_printk") not in tf.callees and ("bpf", "comm") in tf.callees


def test_wrong_statements_stay_untyped_and_the_rest_is_typed(tmp_path):
    path = write(tmp_path, """
        @bpf.xdp
        def prog(ctx) -> int:
            x = nowhere + 1
            y = bpf.pid()
            z = y / 2
            return x
        """)
    diags = Diagnostics()
    info = load_module(path, diags)
    tm = type_module(info)             # reports nothing: codegen reports the errors
    (tf,) = tm.functions
    assert locals_of(tf) == {"y": ("int", u32)}
    assert tf.type_of(nodes(tf, "y / 2")[0]) is None and tf.type_of(nodes(tf, "x")[0]) is None


def test_probe_arguments_and_nullable_lookups(tmp_path):
    path = write(tmp_path, """
        class Ev(Struct):
            pid: u32
            arg: u64

        seen = HashMap(u32, Ev, max_entries=8)
        out = RingBuf(max_entries=4096)

        @bpf.uprobe("/bin/true:main")
        def probe(ctx, argc: i32, argv: u64) -> int:
            e = seen.lookup(bpf.pid())
            if e is None:
                return 0
            e.arg = argv
            out.output(e)
            return 0
        """)
    info, tm = typed(path)
    (tf,) = tm.functions
    ev = info.module.Ev
    assert tf.kind == "uprobe" and tf.ctx_fields["ip"] == (128, u64, False)
    assert list(tf.locals) == ["argc", "argv", "e"] and tf.locals["e"].ty is ev and tf.locals["e"].nullable
    assert tf.type_of(nodes(tf, "seen.lookup(bpf.pid())")[0]) == T("mem", ev, nullable=True)
    assert tf.type_of(nodes(tf, "e.arg")[0]) == T("mem", u64)
    assert tm.events[id(info.module.out)] is ev


def test_dump_types_prints_the_typed_program(tmp_path):
    from pybpfc.codegen import describe_types

    path = write(tmp_path, """
        @bpf.xdp
        def prog(ctx) -> int:
            a = bpf.ktime_ns()
            b = u16(a)
            return XDP_PASS
        """)
    out = describe_types(path)
    assert "prog (xdp, section xdp) -> i32" in out and "    a: u64\n    b: u16\n" in out



def typer_errors(tmp_path, src):
    """What the typing pass alone reports for a program (None if the frontend rejects it first)."""
    diags = Diagnostics()
    info = load_module(write(tmp_path, "from pybpfc import *\n" + src, header=False), diags)
    if info is None or diags.items:
        return None
    type_module(info, None, diags)
    return [(d.line, d.col, d.message) for d in sorted(diags.items, key=lambda d: (d.line, d.col))]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@pytest.mark.parametrize("name,src,expected", CASES, ids=[c[0] for c in CASES])
def test_the_typer_reports_the_invalid_programs_errors(tmp_path, name, src, expected):
    got = typer_errors(tmp_path, src)
    if got is None:
        pytest.skip("rejected before typing (syntax, import, no programs)")
    assert got == expected


def test_lowering_runs_only_on_programs_the_typer_accepted(tmp_path):
    from pybpfc.codegen.module import ModuleLowering

    def lower(body):
        diags = Diagnostics()
        info = load_module(write(tmp_path, "@bpf.xdp\ndef prog(ctx) -> int:\n" + body), diags)
        ml = ModuleLowering(info, diags)
        ml.run()
        return [(d.line, d.col, d.message) for d in diags.items], ml.ir.functions

    errors, functions = lower("    x = bpf.pid()\n    y = x.field\n    return z\n")
    assert errors == [(6, 9, "u32 value has no attribute 'field'"), (7, 12, "name 'z' is not defined")]
    assert functions == []
    errors, functions = lower("    x = bpf.pid()\n    return x & 1\n")
    assert errors == [] and len(functions) == 1 and "@prog(" in functions[0]


MUTATIONS = [(r"\b\d+\b", "1.5"), (r"\b\d+\b", "300"), (r"\b\d+\b", "(1 << 70)"), (r"\bis not None\b", "is None"),
             (r"\bis None\b", "is not None"), (r"(?<![.\w])([a-z_]\w*)\b(?!\s*[(=])", "nope"),
             (r"(?<![.\w])([a-z_]\w*)\b(?!\s*[(=])", r"\1.x"), (r"\+=", "/="), (r"==", "is"),
             (r"\bu(8|16|32|64)\b", "i8"), (r"return .*", "pass"), (r"\.lookup\(", ".get("), (r"=", "+=")]


def test_mutated_programs_fail_in_typing_or_lower_cleanly(tmp_path):
    """Programs the typer accepts always lower (lowering's checks are invariants): mutants of a
    real program either get located errors from typing or compile, never an internal error."""
    import re

    from pybpfc.codegen import lower_module
    from pybpfc.errors import CompileError

    lines = open(os.path.join(HERE, "programs", "flows.py")).read().split("\n")
    body = [i for i, ln in enumerate(lines) if ln.startswith("    ") and ln.strip() and not ln.strip().startswith("#")
            and i > 50]
    outcomes = {"ok": 0, "errors": 0}
    for n, i in enumerate(body):
        for pat, rep in MUTATIONS:
            mutated = re.sub(pat, rep, lines[i], count=1)
            if mutated == lines[i]:
                continue
            path = tmp_path / f"m{n}_{MUTATIONS.index((pat, rep))}.py"
            path.write_text("\n".join(lines[:i] + [mutated] + lines[i + 1:]))
            try:
                lower_module(str(path))
                outcomes["ok"] += 1
            except CompileError as e:
                assert all(d.file == str(path) and d.line > 0 for d in e.diagnostics)
                outcomes["errors"] += 1
    assert outcomes["ok"] >= 10 and outcomes["errors"] >= 100, outcomes


def test_types_decided_inside_a_node_are_recorded(tmp_path):
    # lowering reads these instead of re-deriving them: comparison operands, min/max and `**`
    # steps, `x op= y`, loop variables
    info, tm = typed(write(tmp_path, """
        @bpf.xdp
        def prog(ctx) -> int:
            a = u8(ctx.ingress_ifindex)
            b = i32(ctx.rx_queue_index)
            c = u32(3)
            m = min(a, c)
            n = max(c, b)
            p = a ** 3
            a += 300
            for i in range(a, u16(9)):
                pass
            return 1 if c < b else 0
        """))
    tf = tm.functions[0]
    steps = tf.steps
    assert steps[(nodes(tf, "min(a, c)")[0], "minmax", 0)] == (u32, False)
    assert steps[(nodes(tf, "max(c, b)")[0], "minmax", 0)] == (i64, True)   # u32 with i32: by value
    pw = nodes(tf, "a ** 3")[0]
    assert steps[(pw, "pow")] is u8 and [steps[(pw, "pow", i)] for i in (1, 2)] == [u8, u8]
    aug = next(s for s in ast.walk(tf.node) if isinstance(s, ast.AugAssign))
    assert steps[(aug, "aug")] is u16     # the literal widens the step; the result is stored into u8
    loop = next(s for s in ast.walk(tf.node) if isinstance(s, ast.For))
    assert steps[(loop, "for")] is u16 and tf.locals["i"].ty is u16
    assert steps[(nodes(tf, "c < b")[0], "cmp", 0)] is None                 # mixed signedness


def test_dump_types_names_symbols_as_the_object_does_without_lowering(tmp_path, monkeypatch):
    import io

    import elftools.elf.elffile as E

    import pybpfc
    from pybpfc.codegen import module as codegen_module
    from pybpfc.frontend.typer import describe_types

    (tmp_path / "typer_helpers.py").write_text("from pybpfc import *\n\ndef prog(x: u32) -> u32:\n    return x + 1\n")
    path = write(tmp_path, """
        from typer_helpers import prog as inc

        @bpf.xdp
        def prog(ctx) -> int:
            return inc(ctx.rx_queue_index)
        """)
    obj = pybpfc.compile(path)
    syms = {s.name for s in E.ELFFile(io.BytesIO(obj)).get_section_by_name(".symtab").iter_symbols()}
    assert {"prog", "prog_"} <= syms

    def no_lowering(*a, **k):
        raise AssertionError("dump --types lowered the program")
    monkeypatch.setattr(codegen_module.ModuleLowering, "run", no_lowering)
    out = describe_types(path)
    assert "prog (xdp, section xdp) -> i32" in out and "prog_ (subprogram, section .text) -> u32" in out

"""Invalid programs: each gives its expected messages at the expected line:col, never a traceback."""
from __future__ import annotations

import pytest

import pybpfc
from compiler_helpers import compile_errors

# (name, source after `from pybpfc import *` on line 1, [(line, col, message)])
CASES = [
    ('float',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 1.5\n    return 0\n',
     [(4, 9, 'floating-point numbers are not supported in BPF programs')]),
    ('truediv',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 7\n    return x / 2\n',
     [(5, 12, "'/' is true division (floats); BPF programs have only integers")]),
    ('list',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = [1, 2]\n    return 0\n',
     [(4, 9, 'a list is not supported in BPF programs')]),
    ('dict',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = {}\n    return 0\n',
     [(4, 9, 'a dict is not supported in BPF programs')]),
    ('try',
     '@bpf.xdp\ndef p(ctx) -> int:\n    try:\n        pass\n    except Exception:\n        pass\n    return 0\n',
     [(4, 5, 'try/except statements are not supported in BPF programs')]),
    ('raise',
     '@bpf.xdp\ndef p(ctx) -> int:\n    raise ValueError()\n',
     [(4, 5, 'raise statements are not supported in BPF programs')]),
    ('lambda',
     '@bpf.xdp\ndef p(ctx) -> int:\n    f = lambda x: x\n    return 0\n',
     [(4, 9, 'lambda is not supported in BPF programs')]),
    ('undefined',
     '@bpf.xdp\ndef p(ctx) -> int:\n    return foo\n',
     [(4, 12, "name 'foo' is not defined")]),
    ('nonecheck',
     'm = HashMap(u32, u64, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    v = m.lookup(1)\n    return v\n',
     [(6, 12, "'v' may be None here")]),
    ('nonecheck_field',
     'class S(Struct):\n    a: u32\nm = HashMap(u32, S, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    v = m.lookup(1)\n    v.a = 3\n    return 0\n',
     [(8, 5, "'v' may be None here")]),
    ('reserve_nocheck',
     'class E(Struct):\n    a: u32\nrb = RingBuf()\n@bpf.xdp\ndef p(ctx) -> int:\n    e = rb.reserve(E)\n    e.a = 1\n    rb.submit(e)\n    return 0\n',
     [(8, 5, "'e' may be None here"), (9, 15, "'e' may be None here")]),
    ('packet_nocheck',
     'class H(Struct):\n    a: u32\n@bpf.xdp\ndef p(ctx) -> int:\n    h = ctx.packet(H, 0)\n    return h.a\n',
     [(7, 12, "'h' may be None here")]),
    ('literal_range',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x: u8 = 300\n    return 0\n',
     [(4, 13, 'literal 300 does not fit in u8')]),
    ('unbounded_for',
     '@bpf.xdp\ndef p(ctx) -> int:\n    for x in ctx:\n        pass\n    return 0\n',
     [(4, 14, 'for loops must iterate over range(...)')]),
    ('recursion',
     'def f(n: u32) -> u32:\n    return f(n - 1)\n@bpf.xdp\ndef p(ctx) -> int:\n    return f(3)\n',
     [(3, 12, "recursive call to 'f': BPF programs cannot recurse")]),
    ('arbitrary_call',
     'import os\n@bpf.xdp\ndef p(ctx) -> int:\n    return os.getpid()\n',
     [(5, 12, "'os.getpid' is plain Python; it cannot run in a BPF program")]),
    ('bad_field',
     'class S(Struct):\n    a: u32\nm = HashMap(u32, S, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    v = m.lookup(1)\n    if v is None:\n        return 0\n    return v.b\n',
     [(10, 12, "S has no field 'b'")]),
    ('bad_helper',
     '@bpf.xdp\ndef p(ctx) -> int:\n    return bpf.no_such_helper()\n',
     [(4, 12, 'bpf.no_such_helper: no such helper')]),
    ('helper_args',
     '@bpf.xdp\ndef p(ctx) -> int:\n    return bpf.ktime_get_ns(1)\n',
     [(4, 29, 'bpf.ktime_get_ns() takes 0 arguments')]),
    ('no_tp',
     '@bpf.tracepoint("nosuch/thing")\ndef p(ctx) -> int:\n    return 0\n',
     [(2, 2, "tracepoint 'nosuch/thing' not found (no format file under /sys/kernel/tracing/events)")]),
    ('tp_field',
     '@bpf.tracepoint("syscalls/sys_enter_openat")\ndef p(ctx) -> int:\n    return ctx.nosuch\n',
     [(4, 12, "the tracepoint context has no field 'nosuch'")]),
    ('index_range',
     'class S(Struct):\n    a: Array[u32, 4]\nm = ArrayMap(u32, S, max_entries=1)\n@bpf.xdp\ndef p(ctx) -> int:\n    v = m.lookup(0)\n    if v is None:\n        return 0\n    return v.a[4]\n',
     [(10, 16, 'index 4 is out of range for Array[u32, 4]')]),
    ('str_too_long',
     'class S(Struct):\n    n: Str[4]\nm = ArrayMap(u32, S, max_entries=1)\n@bpf.xdp\ndef p(ctx) -> int:\n    v = m.lookup(0)\n    if v is None:\n        return 0\n    v.n = b"toolong"\n    return 0\n',
     [(10, 11, '7 bytes do not fit in Str[4]')]),
    ('assign_map',
     'm = HashMap(u32, u64, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    m = 3\n    return 0\n',
     [(5, 5, "cannot assign to map 'm'")]),
    ('global_noglobal',
     'g: Global[u64] = 0\n@bpf.xdp\ndef p(ctx) -> int:\n    g += 1\n    return 0\n',
     [(5, 5, "assigning the module global 'g' needs `global g` first")]),
    ('const_write',
     'c: Const[u64] = 1\n@bpf.xdp\ndef p(ctx) -> int:\n    global c\n    c = 2\n    return 0\n',
     [(6, 5, "'c' is a Const; programs cannot change it")]),
    ('struct_value_index',
     'class S(Struct):\n    a: u32\nm = HashMap(u32, S, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    return m[1]\n',
     [(7, 12, 'reading m[key] works for integer values; this map holds S')]),
    ('augassign_struct_map',
     'class S(Struct):\n    a: u32\nm = HashMap(u32, S, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    m[1] += 1\n    return 0\n',
     [(7, 5, 'm[key] += n needs integer values; this map holds S')]),
    ('call_program',
     '@bpf.xdp\ndef q(ctx) -> int:\n    return 0\n@bpf.xdp\ndef p(ctx) -> int:\n    return q(ctx)\n',
     [(7, 12, "'q' is a BPF program; programs cannot be called")]),
    ('subprog_noann',
     'def f(x):\n    return x\n@bpf.xdp\ndef p(ctx) -> int:\n    return f(1)\n',
     [(2, 7, "parameter 'x' needs a type annotation")]),
    ('subprog_args',
     'def f(x: u32) -> u32:\n    return x\n@bpf.xdp\ndef p(ctx) -> int:\n    return f(1, 2)\n',
     [(6, 12, 'f() takes 1 arguments, got 2')]),
    ('break_outside',
     '@bpf.xdp\ndef p(ctx) -> int:\n    break\n',
     [(4, 5, "syntax error: 'break' outside loop")]),
    ('while_else',
     '@bpf.xdp\ndef p(ctx) -> int:\n    while False:\n        pass\n    else:\n        pass\n    return 0\n',
     [(4, 5, 'while ... else is not supported')]),
    ('range_step',
     '@bpf.xdp\ndef p(ctx) -> int:\n    s = 0\n    for i in range(0, 10, s):\n        pass\n    return 0\n',
     [(5, 27, 'range() step must be a non-zero constant')]),
    ('div_zero',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 5\n    return x // 0\n',
     [(5, 12, 'division by zero')]),
    ('shift_range',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x: u32 = 5\n    return x << 40\n',
     [(5, 12, 'shift by 40 is out of range for u32')]),
    ('in_op',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 5\n    return 1 if x in (1, 2) else 0\n',
     [(5, 17, "'in' is not supported")]),
    ('is_int',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 5\n    return 1 if x is 3 else 0\n',
     [(5, 17, "'is' compares only with None")]),
    ('packet_socket',
     'class H(Struct):\n    a: u32\n@bpf.socket_filter\ndef p(skb) -> int:\n    h = skb.packet(H, 0)\n    return 0\n',
     [(6, 9, 'ctx.packet() is not available in socket_filter programs')]),
    ('ctx_write',
     '@bpf.xdp\ndef p(ctx) -> int:\n    ctx.ingress_ifindex = 3\n    return 0\n',
     [(4, 5, 'program context fields are read-only')]),
    ('print_many',
     '@bpf.xdp\ndef p(ctx) -> int:\n    a = 1\n    print(f"{a} {a} {a} {a}")\n    return 0\n',
     [(5, 5, 'print() can show at most 3 values (bpf_trace_printk), got 4')]),
    ('fstring_outside',
     '@bpf.xdp\ndef p(ctx) -> int:\n    a = 1\n    s = f"{a}"\n    return 0\n',
     [(5, 9, 'an f-string is not supported in BPF programs')]),
    ('assert_false',
     '@bpf.xdp\ndef p(ctx) -> int:\n    assert 1 == 2, "nope"\n    return 0\n',
     [(4, 5, 'assertion failed at compile time: nope')]),
    ('assert_runtime',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = bpf.ktime_get_ns()\n    assert x > 0\n    return 0\n',
     [(5, 5, 'assert needs a condition known at compile time')]),
    ('with',
     "@bpf.xdp\ndef p(ctx) -> int:\n    with open('x') as f:\n        pass\n    return 0\n",
     [(4, 5, 'with statements are not supported in BPF programs')]),
    ('nested_def',
     '@bpf.xdp\ndef p(ctx) -> int:\n    def g():\n        pass\n    return 0\n',
     [(4, 5, 'nested function definitions are not supported in BPF programs')]),
    ('type_change',
     'class S(Struct):\n    a: u32\nm = HashMap(u32, S, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    x = 1\n    x = m.lookup(1)\n    return 0\n',
     [(8, 5, "'x' holds an integer; cannot assign S to it")]),
    ('reserve_nontype',
     'rb = RingBuf()\n@bpf.xdp\ndef p(ctx) -> int:\n    e = rb.reserve(5)\n    return 0\n',
     [(5, 20, 'reserve() takes a type, e.g. events.reserve(Event)')]),
    ('map_method',
     'm = HashMap(u32, u64, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    m.push(1)\n    return 0\n',
     [(5, 5, "HashMap has no method 'push'")]),
    ('array_delete',
     'm = ArrayMap(u32, u64, max_entries=4)\n@bpf.xdp\ndef p(ctx) -> int:\n    m.delete(1)\n    return 0\n',
     [(5, 5, 'array map entries cannot be deleted')]),
    ('two_errors',
     '@bpf.xdp\ndef p(ctx) -> int:\n    a = 1.0\n    b = [1]\n    return 0\n',
     [(4, 9, 'floating-point numbers are not supported in BPF programs'), (5, 9, 'a list is not supported in BPF programs')]),
    ('module_raise',
     'x = 1 // 0\n@bpf.xdp\ndef p(ctx) -> int:\n    return 0\n',
     [(2, 1, 'module-level code raised ZeroDivisionError: integer division or modulo by zero')]),
    ('syntax',
     '@bpf.xdp\ndef p(ctx) -> int:\n    return (\n',
     [(4, 12, "syntax error: '(' was never closed")]),
    ('no_programs',
     'x = 1\n',
     [(1, 1, 'no BPF programs found')]),
    ('kwargs_subprog',
     'def f(x: u32) -> u32:\n    return x\n@bpf.xdp\ndef p(ctx) -> int:\n    return f(x=1)\n',
     [(6, 12, 'keyword arguments are not supported in calls to BPF functions')]),
    ('typed_param_xdp',
     '@bpf.xdp\ndef p(ctx, x: u32) -> int:\n    return 0\n',
     [(3, 12, 'xdp programs take only the context parameter')]),
    ('uprobe_noann',
     '@bpf.uprobe("libc:malloc")\ndef p(ctx, size) -> int:\n    return 0\n',
     [(3, 12, "parameter 'size' needs a type annotation")]),
    ('event_mismatch',
     'class A(Struct):\n    a: u32\nclass B(Struct):\n    b: u64\nrb = RingBuf()\n@bpf.xdp\ndef p(ctx) -> int:\n    rb.output(A(a=1))\n    rb.output(B(b=1))\n    return 0\n',
     [(10, 5, 'this buffer already carries A; one event type per buffer')]),
    ('used_before',
     '@bpf.xdp\ndef p(ctx) -> int:\n    if ctx.ingress_ifindex:\n        y = 1\n    return z\n',
     [(6, 12, "name 'z' is not defined")]),
    ('pow_var',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x = 2\n    return 2 ** x\n',
     [(5, 12, "'**' needs a small constant exponent")]),
    ('str_lt',
     '@bpf.xdp\ndef p(ctx) -> int:\n    c = bpf.comm()\n    return 1 if c < b"a" else 0\n',
     [(5, 17, 'Str values compare only with == and !=')]),
    ('yield',
     '@bpf.xdp\ndef p(ctx) -> int:\n    yield 1\n',
     [(4, 5, 'yield is not supported in BPF programs')]),
    ('starred',
     'def f(a: u32) -> u32:\n    return a\n@bpf.xdp\ndef p(ctx) -> int:\n    t = 1\n    return f(*t)\n',
     [(7, 14, '*unpacking is not supported in BPF programs')]),
    ('float_global',
     'RATE = 0.5\n@bpf.xdp\ndef p(ctx) -> int:\n    return RATE\n',
     [(5, 12, "'RATE' is a float; BPF programs have no floating point")]),
    ('bad_annotation',
     '@bpf.xdp\ndef p(ctx) -> int:\n    x: str = 1\n    return 0\n',
     [(4, 8, 'not a pybpfc type')]),
]

CASES += [
    ("unused_compare", "@bpf.xdp\ndef p(ctx) -> int:\n    x = 1\n    x == 2\n    return x\n",
     [(5, 5, "the result of this comparison is unused")]),
    ("no_effect", "@bpf.xdp\ndef p(ctx) -> int:\n    x = 1\n    x + 1\n    return x\n",
     [(5, 5, "this expression has no effect")]),
    ("program_returns_none", "@bpf.xdp\ndef p(ctx) -> None:\n    return\n",
     [(3, 15, "BPF programs return an int")]),
]


@pytest.mark.parametrize("name,src,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_program(tmp_path, name, src, expected):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        diags = compile_errors(tmp_path, "from pybpfc import *\n" + src, header=False)
    assert [(d.line, d.col, d.message) for d in diags] == expected
    assert all(d.file.endswith("prog.py") for d in diags)


def test_rendering_has_location_source_caret_and_hint(tmp_path):
    diags = compile_errors(tmp_path, "from pybpfc import *\n@bpf.xdp\ndef p(ctx) -> int:\n    return 7 / 2\n",
                           header=False)
    text = str(pybpfc.CompileError(diags))
    lines = text.splitlines()
    assert lines[0].endswith("prog.py:4:12: error: '/' is true division (floats); BPF programs have only integers")
    assert lines[1] == "        return 7 / 2"
    assert lines[2] == "    " + " " * 11 + "^"
    assert lines[3] == "  hint: use '//' for integer division"


def test_several_errors_in_several_functions_at_once(tmp_path):
    src = ("from pybpfc import *\n"
           "def helper(x: u32) -> u32:\n    return x / 2\n"
           "@bpf.xdp\ndef a(ctx) -> int:\n    return helper(1) + 1.5\n"
           "@bpf.xdp\ndef b(ctx) -> int:\n    y = [1]\n    return undefined_name\n")
    diags = compile_errors(tmp_path, src, header=False)
    assert [(d.line, d.col) for d in diags] == [(3, 12), (6, 24), (9, 9), (10, 12)]


def test_module_that_loads_itself_at_import_time(tmp_path):
    diags = compile_errors(tmp_path, "import pybpfc\nfrom pybpfc import *\n@bpf.xdp\ndef p(ctx) -> int:\n    return 2\n"
                                     "pybpfc.compile(__file__)\n", header=False)
    assert len(diags) == 1 and diags[0].line == 6
    assert "module-level code raised CompileError" in diags[0].message
    assert "compiles or loads itself at import time" in diags[0].message


def test_llvm_stack_limit_is_a_located_error_not_an_exit(tmp_path):
    # LLVM reports this during code generation by exiting; the compiler runs it in a child
    diags = compile_errors(tmp_path, """
class Big(Struct):
    data: Array[u64, 100]

m = HashMap(u32, Big, max_entries=4)

@bpf.xdp
def p(ctx) -> int:
    a = Big()
    b = Big()
    a.data[3] = bpf.ktime_get_ns()
    b.data[5] = bpf.ktime_get_ns()
    m[1] = a
    m[2] = b
    return 0
""")
    assert [(d.line, d.col) for d in diags] == [(11, 5)]   # `a = Big()` after the 2-line header
    assert "BPF stack limit is exceeded" in diags[0].message
    assert "PerCpuArray" in diags[0].hint


@pytest.mark.parametrize("deco,msg", [
    ('@bpf.tc("sideways")', 'bpf.tc(\'sideways\'): direction must be "ingress" or "egress"'),
    ('@bpf.tracepoint("sys_enter_openat")', "bpf.tracepoint('sys_enter_openat'): expected \"category/name\""),
])
def test_bad_decorator_arguments(tmp_path, deco, msg):
    diags = compile_errors(tmp_path, f"from pybpfc import *\n{deco}\ndef p(ctx) -> int:\n    return 0\n", header=False)
    assert [(d.line, d.col) for d in diags] == [(2, 1)]
    assert msg in diags[0].message


@pytest.mark.parametrize("decl,msg", [
    ("m = RingBuf(max_entries=1000)", "RingBuf(max_entries=1000): the size in bytes must be a power of two"),
    ("m = HashMap(u32, float, max_entries=4)", "HashMap: value type <class 'float'> is not a pybpfc type"),
])
def test_bad_map_declarations(tmp_path, decl, msg):
    diags = compile_errors(tmp_path, f"from pybpfc import *\n{decl}\n@bpf.xdp\ndef p(ctx) -> int:\n    return 0\n",
                           header=False)
    assert [(d.line, d.col) for d in diags] == [(2, 1)]
    assert msg in diags[0].message


def test_hints_for_common_mistakes(tmp_path):
    diags = compile_errors(tmp_path, """
class E(Struct):
    name: Str[64]

events = RingBuf()

@bpf.tracepoint("syscalls/sys_enter_execve")
def t(ctx) -> int:
    e = events.reserve(E)
    if e is None:
        return 0
    e.name = ctx.filename
    events.submit(e)
    return 0

@bpf.xdp
def x(ctx) -> int:
    return ctx.data
""")
    assert [(d.line, d.col, d.message) for d in diags] == [
        (14, 14, "cannot store u64 into Str[64]"),
        (20, 12, "the xdp context has no field 'data'")]
    assert "probe_read_user_str" in diags[0].hint and "ctx.packet(Type, offset)" in diags[1].hint


def test_unreadable_sources(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"x = 1\n\xff\xfe\n")
    with pytest.raises(pybpfc.CompileError, match=r"bad.py:0:0: error: cannot read source: 'utf-8' codec"):
        pybpfc.compile(str(bad))
    with pytest.raises(pybpfc.CompileError, match=r"missing.py:0:0: error: cannot read source: No such file"):
        pybpfc.compile(str(tmp_path / "missing.py"))


def test_augmented_assignment_on_a_scalar_map_reference_says_what_to_write(tmp_path):
    diags = compile_errors(tmp_path, """
counts = HashMap(u32, u64, max_entries=8)

@bpf.xdp
def x(ctx) -> int:
    v = counts.lookup(3)
    if v is None:
        return 0
    v += 1
    return 0
""")
    assert [(d.line, d.col, d.message) for d in diags] == [
        (11, 5, "cannot use '+=' on 'v', a reference to a u64 map value")]
    assert "`m[k] += n`" in diags[0].hint and "m.get(k, 0)" in diags[0].hint

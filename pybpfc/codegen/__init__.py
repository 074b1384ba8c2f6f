"""Typed program -> LLVM IR with debug info -> BPF ELF object, in process with llvmlite.

    compile_file(path, opt_level=2, mcpu="v3", emit="obj"|"ir"|"asm", tracepoint_formats=None) -> bytes
"""
from __future__ import annotations

import os
import re
import tempfile
import threading

from ..errors import CompileError, Diagnostic, Error

_lock = threading.RLock()
_init = False
MCPUS = ("v1", "v2", "v3", "v4", "generic", "probe")


def _llvm():
    global _init
    import llvmlite.binding as llvm

    with _lock:
        if not _init:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _init = True
    return llvm


def lower_module(path: str, tracepoint_formats: str | None = None) -> str:
    """Frontend + lowering: the module's LLVM IR text (unoptimised). Raises CompileError."""
    return _lower(path, tracepoint_formats).ir.text()


def describe_types(path: str, tracepoint_formats: str | None = None) -> str:
    """The checked program as text: functions, their locals' types, maps and globals."""
    return _lower(path, tracepoint_formats).describe()


def _lower(path: str, tracepoint_formats: str | None):
    from ..frontend.module import Diagnostics, load_module
    from .module import ModuleLowering

    diags = Diagnostics()
    info = load_module(path, diags)
    diags.raise_if_any()
    ml = ModuleLowering(info, diags, tracepoint_formats)
    ml.run()
    diags.raise_if_any()
    return ml


def compile_file(path: str, opt_level: int = 2, mcpu: str = "v3", emit: str = "obj",
                 tracepoint_formats: str | None = None) -> bytes:
    if emit not in ("obj", "ir", "asm"):
        raise Error(f"emit must be 'obj', 'ir' or 'asm', not {emit!r}")
    if mcpu not in MCPUS:
        raise Error(f"unknown --mcpu {mcpu!r} (choose from {', '.join(MCPUS[:4])})")
    if not 0 <= int(opt_level) <= 3:
        raise Error(f"optimisation level must be 0..3, not {opt_level}")
    text = lower_module(path, tracepoint_formats)
    llvm = _llvm()
    with _lock:   # one LLVM context for the process: one compilation at a time
        return _llvm_compile(llvm, text, path, opt_level, mcpu, emit)


def _llvm_compile(llvm, text: str, path: str, opt_level: int, mcpu: str, emit: str) -> bytes:
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise Error(f"internal compiler error: LLVM rejected the generated IR for {path}:\n{e}") from None
    tm = llvm.Target.from_triple("bpfel").create_target_machine(cpu=mcpu, opt=int(opt_level), reloc="static",
                                                              codemodel="small")
    if opt_level:
        pto = llvm.create_pipeline_tuning_options(speed_level=int(opt_level))
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    if emit == "ir":
        return str(mod).encode()
    return _emit_guarded(tm, mod, emit, path)


_LLVM_DIAG = re.compile(r"error: (?:(\S+?):(\d+):(\d+): )?(?:in function \S+ [^:]*: )?(.*)")


def _emit_guarded(tm, mod, emit: str, path: str) -> bytes:
    """Run LLVM's BPF code generation in a forked child: some of its errors (e.g. "BPF stack limit
    is exceeded") print to stderr and exit the process, which must not take the caller down."""
    def run() -> bytes:
        return tm.emit_assembly(mod).encode() if emit == "asm" else tm.emit_object(mod)

    if not hasattr(os, "fork"):
        return run()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # child: only LLVM work, then _exit without Python cleanup
            code = 0
            try:
                os.dup2(err.fileno(), 2)
                out.write(run())
                out.flush()
            except BaseException:  # noqa: BLE001 - reported through the exit code
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        data, msg = out.read(), err.read().decode(errors="replace").strip()
    if os.waitstatus_to_exitcode(status) == 0:
        return data
    m = _LLVM_DIAG.search(msg)
    if m and m.group(2):
        text = m.group(4).split(". For non-kernel uses")[0]
        hint = ("keep large values in a map (e.g. a PerCpuArray with one entry) instead of on the stack"
                if "stack limit" in text else None)
        raise CompileError([Diagnostic(os.path.abspath(path), int(m.group(2)), int(m.group(3)), text, hint=hint,
                                       source_line=_line(path, int(m.group(2))))])
    raise Error(f"{path}: LLVM could not generate BPF code: {msg or 'code generation failed'}")


def _line(path: str, n: int):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()[n - 1]
    except (OSError, IndexError):
        return None


__all__ = ["compile_file", "lower_module", "describe_types", "CompileError", "Diagnostic"]

"""Typed program -> LLVM IR with debug info -> BPF ELF object, in process with llvmlite.

    compile_file(path, opt_level=2, mcpu="v3", emit="obj"|"ir"|"asm", tracepoint_formats=None) -> bytes
"""
from __future__ import annotations

import marshal
import os
import re
import threading

from ..errors import CompileError, Diagnostic, Error

_lock = threading.RLock()
MCPUS = ("v1", "v2", "v3", "v4", "generic", "probe")


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
        cancel_prestarted()
        raise Error(f"emit must be 'obj', 'ir' or 'asm', not {emit!r}")
    if mcpu not in MCPUS:
        cancel_prestarted()
        raise Error(f"unknown --mcpu {mcpu!r} (choose from {', '.join(MCPUS[:4])})")
    if not 0 <= int(opt_level) <= 3:
        cancel_prestarted()
        raise Error(f"optimisation level must be 0..3, not {opt_level}")
    child = _take_child()
    try:
        text = lower_module(path, tracepoint_formats)
    except BaseException:
        if child is not None:
            child.cancel()
        raise
    if child is not None:
        return child.finish(text, path, int(opt_level), mcpu, emit)
    with _lock:   # one compilation at a time (the guarded emit forks)
        return _llvm_compile(text, path, opt_level, mcpu, emit)


def _llvm_compile(text: str, path: str, opt_level: int, mcpu: str, emit: str, guarded: bool = True) -> bytes:
    from . import llvm

    try:
        mod = llvm.optimize(text, int(opt_level), mcpu)
    except llvm.LLVMError as e:
        raise Error(f"internal compiler error: LLVM rejected the generated IR for {path}:\n{e}") from None
    with mod:
        if emit == "ir":
            return mod.ir().encode()
        if not guarded:
            return mod.emit(emit == "asm")
        return _emit_guarded(mod, emit, path)


_LLVM_DIAG = r"error: (?:(\S+?):(\d+):(\d+): )?(?:in function \S+ [^:]*: )?(.*)"  # compiled when needed
_first_compile = True


def _prefork_ok() -> bool:
    """Whether to run this compilation's LLVM half in a child forked before the frontend runs.

    Loading LLVM (libllvmlite, ~180 MB) is the largest start-up cost of a one-shot build; a child
    forked now loads it while this process parses and lowers the program, so on two or more cores
    the two overlap. The child also keeps the fork safety (LLVM exits the process on some
    errors). Only for the process's first compilation: a process that compiles again loads LLVM
    itself once and keeps it. Not with other threads running: the child runs Python code (it
    imports), which a lock held by another thread at fork time could deadlock."""
    from . import llvm

    global _first_compile
    first, _first_compile = _first_compile, False
    return first and hasattr(os, "fork") and not llvm.loaded() and threading.active_count() == 1


_prestarted = None


def prestart() -> None:
    """Fork the code generation child now rather than in the next compile_file (which then uses
    it), if compile_file would fork one: `pybpfc build` calls this first thing, so loading LLVM
    also overlaps argument parsing and the frontend's imports. The caller makes sure
    cancel_prestarted() runs if it ends up not compiling."""
    global _prestarted
    if _prestarted is None and _prefork_ok():
        _prestarted = _CodegenChild.start()


def cancel_prestarted() -> None:
    """Stop and reap a prestarted child no compile_file took."""
    child = _take_prestarted()
    if child is not None:
        child.cancel()


def _take_prestarted():
    global _prestarted
    child, _prestarted = _prestarted, None
    return child


def _take_child():
    child = _take_prestarted()
    if child is None and _prefork_ok():
        child = _CodegenChild.start()
    return child


def _scratch():
    """An anonymous file a forked child writes its results to (memfd: no tempfile import)."""
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("pybpfc-codegen"), "w+b")
    import tempfile

    return tempfile.TemporaryFile()


class _CodegenChild:
    """A forked child that loads LLVM at once, then reads one (IR text, options) request from a
    pipe and writes the object (exit 0), an llvmlite error message (exit 2) or nothing (LLVM
    exited: its message is on the child's stderr) to files the parent reads after waiting."""

    def __init__(self, pid: int, req: int, out, err):
        self.pid, self.req, self.out, self.err = pid, req, out, err

    @classmethod
    def start(cls) -> "_CodegenChild":
        out, err = _scratch(), _scratch()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            cls._child(r, out, err)  # never returns
        os.close(r)
        return cls(pid, w, out, err)

    @staticmethod
    def _child(req: int, out, err) -> None:
        code = 3
        try:
            os.dup2(err.fileno(), 2)
            from . import llvm

            llvm.backend()  # load LLVM now, while the parent runs the frontend
            chunks = []
            while chunk := os.read(req, 1 << 16):
                chunks.append(chunk)
            if not chunks:
                code = 0  # the frontend failed: nothing to do
            else:
                text, path, opt_level, mcpu, emit = marshal.loads(b"".join(chunks))
                try:
                    data = _llvm_compile(text, path, opt_level, mcpu, emit, guarded=False)
                    code = 0
                except Error as e:
                    data, code = str(e).encode(), 2
                out.write(data)
                out.flush()
        except BaseException as e:  # noqa: BLE001 - reported through the exit code and stderr
            try:
                os.write(2, f"{type(e).__name__}: {e}".encode(errors="replace"))
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)

    def cancel(self) -> None:
        """Kill and reap the child (interrupted or unused build): no need to finish loading LLVM."""
        import signal

        if self.req >= 0:
            os.close(self.req)
            self.req = -1
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()
        self.out.close()
        self.err.close()

    def _reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def finish(self, text: str, path: str, opt_level: int, mcpu: str, emit: str) -> bytes:
        try:
            request = memoryview(marshal.dumps((text, path, opt_level, mcpu, emit)))
            try:
                while request:
                    request = request[os.write(self.req, request):]
            except BrokenPipeError:
                pass  # the child is gone: its exit status and stderr say why
            os.close(self.req)
            self.req = -1
            code = self._reap()
        except BaseException:  # e.g. KeyboardInterrupt while waiting: leave no child behind
            self.cancel()
            raise
        with self.out, self.err:
            self.out.seek(0)
            self.err.seek(0)
            data, msg = self.out.read(), self.err.read().decode(errors="replace").strip()
        if code == 0:
            return data
        if code == 2:
            raise Error(data.decode(errors="replace"))
        _codegen_failed(msg, path)


def _emit_guarded(mod, emit: str, path: str) -> bytes:
    """Run LLVM's BPF code generation in a forked child: some of its errors (e.g. "BPF stack limit
    is exceeded") print to stderr and exit the process, which must not take the caller down."""
    if not hasattr(os, "fork"):
        return mod.emit(emit == "asm")
    with _scratch() as out, _scratch() as err:
        pid = os.fork()
        if pid == 0:  # child: only LLVM work, then _exit without Python cleanup
            code = 0
            try:
                os.dup2(err.fileno(), 2)
                out.write(mod.emit(emit == "asm"))
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
    _codegen_failed(msg, path)


def _codegen_failed(msg: str, path: str):
    """Raise the error for an LLVM code generation child that failed with stderr `msg`."""
    m = re.search(_LLVM_DIAG, msg)
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

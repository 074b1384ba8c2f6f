"""The LLVM half of a build: parse the IR text, optimise it, emit BPF code, with libllvmlite.

    optimize(text, opt_level, mcpu) -> Optimized   (.ir() / .emit(asm) / .close())

Two ways reach the same library. llvmlite.binding is the public one, but importing it costs
~40 ms of Python (ctypes prototypes for LLVM's whole API, importlib.resources, llvmlite.ir) on
top of the ~7 ms of loading libllvmlite: more than pybpfc's whole frontend, on the critical path
of every `pybpfc build`. `_CApi` declares with ctypes just the 20-odd C functions a build calls.
They are llvmlite's internal ABI, so `_CApi` is used only with the llvmlite versions it was
checked against (ABI_CHECKED; tests/compiler/test_build_startup.py compares its output with
llvmlite.binding's byte for byte); any other version, a library missing one of the functions,
or PYBPFC_LLVM=binding, uses llvmlite.binding.
"""
from __future__ import annotations

import os
import threading

ABI_CHECKED = ("0.50.",)
TRIPLE = b"bpfel"


class LLVMError(Exception):
    """LLVM refused the IR (parse or verification error); the message is LLVM's."""


def _llvmlite_version() -> str:
    try:
        from llvmlite import __version__
    except ImportError:
        return ""
    return __version__


_lock = threading.Lock()
_backend = None


def backend():
    """The process's LLVM access, created (and LLVM's targets initialised) on first use."""
    global _backend
    with _lock:
        if _backend is None:
            choice = os.environ.get("PYBPFC_LLVM", "")
            capi = choice != "binding" and (choice == "capi" or _llvmlite_version().startswith(ABI_CHECKED))
            if capi:
                try:
                    _backend = _CApi()
                except (OSError, AttributeError):  # library or a function missing: the public API
                    capi = False
            if not capi:
                _backend = _Binding()
        return _backend


def loaded() -> bool:
    """Whether this process has loaded LLVM already."""
    return _backend is not None


def optimize(text: str, opt_level: int, mcpu: str) -> "Optimized":
    return backend().optimize(text, opt_level, mcpu)


class Optimized:
    """An optimised module and the BPF target machine to emit it with."""

    def ir(self) -> str:
        raise NotImplementedError

    def emit(self, asm: bool = False) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Binding:
    name = "binding"

    def __init__(self):
        import llvmlite.binding as llvm

        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        self.llvm = llvm

    def optimize(self, text: str, opt_level: int, mcpu: str) -> Optimized:
        llvm = self.llvm
        try:
            mod = llvm.parse_assembly(text)
            mod.verify()
        except RuntimeError as e:
            raise LLVMError(str(e)) from None
        tm = llvm.Target.from_triple(TRIPLE.decode()).create_target_machine(
            cpu=mcpu, opt=int(opt_level), reloc="static", codemodel="small")
        if opt_level:
            pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=int(opt_level)))
            pb.getModulePassManager().run(mod, pb)
        return _BindingModule(mod, tm)


class _BindingModule(Optimized):
    def __init__(self, mod, tm):
        self.mod, self.tm = mod, tm

    def ir(self) -> str:
        return str(self.mod)

    def emit(self, asm: bool = False) -> bytes:
        return self.tm.emit_assembly(self.mod).encode() if asm else self.tm.emit_object(self.mod)


class _CApi:
    name = "capi"

    def __init__(self):
        import ctypes
        from ctypes import POINTER, c_bool, c_char_p, c_int, c_size_t, c_void_p
        from importlib.util import find_spec

        spec = find_spec("llvmlite")
        lib = ctypes.CDLL(os.path.join(os.path.dirname(spec.origin), "binding", "libllvmlite.so"))
        P, S, ERR = c_void_p, c_char_p, POINTER(c_void_p)  # LLVM objects; strings in; char ** out

        def fn(name, res, *args):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, list(args)
            return f

        self.ctypes = ctypes
        for init in ("TargetInfos", "Targets", "TargetMCs", "AsmPrinters"):
            getattr(lib, "LLVMPY_InitializeAll" + init)()
        self.context_create = fn("LLVMPY_ContextCreate", P)
        self.context_dispose = fn("LLVMPY_ContextDispose", None, P)
        self.parse = fn("LLVMPY_ParseAssembly", P, P, S, ERR)
        self.verify = fn("LLVMPY_VerifyModule", c_bool, P, ERR)
        self.module_dispose = fn("LLVMPY_DisposeModule", None, P)
        self.print_module = fn("LLVMPY_PrintModuleToString", None, P, ERR)
        self.string_dispose = fn("LLVMPY_DisposeString", None, P)
        self.target = fn("LLVMPY_GetTargetFromTriple", P, S, ERR)
        # target, triple, cpu, features, opt level, reloc, code model, printmc, jit, abi name
        self.tm_create = fn("LLVMPY_CreateTargetMachine", P, P, S, S, S, c_int, S, S, c_int, c_int, S)
        self.tm_dispose = fn("LLVMPY_DisposeTargetMachine", None, P)
        self.pto_create = fn("LLVMPY_CreatePipelineTuningOptions", P)
        self.pto_dispose = fn("LLVMPY_DisposePipelineTuningOptions", None, P)
        self.pb_create = fn("LLVMPY_CreatePassBuilder", P, P, P)
        self.pb_dispose = fn("LLVMPY_DisposePassBuilder", None, P)
        self.mpm_create = fn("LLVMPY_buildPerModuleDefaultPipeline", P, P, c_int)
        self.mpm_run = fn("LLVMPY_RunNewModulePassManager", None, P, P, P)
        self.mpm_dispose = fn("LLVMPY_DisposeNewModulePassManger", None, P)  # (sic)
        self.emit_to_memory = fn("LLVMPY_TargetMachineEmitToMemory", P, P, P, c_int, ERR)
        self.buffer_start = fn("LLVMPY_GetBufferStart", c_void_p, P)
        self.buffer_size = fn("LLVMPY_GetBufferSize", c_size_t, P)
        self.buffer_dispose = fn("LLVMPY_DisposeMemoryBuffer", None, P)

    def take_string(self, ptr) -> str:
        """The text of a char * LLVM allocated, which is then freed."""
        if not ptr.value:
            return ""
        try:
            return self.ctypes.string_at(ptr.value).decode(errors="replace")
        finally:
            self.string_dispose(ptr)

    def optimize(self, text: str, opt_level: int, mcpu: str) -> Optimized:
        ct = self.ctypes
        err = ct.c_void_p()
        ctx = self.context_create()  # own context: the userspace JIT may use llvmlite meanwhile
        out = _CApiModule(self, ctx)
        try:
            out.mod = self.parse(ctx, text.encode(), ct.byref(err))
            if not out.mod:
                raise LLVMError("LLVM IR parsing error\n" + self.take_string(err))
            if self.verify(out.mod, ct.byref(err)):
                raise LLVMError(self.take_string(err))
            target = self.target(TRIPLE, ct.byref(err))
            if not target:
                raise LLVMError(self.take_string(err))
            out.tm = self.tm_create(target, TRIPLE, mcpu.encode(), b"", int(opt_level), b"static", b"small",
                                    0, 0, b"")
            if not out.tm:
                raise LLVMError("cannot create the BPF target machine")
            if opt_level:
                pto = self.pto_create()
                pb = self.pb_create(out.tm, pto)
                mpm = self.mpm_create(pb, int(opt_level))
                self.mpm_run(mpm, out.mod, pb)
                self.mpm_dispose(mpm)
                self.pb_dispose(pb)
                self.pto_dispose(pto)
        except BaseException:
            out.close()
            raise
        return out


class _CApiModule(Optimized):
    def __init__(self, api: _CApi, ctx):
        self.api, self.ctx, self.mod, self.tm = api, ctx, None, None

    def ir(self) -> str:
        out = self.api.ctypes.c_void_p()
        self.api.print_module(self.mod, self.api.ctypes.byref(out))
        return self.api.take_string(out)

    def emit(self, asm: bool = False) -> bytes:
        api, ct = self.api, self.api.ctypes
        err = ct.c_void_p()
        buf = api.emit_to_memory(self.tm, self.mod, 0 if asm else 1, ct.byref(err))
        if not buf:
            raise LLVMError(api.take_string(err))
        try:
            return ct.string_at(api.buffer_start(buf), api.buffer_size(buf))
        finally:
            api.buffer_dispose(buf)

    def close(self) -> None:
        if self.tm:
            self.api.tm_dispose(self.tm)
        if self.mod:
            self.api.module_dispose(self.mod)
        if self.ctx:
            self.api.context_dispose(self.ctx)
        self.ctx = self.mod = self.tm = None

"""One exception hierarchy for the whole project, rooted at pybpfc.Error.

Messages start with their subject: `file:line:col: error: ...` for source,
`map 'x': ...` / `prog 'y': ...` for objects (libbpf's convention).
"""
from __future__ import annotations


class Error(Exception):
    """Base of every error pybpfc raises on purpose."""


class CompileError(Error):
    """One or more problems in user source. `diagnostics` holds each one."""

    def __init__(self, diagnostics):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class Diagnostic:
    """A located message: renders as `file:line:col: error: msg`, the source line and a caret."""

    def __init__(self, file, line, col, message, *, hint=None, source_line=None, severity="error"):
        self.file, self.line, self.col = file, line, col
        self.message, self.hint, self.severity = message, hint, severity
        self.source_line = source_line

    def __str__(self):
        out = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        if self.source_line is not None:
            out += f"\n    {self.source_line.rstrip()}\n    {' ' * max(self.col - 1, 0)}^"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out

    def __repr__(self):
        return f"Diagnostic({self.file!r}, {self.line}, {self.col}, {self.message!r})"


class ELFError(Error):
    """A malformed or unsupported object file."""


class BTFError(Error):
    """Malformed BTF, or a type that cannot be decoded."""


class LoadError(Error):
    """A map or program could not be created or loaded."""


class VerifierError(LoadError):
    """The (kernel or userspace) verifier rejected a program; `log` is the annotated log."""

    def __init__(self, message, log=""):
        self.log = log
        super().__init__(message + ("\n" + log if log else ""))


class AttachError(Error):
    """A program could not be attached."""


class NotSupportedError(Error):
    """The backend or the running kernel cannot do this (probed, not guessed)."""


class RuntimeFault(Error):
    """A userspace program was stopped: bad memory access, instruction budget, ..."""


class AssemblerError(Error):
    """Bad assembler input: the message names the line."""

"""`pybpfc` command. Each subcommand lives in its own module here with `add_parser(sub)` and
`run(args) -> int`."""
from __future__ import annotations

import importlib
import sys

from ..errors import CompileError, Error

COMMANDS = ["build", "check", "dump", "run", "exec", "doctor", "asm"]


def _subcommands(argv: list[str]) -> list[str]:
    """The subcommand modules to import. Only the named one when argv starts with a command: the
    others pull in what they need at import (doctor: ctypes/socket, run: the backends), which
    `pybpfc build` should not pay for at every start. Help and bad input still see them all."""
    if argv and argv[0] in COMMANDS:
        return [argv[0]]
    return COMMANDS


def main(argv=None) -> int:
    as_program = argv is None  # the console script or `python -m`: the process ends when this returns
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["build"]:
        return _build(argv, as_program)
    return _main(argv)


def _build(argv: list[str], as_program: bool) -> int:
    import gc

    from .. import codegen

    # A build allocates a few hundred thousand objects and keeps most (its modules and
    # llvmlite's, the AST, the IR): collections every 700 allocations cost CPU for almost no
    # garbage. They still run, less often, here and in the code generation child.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    # LLVM loads in the code generation child while this process does everything else
    codegen.prestart()
    try:
        return _main(argv)
    finally:
        codegen.cancel_prestarted()  # not used: bad arguments, --help, an error before compiling
        if as_program:
            # about to exit: the interpreter's final full collection would walk every object
            # (~7% of a build's CPU time) only to find the same few cycles
            gc.freeze()
        else:
            gc.set_threshold(*thresholds)


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="pybpfc", description="Write eBPF in restricted Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for name in _subcommands(argv):
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # not built yet
            raise
        mod.add_parser(sub)
        handlers[name] = mod.run
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args) or 0
    except CompileError as e:
        print(e, file=sys.stderr)  # already file:line:col: error: ...
        return 1
    except Error as e:
        print(f"pybpfc {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

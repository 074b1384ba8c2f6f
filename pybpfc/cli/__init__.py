"""`pybpfc` command. Each subcommand lives in its own module here with `add_parser(sub)` and
`run(args) -> int`."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CompileError, Error

COMMANDS = ["build", "check", "dump", "run", "exec", "doctor", "asm"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pybpfc", description="Write eBPF in restricted Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for name in COMMANDS:
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

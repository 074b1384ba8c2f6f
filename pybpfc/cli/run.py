"""`pybpfc run prog.py|prog.bpf.o [options] [-- CMD ARGS...]`: load, attach every program,
stream ring/perf buffer events and bpf_trace_printk lines, and print every map on exit
(Ctrl-C, --duration, or CMD exiting)."""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import time

from .. import uapi as U
from ..backends.base import NoopLink
from ..errors import Error, NotSupportedError

TRACE_HELPERS = {U.HELPERS["trace_printk"], U.HELPERS["trace_vprintk"]}
EVENT_MAPS = {U.BPF_MAP_TYPE_RINGBUF, U.BPF_MAP_TYPE_PERF_EVENT_ARRAY}
MAP_TYPE_NAMES = {v: k[len("BPF_MAP_TYPE_"):].lower() for k, v in vars(U).items()
                  if k.startswith("BPF_MAP_TYPE_") and isinstance(v, int)}
# Maps whose contents are kernel objects or internal plumbing, not data to print.
UNPRINTABLE = EVENT_MAPS | {U.BPF_MAP_TYPE_PROG_ARRAY, U.BPF_MAP_TYPE_ARRAY_OF_MAPS,
                            U.BPF_MAP_TYPE_HASH_OF_MAPS, U.BPF_MAP_TYPE_STACK_TRACE,
                            U.BPF_MAP_TYPE_DEVMAP, U.BPF_MAP_TYPE_CPUMAP, U.BPF_MAP_TYPE_XSKMAP,
                            U.BPF_MAP_TYPE_SOCKMAP, U.BPF_MAP_TYPE_SOCKHASH,
                            U.BPF_MAP_TYPE_CGROUP_ARRAY}


def _options(p, suppress=False):
    kw = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--backend", choices=["auto", "kernel", "userspace"],
                   **(kw or {"default": "auto"}), help="where to load (default: auto)")
    p.add_argument("--duration", type=float, **kw, help="stop after S seconds")
    p.add_argument("--json", action="store_true", **kw, help="one JSON object per line")
    p.add_argument("--iface", **kw, help="interface for xdp and tc programs")
    p.add_argument("--cgroup", **kw, help="cgroup v2 directory for cgroup programs")
    p.add_argument("--pid", type=int, **(kw or {"default": -1}),
                   help="only this process, for uprobes and perf_event programs")
    p.add_argument("--skip-unsupported", action="store_true", **kw,
                   help="attach what this backend can and report the rest, instead of stopping")
    p.add_argument("--freq", type=int, **(kw or {"default": 49}),
                   help="samples per second per CPU for perf_event programs (default 49)")


def add_parser(sub):
    p = sub.add_parser("run", help="load and attach a program, stream its events, print its maps",
                       description=__doc__.split("\n\n")[0],
                       usage="pybpfc run [options] prog.py|prog.bpf.o [options] [-- CMD ARGS...]")
    p.add_argument("program", help="a pybpfc .py module or a BPF ELF object")
    _options(p)
    # Everything after the program: more options, then `-- CMD ARGS...` (parsed in run()).
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _split_rest(args):
    """Options after the program, then the command. argparse drops a `--` that directly
    follows the program, so a first word that is not an option also starts the command."""
    rest = list(args.rest or [])
    opts = []
    while rest and rest[0] != "--" and rest[0].startswith("-"):
        name = rest[0].split("=", 1)[0]
        if name not in _VALUE_OPTS and name not in _FLAG_OPTS:
            raise Error(f"unknown option {rest[0]!r} (a command goes after '--')")
        opts.append(rest.pop(0))
        if name in _VALUE_OPTS and "=" not in opts[-1]:
            if not rest:
                raise Error(f"option {name} needs a value")
            opts.append(rest.pop(0))
    if rest and rest[0] == "--":
        rest.pop(0)
    if opts:
        p = argparse.ArgumentParser(prog="pybpfc run", add_help=False)
        _options(p, suppress=True)
        try:
            extra = p.parse_args(opts)
        except SystemExit:
            raise Error(f"bad options {' '.join(opts)!r}") from None
        for k, v in vars(extra).items():
            setattr(args, k, v)
    args.cmd = rest


_VALUE_OPTS = {"--backend", "--duration", "--iface", "--cgroup", "--pid", "--freq"}
_FLAG_OPTS = {"--json", "--skip-unsupported"}


# -- output -----------------------------------------------------------------------------------

def _plain(v):
    """A JSON-friendly / printable form of a decoded key, value or event."""
    if hasattr(v, "_asdict"):
        return {k: _plain(x) for k, x in v._asdict().items()}
    if isinstance(v, (bytes, bytearray)):
        try:
            s = bytes(v).decode()
            if s.isprintable():
                return s
        except UnicodeDecodeError:
            pass
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _text(v) -> str:
    p = _plain(v)
    if isinstance(p, dict):
        return " ".join(f"{k}={_text(x)}" for k, x in p.items())
    if isinstance(p, list):
        return "[" + ", ".join(_text(x) for x in p) + "]"
    return str(p)


class Out:
    def __init__(self, as_json: bool):
        self.json = as_json

    def emit(self, obj: dict, text: str):
        print(json.dumps(obj) if self.json else text, flush=True)

    def event(self, name: str, ev, several: bool):
        self.emit({"map": name, "event": _plain(ev)},
                  (f"[{name}] " if several else "") + _text(ev))

    def trace(self, line: str):
        from ..backends.kernel.tracefs import parse_trace_line

        task, msg = parse_trace_line(line)
        self.emit({"trace": msg, "task": task}, line.strip())

    def note(self, msg: str):
        print(f"pybpfc run: {msg}", file=sys.stderr, flush=True)


def print_maps(coll, out: Out):
    for name, m in coll._maps.items():
        spec = m.spec
        if spec.type in UNPRINTABLE:
            continue
        if spec.data is not None or spec.variables:       # global data: print its variables
            if spec.readonly:
                continue
            for var in spec.variables:
                if var.startswith("__"):
                    continue   # compiler-internal
                try:
                    v = getattr(coll.globals, var)
                except Exception as e:  # noqa: BLE001 - report, keep printing the others
                    out.note(f"map '{name}': cannot read {var}: {e}")
                    continue
                out.emit({"global": var, "value": _plain(v)}, f"{var} = {_text(v)}")
            continue
        tname = MAP_TYPE_NAMES.get(spec.type, str(spec.type))
        try:
            if spec.tags.get("histogram") == "log2":
                hist = m.histogram()
                while hist and hist[-1] == 0:
                    hist.pop()
                out.emit({"map": name, "histogram": hist},
                         f"\n{name}:\n{m.format_log2_hist(spec.tags.get('unit', 'value'))}")
                continue
            if spec.type in (U.BPF_MAP_TYPE_QUEUE, U.BPF_MAP_TYPE_STACK, U.BPF_MAP_TYPE_BLOOM_FILTER):
                out.emit({"map": name, "type": tname}, f"\n{name} ({tname}): not listable")
                continue
            entries = list(m.items())
        except (Error, NotSupportedError) as e:
            out.note(f"map '{name}': cannot read: {e}")
            continue
        if m.percpu:
            entries = [(k, v if not all(isinstance(x, int) for x in v) else sum(v)) for k, v in entries]
        zeros = 0
        if spec.type in (U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_ARRAY):
            kept = [(k, v) for k, v in entries if not _is_zero(v)]
            zeros, entries = len(entries) - len(kept), kept
        try:
            entries.sort(key=lambda kv: kv[0])
        except TypeError:
            pass
        if out.json:
            out.emit({"map": name, "type": tname,
                      "entries": [{"key": _plain(k), "value": _plain(v)} for k, v in entries]}, "")
            continue
        lines = [f"\n{name} ({tname}, {len(entries)} entries"
                 + (f", {zeros} zero entries not shown" if zeros else "") + "):"]
        lines += [f"  {_text(k)}: {_text(v)}" for k, v in entries]
        out.emit({}, "\n".join(lines))


def _is_zero(v) -> bool:
    p = _plain(v)
    if isinstance(p, dict):
        return all(_is_zero(x) for x in p.values())
    if isinstance(p, list):
        return all(_is_zero(x) for x in p)
    return p in (0, "", "00")


# -- attaching --------------------------------------------------------------------------------

def _uses_trace_printk(spec) -> bool:
    insns = spec.insns
    for i in range(0, len(insns) - 7, 8):
        if insns[i] == 0x85 and insns[i + 1] >> 4 == 0 and \
                int.from_bytes(insns[i + 4:i + 8], "little", signed=True) in TRACE_HELPERS:
            return True
    return False


def tc_direction(spec) -> str:
    """ingress/egress of a tc program from its section ("tc/egress", "tcx/egress", ...)."""
    if spec.expected_attach_type == U.BPF_TCX_EGRESS or spec.attach_to == "egress" \
            or spec.section.rstrip("/").endswith("egress"):
        return "egress"
    return "ingress"


def attach_programs(coll, args, out: Out) -> list:
    """Attach each program by its section, targets from the command line."""
    tail_called = {v for m in coll.spec.maps.values() for _, v in m.contents if isinstance(v, str)}
    links = []
    for name, p in coll._progs.items():
        kind = p.spec.kind
        if name in tail_called:
            continue   # reached through a prog array, not attached itself
        if kind in ("xdp", "tc", "tcx"):
            if not args.iface:
                raise Error(f"prog '{name}': {kind} programs attach to an interface: pass --iface IFACE")
            links.append(p.attach_xdp(args.iface) if kind == "xdp"
                         else p.attach_tc(args.iface, tc_direction(p.spec)))
        elif kind == "cgroup":
            if not args.cgroup:
                raise Error(f"prog '{name}': cgroup programs attach to a cgroup: pass --cgroup PATH")
            links.append(p.attach_cgroup(args.cgroup))
        elif kind in ("uprobe", "uretprobe"):
            if not p.spec.attach_to:
                raise Error(f"prog '{name}': section '{p.spec.section}' names no binary:symbol to probe")
            links.append(p.attach_uprobe(pid=args.pid))
        elif kind == "perf_event":
            from ..backends.kernel.attach.perf_event import PERF_COUNT_SW_CPU_CLOCK, PERF_TYPE_SOFTWARE

            links.append(p.attach_perf_event(type=PERF_TYPE_SOFTWARE, config=PERF_COUNT_SW_CPU_CLOCK,
                                             sample_freq=args.freq, pid=args.pid))
        elif kind in ("tracepoint", "raw_tracepoint", "kprobe", "kretprobe", "fentry", "fexit",
                      "fmod_ret", "tp_btf", "lsm"):
            links.append(p.attach())
        elif kind == "socket_filter":
            out.note(f"prog '{name}': not attached: socket filters attach to a socket "
                     "(use Program.attach_socket_filter from Python)")
        else:
            out.note(f"prog '{name}': not attached: `pybpfc run` does not attach '{kind}' "
                     f"programs (section '{p.spec.section}')")
    for link in links:
        if isinstance(link, NoopLink):
            out.note(f"not attached: {link.reason}")
    return [link for link in links if not isinstance(link, NoopLink)]


# -- main loop --------------------------------------------------------------------------------

def _start_command(backend, argv):
    if hasattr(backend, "spawn"):
        return backend.spawn(argv)
    try:
        return subprocess.Popen(argv)
    except OSError as e:
        raise Error(f"cannot run {argv[0]!r}: {e.strerror}") from None


def _trace_source(coll, out: "Out"):
    """A trace_pipe reader (fd-based for the kernel) when a program calls bpf_trace_printk."""
    if not any(_uses_trace_printk(p.spec) for p in coll._progs.values()):
        return None
    if coll.backend.name == "kernel":
        from ..backends.kernel.tracefs import private_trace_pipe

        pipe, why_not = private_trace_pipe()
        if why_not:
            out.note(why_not)
        return pipe
    return _BackendTrace(coll.backend)


class _BackendTrace:
    """trace_printk output of a backend without a trace_pipe fd (the userspace runtime):
    polled, never blocking."""

    def __init__(self, backend):
        self.backend = backend

    def fileno(self):
        raise NotSupportedError(f"{self.backend.name} backend: no trace pipe fd")

    def read_lines(self) -> list[str]:
        try:
            return list(self.backend.trace_pipe_lines(0))
        except NotSupportedError:
            return []

    def close(self):
        pass


def final_drain(readers, drain, wait: float = 1.0) -> None:
    """Read every event the programs wrote. A ring buffer record reserved by a program that is
    preempted (or still running on another CPU) before it submits stays busy and hides the
    committed records behind it from the consumer; give such producers up to `wait` seconds."""
    deadline = time.monotonic() + wait
    for name, rb in readers:
        pending = getattr(getattr(rb, "raw", None), "available", None)
        while True:
            drain(name, rb)
            if pending is None or pending() <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.005)


def run(args) -> int:
    _split_rest(args)
    path = args.program
    if not os.path.exists(path):
        raise Error(f"{path}: no such file")
    import pybpfc

    out = Out(args.json)
    try:
        coll = pybpfc.load(path, backend=args.backend,
                           unsupported="ignore" if args.skip_unsupported else "error")
    except ImportError as e:
        raise Error(f"{path}: cannot load: {e}") from None
    proc = None
    stop = {"now": False}

    def on_stop(signum, frame):
        # The first Ctrl-C/SIGTERM ends the loop (then maps are printed); a second one aborts.
        if stop["now"]:
            raise KeyboardInterrupt
        stop["now"] = True

    old_term = signal.signal(signal.SIGTERM, on_stop)
    old_int = signal.signal(signal.SIGINT, on_stop)
    trace = None
    try:
        with coll:
            try:
                trace = _trace_source(coll, out)
            except Error as e:
                out.note(f"trace_printk lines not shown: {e}")
            if trace is not None:
                trace.read_lines()   # lines left from before this run are not ours
            # Readers first: a perf buffer drops what programs output before it is open.
            readers = []
            for name, m in coll._maps.items():
                if m.spec.type in EVENT_MAPS:
                    readers.append((name, coll.ringbuf(name)))
            links = attach_programs(coll, args, out)
            several = len(readers) > 1
            sel = selectors.DefaultSelector()
            polled = []
            for name, rb in readers:
                try:
                    sel.register(rb.fileno(), selectors.EVENT_READ, (name, rb))
                except (NotSupportedError, OSError, ValueError):
                    polled.append((name, rb))
            if trace is not None:
                try:
                    sel.register(trace.fileno(), selectors.EVENT_READ, ("", trace))
                except (NotSupportedError, OSError, ValueError):
                    polled.append(("", trace))
            out.note(f"{len(links)} program(s) attached; "
                     + (f"running {' '.join(args.cmd)}" if args.cmd else
                        f"for {args.duration} s" if args.duration else "Ctrl-C to stop"))

            def drain(name, src):
                if src is trace:
                    for line in trace.read_lines():
                        out.trace(line)
                else:
                    for ev in src.poll(0):
                        out.event(name, ev, several)

            if args.cmd:
                proc = _start_command(coll.backend, args.cmd)
            end = time.monotonic() + args.duration if args.duration else None
            try:
                while not stop["now"]:
                    if proc is not None and proc.poll() is not None:
                        break
                    now = time.monotonic()
                    if end is not None and now >= end:
                        break
                    timeout = 0.2 if end is None else min(0.2, end - now)
                    if polled:
                        timeout = min(timeout, 0.05)
                    for key, _ in sel.select(timeout):
                        drain(*key.data)
                    for name, src in polled:
                        drain(name, src)
            except KeyboardInterrupt:
                pass
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait()
            # Detach, then drain: nothing new arrives, so "empty" below means everything.
            for link in links:
                link.close()
            final_drain(readers, drain)
            if trace is not None:
                drain("", trace)
            sel.close()
            print_maps(coll, out)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if trace is not None:
            trace.close()
    return proc.returncode if proc is not None and proc.returncode and proc.returncode > 0 else 0

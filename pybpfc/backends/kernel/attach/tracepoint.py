"""Tracepoints: a PERF_TYPE_TRACEPOINT event (config = the tracefs event id) + a perf link."""
from __future__ import annotations

from ....errors import AttachError
from .. import tracefs
from .links import prog_subject
from .perf_event import PERF_TYPE_TRACEPOINT, PerfEventAttr, attach_perf_fd, perf_event_open


def attach(prog, category: str, name: str, cookie: int = 0):
    target = f"{category}/{name}"
    try:
        tp_id = tracefs.event_id(category, name)
    except AttachError as e:
        raise AttachError(f"{prog_subject(prog)}: {e}") from None
    attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id)
    # A tracepoint event fires on every CPU for every task; libbpf opens it as pid -1, cpu 0.
    pfd = perf_event_open(attr, pid=-1, cpu=0, subject=f"{prog_subject(prog)}: tracepoint {target}")
    return attach_perf_fd(prog, pfd, "tracepoint", target, cookie)

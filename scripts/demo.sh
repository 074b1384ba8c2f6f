#!/usr/bin/env bash
# Set up, then build and run an example: count openat() calls per process for 3 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/pybpfc build examples/opens.py -o /tmp/opens.bpf.o
echo "built /tmp/opens.bpf.o"
.venv/bin/pybpfc run examples/opens.py --duration 3 &
pid=$!
sleep 1; for i in 1 2 3 4 5; do cat /etc/hostname >/dev/null; done
wait $pid

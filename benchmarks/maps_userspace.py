"""Kept for older instructions: benchmarks/maps.py now prints the kernel and userspace columns
and their ratio in one run (this runs it with the same arguments)."""
import os
import runpy
import sys

if __name__ == "__main__":
    sys.argv[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "maps.py")
    runpy.run_path(sys.argv[0], run_name="__main__")

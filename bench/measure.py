"""What the benchmarks measure a process with (imported by the bench scripts, which run from this folder)."""

from __future__ import annotations

from pathlib import Path


def peak_memory_mib(pid: int | str = "self") -> float:
    """Peak resident memory of a process (VmHWM), in MiB.

    Not ru_maxrss: Linux carries that over from the process a child was forked from, so a child started
    by a large parent would report at least the parent's size.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

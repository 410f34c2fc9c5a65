"""CPU time and resident memory of processes, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process below it."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _threads(pids: Iterable[int]) -> list[int]:
    """Every thread of ``pids`` and of the processes below them."""
    tids = []
    for pid in pids:
        for each in [pid, *descendants(pid)]:
            with contextlib.suppress(OSError):
                tids.extend(int(t.name) for t in Path(f"/proc/{each}/task").iterdir())
    return tids


@contextlib.contextmanager
def pinned(placement: dict[int, set[int]]) -> Iterator[None]:
    """Run the block with each pid (its threads and children too) on the given CPUs.

    The CPUs each thread had before are given back afterwards. Threads started inside the block
    inherit their creator's CPUs, so pin a process once it has started its threads.
    """
    before: dict[int, set[int]] = {}
    try:
        for pid, cpus in placement.items():
            for tid in _threads([pid]):
                with contextlib.suppress(OSError):
                    before.setdefault(tid, os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, cpus)
        yield
    finally:
        for tid, cpus in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)

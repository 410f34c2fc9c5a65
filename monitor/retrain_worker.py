"""One retraining, out of process: ``python -m driftgate.monitor.retrain_worker JOB RESULT``.

Reads a ``monitor.retrain.RetrainJob``, runs ``monitor.retrain.execute`` and writes the
``RetrainResult`` as JSON; an exception is written as a failed result (exit 1).

The options are the containment ``monitor.retrain.run_worker`` asks for: ``--nice N`` (added
niceness), ``--memory-bytes N`` (RLIMIT_AS), ``--cpu-seconds N`` (RLIMIT_CPU) and ``--parent
PID`` (the monitor: when it dies, the worker kills its own process group rather than train on
unsupervised). They are applied first, before numpy and the trainer are imported: on Linux a
thread inherits its niceness from the thread that starts it, so the numeric libraries' thread
pools must start after ``os.nice``. Doing it here rather than in a ``preexec_fn`` keeps the
monitor's ``fork`` safe while other threads run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

# After the CPU-time soft limit (SIGXCPU), the hard limit (SIGKILL) this many seconds later.
_CPU_HARD_SLACK = 10


def contain(nice: int, memory_bytes: int | None, cpu_seconds: int | None) -> None:
    """Lower this process's priority and limit its memory and CPU time, for good: the hard
    limits are lowered too, so neither this process nor its children can raise them."""
    if nice:
        os.nice(nice)
    _limit(resource.RLIMIT_CORE, 0)  # no multi-gigabyte core file on a crash
    if memory_bytes is not None:
        _limit(resource.RLIMIT_AS, memory_bytes)
    if cpu_seconds is not None:
        _limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + _CPU_HARD_SLACK)


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    _, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


def watch_parent(parent: int, interval: float = 1.0) -> threading.Thread:
    """Kill this process group once ``parent`` is no longer this process's parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.killpg(0, signal.SIGKILL)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m driftgate.monitor.retrain_worker")
    parser.add_argument("job", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--memory-bytes", type=int)
    parser.add_argument("--cpu-seconds", type=int)
    parser.add_argument("--parent", type=int)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    contain(args.nice, args.memory_bytes, args.cpu_seconds)
    if args.parent is not None:
        watch_parent(args.parent)
    # Imported only now: numpy, onnxruntime and the trainer start their threads under the limits.
    from driftgate.monitor.retrain import RetrainJob, RetrainResult, execute

    job = RetrainJob(**json.loads(args.job.read_text(encoding="utf-8")))
    code = 0
    try:
        result = execute(job)
    except Exception as exc:  # the monitor records why; the traceback goes to the output file
        traceback.print_exc()
        result = RetrainResult("failed", f"{type(exc).__name__}: {str(exc)[:1000]}")
        code = 1
    args.result.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

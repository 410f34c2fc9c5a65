"""A new version is opened and test-run in a child process before the gateway loads it.

onnxruntime runs native code: a malformed or hostile graph can hang a session's creation or its
first run, or crash the process that runs it. The gateway cannot interrupt a native call on one
of its own threads, and a crash would take every model it serves with it. So each version is
first given to a child process (``LoadProbe``: long-lived ``spawn`` processes, one per loader
thread at most, started on first use and replaced after a failure): it creates an onnxruntime
session from the bytes and runs one row of zeros (empty strings for string inputs, 1 for each
dynamic dimension). Its verdict:

- ``ok``, or ``error`` (onnxruntime refused the graph or the zeros: the load in the gateway
  then fails or succeeds on its own terms, with its own message);
- ``hang``: no answer within the timeout; the child is killed;
- ``crash``: the child died (a signal, an abort).

A hang or a crash quarantines the version (``driftgate.core.repository``'s quarantine
marker), so that no replica sharing the repository tries it again until it is rewritten.

Bytes that passed once are not probed again by the same gateway (``LoadProbe`` remembers the
sha256 of the last ``REMEMBERED`` that did): a rollback, or a version deployed again, then
costs one session's construction instead of two. Only ``ok`` is remembered.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["REMEMBERED", "LoadProbe", "ProbeVerdict", "lower_priority"]

#: how many passed models' digests a probe remembers (64 bytes each)
REMEMBERED = 256

log = logging.getLogger(__name__)


def lower_priority(niceness: int = 10) -> None:
    """Run the calling thread at nice ``niceness``, or keep its own if that is already higher
    (Linux: nice applies per thread; a thread's priority is only ever lowered here).

    Threads and processes it starts from then on inherit that priority.
    """
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, niceness))


@dataclass(frozen=True)
class ProbeVerdict:
    """``outcome`` is "ok", "error", "hang" or "crash"; ``detail`` says what was seen."""

    outcome: str
    detail: str = ""

    @property
    def quarantine(self) -> bool:
        return self.outcome in ("hang", "crash")


def _zeros(inputs: Any) -> dict[str, Any]:
    import numpy as np

    types = {
        "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
        "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
        "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
    }  # fmt: skip
    feeds = {}
    for arg in inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        if arg.type == "tensor(string)":
            feeds[arg.name] = np.full(shape, "", dtype=object)
        else:
            feeds[arg.name] = np.zeros(shape, dtype=types.get(arg.type, np.float32))
    return feeds


def _serve_probes(connection: Any) -> None:
    """The child: for each model's bytes received, open and run it; answer a verdict."""
    lower_priority()  # whichever thread started it, before any thread of its own starts
    import onnxruntime as ort

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when this ends
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    while True:
        try:
            data = connection.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            session.run(None, _zeros(session.get_inputs()))
            del session
            connection.send(("ok", ""))
        except Exception as exc:  # onnxruntime's own errors: the in-process load reports them
            connection.send(("error", f"{type(exc).__name__}: {exc}"[:500]))


class _Child:
    """One probe process and the parent's end of its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve_probes, args=(child,), name="driftgate-load-probe", daemon=True
        )
        self.process.start()
        child.close()
        # close() on the gateway's shutdown and a loader thread that saw the child die may
        # stop it at once; two unguarded closes of one pipe end raise EBADF.
        self._stopping = threading.Lock()

    def check(self, data: bytes, timeout: float) -> ProbeVerdict:
        try:
            self.connection.send_bytes(data)
            if not self.connection.poll(timeout):
                self.stop()
                detail = f"opening and running one row took longer than {timeout:g} s"
                return ProbeVerdict("hang", detail)
            outcome, detail = self.connection.recv()
        except (EOFError, OSError):
            return ProbeVerdict("crash", self._death())
        return ProbeVerdict(str(outcome), str(detail))

    def _death(self) -> str:
        self.process.join(5)
        code = self.process.exitcode
        self.stop()
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return (
                    f"onnxruntime died of {signal.Signals(-code).name} while opening or running it"
                )
        return f"onnxruntime's process exited with {code} while opening or running it"

    @property
    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def stop(self) -> None:
        with self._stopping:
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
            self.connection.close()  # a second close of a closed end does nothing


class LoadProbe:
    """Test-runs a model's bytes in a child process within ``timeout`` seconds.

    Thread-safe: each caller (a loader thread) takes an idle child or starts one, so a probe
    that hangs holds one child and one loader thread, not the others. ``close()`` stops every
    child. Usage: ``verdict = probe.check(onnx_bytes)``.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._passed: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def check(self, data: bytes) -> ProbeVerdict:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if digest in self._passed:
                self._passed.move_to_end(digest)
                return ProbeVerdict("ok", "passed before")
        child = self._take()
        verdict = child.check(data, self.timeout)
        with self._lock:
            self._busy.discard(child)
            if child.alive:
                self._idle.append(child)
            if verdict.outcome == "ok":
                self._passed[digest] = None
                while len(self._passed) > REMEMBERED:
                    self._passed.popitem(last=False)
        return verdict

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    self._busy.add(child)
                    return child
                child.stop()
        child = _Child()
        with self._lock:
            self._busy.add(child)
        return child

    @property
    def pids(self) -> list[int]:
        """The children's pids (fault-injection tests signal them)."""
        with self._lock:
            return [c.process.pid for c in [*self._idle, *self._busy] if c.process.pid]

    def close(self) -> None:
        with self._lock:
            children = [*self._idle, *self._busy]
            self._idle, self._busy = [], set()
        for child in children:
            child.stop()

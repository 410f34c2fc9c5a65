"""The open-loop load generator: requests arrive at a fixed rate, whatever the server answers.

A closed loop never offers more than the server takes (each task waits for its answer before
it sends again), so it cannot show overload. Here arrivals are a Poisson process (independent
exponential gaps) at a rate fixed per phase, split evenly over the client processes; each
arrival starts its own request with its own deadline, however many are still unanswered.

Every request is kept: when it was due, how late the client itself sent it, how long its answer
took, and its status code. An open-loop client that cannot keep its schedule is a closed loop in
disguise, so lateness (send time minus due time) is reported beside the server's figures; a
request the client could only send after its deadline had passed is not sent (NOT_SENT), so a
client that fell behind catches up instead of piling up requests nobody waits for.

    with OpenLoop(processes=2) as load:
        run = load.run(OpenLoopJob(port, request, phases=((500, 10.0), (1500, 10.0))))
        run.phase(1)  # the requests due in the second phase
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: status names a request can end with; "OK" needs both outputs in the answer
CODES = (
    "OK", "BAD_RESPONSE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE",
    "CANCELLED", "INTERNAL", "UNKNOWN", "OTHER", "NOT_SENT",
)  # fmt: skip
#: a request sent this much after it was due counts as late (the event loop's timers wake
#: about a millisecond apart, so smaller delays are the clock, not a client falling behind)
LATE_SECONDS = 0.002
#: how a server refuses a call it cannot take: RESOURCE_EXHAUSTED from the server's own code,
#: CANCELLED from gRPC's core, which drops a call unread when its accept queue is full (the
#: client here never cancels: one that gives up ends DEADLINE_EXCEEDED)
REFUSALS = ("RESOURCE_EXHAUSTED", "CANCELLED")


@dataclass(frozen=True)
class OpenLoopJob:
    """Arrivals against ``port``: ``phases`` of (requests per second, seconds), back to back."""

    port: int
    request: bytes
    phases: tuple[tuple[float, float], ...]
    deadline: float = 1.0  # seconds each request may take before the client gives up
    expected_outputs: int = 2
    seed: int = 0


@dataclass
class OpenLoopRun:
    """Every request of a job, merged over the client processes, ordered by due time."""

    due: np.ndarray  # seconds from the start of the first phase
    latency: np.ndarray  # seconds from sending to the answer
    late: np.ndarray  # seconds from due to sent
    codes: np.ndarray  # index into CODES
    start: float  # time.time() of the first phase's start
    bounds: tuple[float, ...]  # phase boundaries, seconds from start (len(phases) + 1)
    client_cpu: float  # CPU seconds of all client processes

    def phase(self, index: int, first: float | None = None) -> OpenLoopRun:
        """The requests due in phase ``index`` (only its ``first`` seconds if given)."""
        low = self.bounds[index]
        high = self.bounds[index + 1] if first is None else min(low + first, self.bounds[-1])
        keep = (self.due >= low) & (self.due < high)
        return OpenLoopRun(
            self.due[keep], self.latency[keep], self.late[keep], self.codes[keep],
            self.start, (low, high), self.client_cpu,
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """Offered, admitted and refused (``REFUSALS``) rates, their latencies (ms) and the
        client's lateness."""
        seconds = max(self.bounds[-1] - self.bounds[0], 1e-9)
        ok = self.codes == 0
        rejected = np.isin(self.codes, [CODES.index(code) for code in REFUSALS])
        unsent = self.codes == CODES.index("NOT_SENT")
        counts = np.bincount(self.codes, minlength=len(CODES))
        return {
            "seconds": seconds,
            "sent": int(self.due.size),
            "sent_per_second": self.due.size / seconds,
            "admitted_per_second": int(ok.sum()) / seconds,
            "rejected_per_second": int(rejected.sum()) / seconds,
            "codes": {CODES[i]: int(n) for i, n in enumerate(counts) if n},
            "failed": int((~ok & ~rejected & ~unsent).sum()),
            "not_sent": int(unsent.sum()),
            "admitted_p50_ms": _percentile(self.latency[ok], 50),
            "admitted_p99_ms": _percentile(self.latency[ok], 99),
            "rejected_p99_ms": _percentile(self.latency[rejected], 99),
            "rejected_max_ms": _percentile(self.latency[rejected], 100),
            "late_share": float((self.late > LATE_SECONDS).mean()) if self.late.size else 0.0,
            "late_p99_ms": _percentile(self.late, 99),
        }


#: what each client process records of every request, and its dtype
_RECORDS = (("due", "f8"), ("latency", "f8"), ("late", "f8"), ("codes", "i1"))


def _merge(job: OpenLoopJob, start: float, parts: list[dict[str, Any]]) -> OpenLoopRun:
    """One run of the client processes' records (``_RECORDS`` arrays and ``cpu`` each),
    ordered by due time."""
    merged = {key: np.concatenate([p[key] for p in parts]) for key, _ in _RECORDS}
    order = np.argsort(merged["due"], kind="stable")
    bounds = tuple(np.concatenate([[0.0], np.cumsum([s for _, s in job.phases])]).tolist())
    return OpenLoopRun(
        merged["due"][order], merged["latency"][order], merged["late"][order],
        merged["codes"][order].astype(np.int64), start, bounds,
        sum(p["cpu"] for p in parts),
    )  # fmt: skip


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) * 1e3 if values.size else None


def arrivals(phases: tuple[tuple[float, float], ...], rng: np.random.Generator) -> np.ndarray:
    """Due times of a Poisson process whose rate is fixed within each phase."""
    parts, start = [], 0.0
    for rate, seconds in phases:
        if rate > 0:
            # Twice the expected count plus slack; the tail past the phase is cut off.
            gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 2 + 100))
            times = start + np.cumsum(gaps)
            parts.append(times[times < start + seconds])
        start += seconds
    return np.concatenate(parts) if parts else np.empty(0)


class OpenLoop:
    """A pool of spawned client processes, each an asyncio loop with one grpc.aio channel."""

    def __init__(self, processes: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[Any, Any]] = []
        for index in range(processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(child,), name=f"openloop-{index}", daemon=True
            )
            process.start()
            self._workers.append((process, parent))
        for _, conn in self._workers:
            if conn.recv() != "ready":
                raise RuntimeError("an open-loop client process failed to start")

    @property
    def pids(self) -> list[int]:
        """The client processes' pids (to place them on CPUs)."""
        return [process.pid for process, _ in self._workers]

    def __enter__(self) -> OpenLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, job: OpenLoopJob, delay: float = 0.5) -> tuple[float, list[Any]]:
        """Start ``job`` in ``delay`` seconds; returns its start (time.time()) for ``collect``."""
        start = time.time() + delay
        share = len(self._workers)
        for index, (_, conn) in enumerate(self._workers):
            phases = tuple((rate / share, seconds) for rate, seconds in job.phases)
            part = OpenLoopJob(
                job.port, job.request, phases, job.deadline, job.expected_outputs,
                job.seed * 1000 + index,
            )  # fmt: skip
            conn.send((part, start))
        return start, [conn for _, conn in self._workers]

    def collect(self, job: OpenLoopJob, start: float, pending: list[Any]) -> OpenLoopRun:
        parts = [conn.recv() for conn in pending]
        for part in parts:
            if "failure" in part:
                raise RuntimeError(f"open-loop client failed: {part['failure']}")
        arrays = [
            {key: np.frombuffer(p[key], dtype=dtype) for key, dtype in _RECORDS} | {"cpu": p["cpu"]}
            for p in parts
        ]
        return _merge(job, start, arrays)

    def run(self, job: OpenLoopJob, during: Callable[[float], None] | None = None) -> OpenLoopRun:
        """Run ``job``; ``during(start)`` runs in this process meanwhile (to sample the server)."""
        start, pending = self.submit(job)
        if during is not None:
            during(start)
        return self.collect(job, start, pending)

    def close(self) -> None:
        for process, conn in self._workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self._workers.clear()


#: the C++ client, built by scripts/install_openloop_client.sh (OPENLOOP_CLIENT overrides)
NATIVE_CLIENT = Path(
    os.environ.get(
        "OPENLOOP_CLIENT",
        Path(__file__).resolve().parent.parent / ".cache" / "openloop" / "bin" / "openloop-client",
    )
)
#: the C++ client's codes past gRPC's 0-16
_NATIVE_CODES = {100: "NOT_SENT", 101: "BAD_RESPONSE"}


def native_missing() -> str | None:
    """None if the C++ client can run, else why not."""
    if os.access(NATIVE_CLIENT, os.X_OK):
        return None
    return f"{NATIVE_CLIENT} is missing: run scripts/install_openloop_client.sh"


class NativeOpenLoop:
    """The same jobs through the C++ client (``benchmarks/openloop_client.cc``): one process
    per job and share, started when the job is, on ``cpus`` if given.

    The Python client spends about 300 µs of CPU a call, as much as the server answering it,
    so on a small machine it cannot offer a multiple of a Python server's capacity; the C++
    client spends a small fraction of that. Same arrivals (same seeds), same records.
    """

    def __init__(self, processes: int = 1, channels: int = 4) -> None:
        self.processes = processes
        self.channels = channels
        self.cpus: set[int] | None = None  # where the client processes run

    @property
    def pids(self) -> list[int]:
        return []  # started per job, placed by ``cpus``

    def __enter__(self) -> NativeOpenLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, job: OpenLoopJob, during: Callable[[float], None] | None = None) -> OpenLoopRun:
        """Run ``job``; ``during(start)`` runs in this process meanwhile (to sample the server)."""
        with tempfile.TemporaryDirectory(prefix="openloop-") as scratch:
            work = Path(scratch)
            (work / "request").write_bytes(job.request)
            start = time.time() + 1.0  # time to connect every channel first
            launched = []
            place = functools.partial(os.sched_setaffinity, 0, self.cpus) if self.cpus else None
            for index in range(self.processes):
                rng = np.random.default_rng(job.seed * 1000 + index)
                phases = tuple((rate / self.processes, secs) for rate, secs in job.phases)
                due = arrivals(phases, rng)
                due.astype("<f8").tofile(work / f"due-{index}")
                command = [
                    str(NATIVE_CLIENT), "--port", str(job.port), "--request", str(work / "request"),
                    "--due", str(work / f"due-{index}"), "--deadline", str(job.deadline),
                    "--start", repr(start), "--out", str(work / f"out-{index}"),
                    "--channels", str(self.channels),
                    "--expected-outputs", str(job.expected_outputs),
                ]  # fmt: skip
                with (
                    (work / f"stdout-{index}").open("w") as out,
                    (work / f"stderr-{index}").open("w") as err,
                ):  # files, not pipes: nobody reads while the job runs
                    process = subprocess.Popen(command, stdout=out, stderr=err, preexec_fn=place)
                launched.append((process, due))
            if during is not None:
                during(start)
            parts = []
            for index, (process, due) in enumerate(launched):
                code = process.wait(timeout=sum(seconds for _, seconds in job.phases) + 120)
                if code != 0:
                    err = (work / f"stderr-{index}").read_text()[-2000:]
                    raise RuntimeError(f"openloop-client exited {code}: {err}")
                summary = json.loads((work / f"stdout-{index}").read_text().splitlines()[-1])
                parts.append(_read_native(work / f"out-{index}", due, summary))
        return _merge(job, start, parts)


def _read_native(path: Path, due: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
    """The C++ client's output: a count, then latency, lateness (f8) and codes (i1)."""
    raw = path.read_bytes()
    count = int(np.frombuffer(raw, dtype="<u8", count=1)[0])
    if count != due.size or len(raw) != 8 + count * 17:
        raise RuntimeError(f"openloop-client wrote {len(raw)} bytes for {due.size} requests")
    latency = np.frombuffer(raw, dtype="<f8", count=count, offset=8)
    late = np.frombuffer(raw, dtype="<f8", count=count, offset=8 + 8 * count)
    native = np.frombuffer(raw, dtype="i1", count=count, offset=8 + 16 * count)
    import grpc  # the status names, as the Python client reports them

    names = {code.value[0]: code.name for code in grpc.StatusCode} | _NATIVE_CODES
    known = {name: i for i, name in enumerate(CODES)}
    table = np.full(128, known["OTHER"], dtype=np.int8)  # native code -> index into CODES
    for number, name in names.items():
        table[number] = known.get(name, known["OTHER"])
    return {"due": due, "latency": latency, "late": late, "codes": table[native],
            "cpu": float(summary["cpu_seconds"])}  # fmt: skip


def _worker_main(conn: Any) -> None:
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            return
        job, start = message
        try:
            conn.send(asyncio.run(_run(job, start)))
        except Exception as exc:  # reported to the parent, which raises
            conn.send({"failure": repr(exc)})


async def _run(job: OpenLoopJob, start: float) -> dict[str, Any]:
    import grpc

    from driftgate.core._proto.inference import grpc_service_pb2 as pb

    parse = pb.ModelInferResponse.FromString
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{job.port}", options=[("grpc.max_receive_message_length", -1)]
    )
    call = channel.unary_unary(MODEL_INFER)  # no serializers: bytes in, bytes out
    await asyncio.wait_for(channel.channel_ready(), timeout=10)
    due = arrivals(job.phases, np.random.default_rng(job.seed))
    latency, late = np.full(due.size, np.nan), np.zeros(due.size)
    codes = np.zeros(due.size, dtype=np.int8)
    clock = time.perf_counter
    begin = clock() + max(0.0, start - time.time())
    known = {name: i for i, name in enumerate(CODES)}

    async def send(index: int) -> None:
        sent = clock()
        late[index] = sent - begin - due[index]
        if late[index] > job.deadline:  # nobody waits for it any more
            codes[index] = known["NOT_SENT"]
            return
        try:
            response = parse(await call(job.request, timeout=job.deadline))
            code = "OK" if len(response.outputs) == job.expected_outputs else "BAD_RESPONSE"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        latency[index] = clock() - sent
        codes[index] = known.get(code, known["OTHER"])

    await asyncio.sleep(max(0.0, begin - clock()))
    cpu = time.process_time()
    tasks: set[asyncio.Task[None]] = set()
    index = 0
    while index < due.size:
        now = clock() - begin
        if due[index] > now:
            await asyncio.sleep(due[index] - now)
            continue
        while index < due.size and due[index] <= now:  # every arrival already due goes now
            task = asyncio.create_task(send(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
    if tasks:
        await asyncio.gather(*list(tasks))
    cpu = time.process_time() - cpu
    await channel.close()
    return {
        "due": due.tobytes(),
        "latency": latency.tobytes(),
        "late": late.tobytes(),
        "codes": codes.tobytes(),
        "cpu": cpu,
    }

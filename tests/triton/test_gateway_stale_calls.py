"""Calls that waited too long before the gateway could take them are dropped, not answered late.

Under overload, calls wait in gRPC's queue until the gateway's event loop takes them; answering
one whose client gave up long ago spends the gateway's CPU on nobody, and the queue never
drains (congestion collapse). Here a gateway runs every model call on its event loop
(``--inline-below-us`` huge), so one slow request holds the loop for about two seconds while
small requests arrive behind it:

- with ``--max-queue-seconds 1`` a call that waited longer is answered CANCELLED by gRPC itself
  and never reaches the model (its statistics count only the calls that ran);
- with a long queue limit, a call whose client deadline passed while it waited never runs
  either: gRPC's core expires it, or, if the gateway takes it first, the gateway drops it
  before decoding and counts it in ``driftgate_expired_requests_total`` (under sustained
  overload the overload benchmark sees hundreds of those).

- with ``--max-queued-calls 4`` at most four calls wait in gRPC's queue; the rest are dropped
  as they arrive, answered CANCELLED at once instead of after the slow request.

Either way the slow request is answered in full and the gateway serves normally afterwards.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import (
    SLOW_WIDTH,
    run_gateway,
    sample,
    scrape,
    slow_identity_model,
    status_of,
    tensor,
    write_version,
)

pytestmark = pytest.mark.integration

# About 3-8 s of onnxruntime on one thread for one request of STALL_ROWS rows, depending on
# the machine (512 rows took 1.5 s on a fast one: too short to outlast the 1 s queue limit).
STALL_LAYERS = 2400
STALL_ROWS = 1024
# Sent this long after the slow request, so they arrive while it holds the event loop.
BEHIND = 0.3
# Small calls sent at once behind the slow one.
SMALL_CALLS = 5


# Calls the full-queue gateway lets wait, and small calls sent behind the slow one there.
QUEUED_CALLS = 4
FLOOD_CALLS = 40


def _gateway(
    tmp_path_factory: pytest.TempPathFactory, queue_seconds: int, *flags: str
) -> Iterator[DriftgateProcess]:
    name = f"{queue_seconds}{''.join(flags)}"
    repo = tmp_path_factory.mktemp(f"stale-repository-{name}")
    write_version(repo, "stall", 1, slow_identity_model(STALL_LAYERS))
    yield from run_gateway(
        repo,
        tmp_path_factory.mktemp(f"stale-{name}"),
        "--max-queue-seconds", str(queue_seconds), "--inline-below-us", "1e12",
        "--max-batch-size", str(STALL_ROWS), "--ort-threads", "1", *flags,
    )  # fmt: skip


@pytest.fixture(scope="module")
def short_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    yield from _gateway(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def long_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    yield from _gateway(tmp_path_factory, 30)


@pytest.fixture(scope="module")
def full_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    yield from _gateway(tmp_path_factory, 30, "--max-queued-calls", str(QUEUED_CALLS))


def _rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, SLOW_WIDTH)).astype(np.float32)


def _infer(address: str, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
    with grpcclient.InferenceServerClient(address) as triton:
        result = triton.infer("stall", [tensor("x", x, "FP32")], client_timeout=timeout)
        return result.as_numpy("y")


def _slow_call_seconds(address: str) -> float:
    start = time.monotonic()
    _infer(address, _rows(STALL_ROWS, seed=0))
    return time.monotonic() - start


async def _send_small(
    address: str,
    inputs: list[np.ndarray],
    timeout: float | None,
    seconds: list[float],
    health: list[object] | None = None,
) -> list[object]:
    triton = aioclient.InferenceServerClient(address)
    if health is not None:  # health checks sent among the small calls, their answers kept
        channel = grpc.aio.insecure_channel(address)
        stub = health_pb2_grpc.HealthStub(channel)
        checks = [stub.Check(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]

    async def timed(x: np.ndarray) -> object:
        start = time.monotonic()
        try:
            return await triton.infer("stall", [tensor("x", x, "FP32")], client_timeout=timeout)
        finally:
            seconds.append(time.monotonic() - start)

    try:
        outcomes = await asyncio.gather(*(timed(x) for x in inputs), return_exceptions=True)
        if health is not None:
            health += await asyncio.gather(*checks, return_exceptions=True)
            await channel.close()
        return outcomes
    finally:
        await triton.close()


def _behind_a_slow_call(
    address: str,
    inputs: list[np.ndarray],
    timeout: float | None = None,
    seconds: list[float] | None = None,
    health: list[object] | None = None,
) -> list[object]:
    """Send ``inputs`` as concurrent calls BEHIND seconds into a slow request; their outcomes
    (answers or exceptions), once the slow request is answered in full. ``seconds`` gets how
    long each outcome took, in the order they came."""
    slow_input = _rows(STALL_ROWS, seed=1)
    answer: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: answer.append(_infer(address, slow_input)))
    thread.start()
    time.sleep(BEHIND)
    timings = [] if seconds is None else seconds
    outcomes = asyncio.run(_send_small(address, inputs, timeout, timings, health))
    thread.join(60)
    assert not thread.is_alive(), "the slow request was never answered"
    np.testing.assert_array_equal(answer[0], slow_input)
    return outcomes


def _cancelled_or_echoed(
    inputs: list[np.ndarray], outcomes: list[object]
) -> tuple[list[object], list[object]]:
    """The answered outcomes and the failed ones, after checking that every failure is
    CANCELLED and every answer carries its own input back."""
    answered = [o for o in outcomes if not isinstance(o, Exception)]
    cancelled = [o for o in outcomes if isinstance(o, Exception)]
    for error in cancelled:
        assert isinstance(error, InferenceServerException), repr(error)
        assert status_of(error) == "CANCELLED", error
    for x, outcome in zip(inputs, outcomes, strict=True):
        if not isinstance(outcome, Exception):
            np.testing.assert_array_equal(outcome.as_numpy("y"), x)  # type: ignore[attr-defined]
    return answered, cancelled


def _success_count(address: str) -> int:
    with grpcclient.InferenceServerClient(address) as triton:
        stats = triton.get_inference_statistics("stall", as_json=True)["model_stats"][0]
    return int(stats.get("inference_stats", {}).get("success", {}).get("count", 0))


def test_calls_queued_past_the_limit_are_cancelled_unrun(short_queue: DriftgateProcess) -> None:
    address = short_queue.address
    # The slow request must hold the loop well past the 1 s limit for the check to mean much.
    warm = _slow_call_seconds(address)
    assert warm >= 1.0 + BEHIND + 0.5, f"the slow request took only {warm:.2f} s; make it slower"
    before = _success_count(address)
    unanswered_before = _unanswered(short_queue.metrics_port)

    inputs = [_rows(1, seed=10 + i) for i in range(SMALL_CALLS)]
    outcomes = _behind_a_slow_call(address, inputs)

    answered, cancelled = _cancelled_or_echoed(inputs, outcomes)
    # gRPC had already handed the gateway's one outstanding accept to the first call that
    # arrived, so that one is served; the rest waited in gRPC's queue past the limit.
    assert len(cancelled) >= SMALL_CALLS - 2, outcomes
    # The cancelled calls never reached the model: only the slow one and the answered ran.
    assert _success_count(address) == before + 1 + len(answered)
    # The gateway's own counters never saw them; gRPC's, exported from channelz, did.
    assert _unanswered(short_queue.metrics_port) - unanswered_before == len(cancelled)
    # And the gateway serves as before.
    small = _rows(1, seed=2)
    np.testing.assert_array_equal(_infer(address, small), small)


def test_a_call_whose_deadline_passed_in_the_queue_is_dropped_unrun(
    long_queue: DriftgateProcess,
) -> None:
    address = long_queue.address
    warm = _slow_call_seconds(address)
    assert warm >= 1.0 + BEHIND + 0.5, f"the slow request took only {warm:.2f} s; make it slower"
    before = _success_count(address)
    expired_before = _expired(long_queue.metrics_port)

    # Deadlines that pass while the calls wait behind the slow request.
    outcomes = _behind_a_slow_call(
        address, [_rows(1, seed=20 + i) for i in range(SMALL_CALLS)], 0.5
    )

    for outcome in outcomes:
        assert isinstance(outcome, InferenceServerException), outcome
        assert status_of(outcome) == "DEADLINE_EXCEEDED", outcome
    assert _success_count(address) == before + 1  # none of the expired calls ran
    small = _rows(1, seed=3)
    np.testing.assert_array_equal(_infer(address, small), small)
    # Whoever noticed first dropped them: gRPC's core, or the gateway when it took one after its
    # deadline (counted); never both, and nothing else fails.
    assert _expired(long_queue.metrics_port) - expired_before <= SMALL_CALLS


def test_calls_past_a_full_queue_are_cancelled_at_once(full_queue: DriftgateProcess) -> None:
    address = full_queue.address
    warm = _slow_call_seconds(address)
    assert warm >= 1.0 + BEHIND + 0.5, f"the slow request took only {warm:.2f} s; make it slower"
    before = _success_count(address)
    unanswered_before = _unanswered(full_queue.metrics_port)

    inputs = [_rows(1, seed=30 + i) for i in range(FLOOD_CALLS)]
    seconds: list[float] = []
    health: list[object] = []
    outcomes = _behind_a_slow_call(address, inputs, seconds=seconds, health=health)

    answered, cancelled = _cancelled_or_echoed(inputs, outcomes)
    # The queue holds at most QUEUED_CALLS, plus the one call gRPC hands the gateway's
    # outstanding accept; every other call was dropped.
    assert 1 <= len(answered) <= QUEUED_CALLS + 1, outcomes
    # Dropped as they arrived, not after the slow request: the first outcomes, one per
    # dropped call, came back long before the slow request let the queued calls through.
    dropped_within = sorted(seconds)[len(cancelled) - 1]
    queued_within = min(sorted(seconds)[len(cancelled) :])
    assert dropped_within < 0.5 < warm - BEHIND - 0.5 < queued_within, (seconds, warm)
    assert _success_count(address) == before + 1 + len(answered)
    assert _unanswered(full_queue.metrics_port) - unanswered_before == len(cancelled)
    # Health checks wait in a queue of their own (bounded alike, but only two are in it):
    # the inference calls filling theirs dropped none.
    serving = health_pb2.HealthCheckResponse.SERVING
    assert [getattr(answer, "status", answer) for answer in health] == [serving] * 2, health
    small = _rows(1, seed=4)
    np.testing.assert_array_equal(_infer(address, small), small)


def _unanswered(metrics_port: int) -> float:
    """Calls gRPC started that ended with no status (dropped or abandoned unanswered)."""
    samples = scrape(metrics_port)

    def calls(outcome: str) -> float:
        value = sample(samples, "driftgate_grpc_server_calls_total", outcome=outcome)
        assert value is not None, f"no driftgate_grpc_server_calls_total{{outcome={outcome!r}}}"
        return value

    return calls("started") - calls("succeeded") - calls("failed")


def _expired(metrics_port: int) -> float:
    return sample(scrape(metrics_port), "driftgate_expired_requests_total") or 0.0


@pytest.mark.parametrize("flag", ["--max-queue-seconds", "--max-queued-calls"])
def test_queue_bounds_must_be_whole_positive_numbers(tmp_path: Path, flag: str) -> None:
    for value, expected in (
        ("0", "must be at least 1, got 0"),
        ("0.5", "invalid int value"),
        ("2147483648", "must be at most 2147483647, got 2147483648"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "driftgate", "serve", "--repository", str(tmp_path),
             flag, value],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert flag in result.stderr and expected in result.stderr

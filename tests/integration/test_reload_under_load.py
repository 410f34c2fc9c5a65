"""RepositoryModelUnload then RepositoryModelLoad under continuous load, gateway -> monitor.

A real gateway reports to a real monitor every 0.2 s while callers keep sending. Between the
Unload and the Load the model is unavailable, and a request may only fail with NOT_FOUND or
UNAVAILABLE; everything sent after the Load succeeds. The statistics of the reloaded version
must still reach the monitor, every successful row exactly once, and ModelStatistics must
count what the version in memory answered.

Two reloads: one that lets the unloaded version drain and close before loading it again (a
new generation, with a fresh record and a fresh collector), and one back to back, while
requests are still queued, so that the draining version is reclaimed (same generation).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.integration.test_monitoring_pipeline import (
    MODEL,
    _monitor,
    _requests,
    _wait_for_rows,
)
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

CALLERS = 8
#: how a request may fail while its model is unloaded
WHILE_UNLOADED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    features, labels = make_classification(1000, 4, n_informative=3, n_redundant=0, random_state=5)
    return features.astype(np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, x: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("reload-models")
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    convert(LogisticRegression(max_iter=500).fit(x, labels), x, MODEL, root, labels=labels)
    return root


def pipeline(repository: Path, workdir: Path, *gateway_args: str) -> tuple[DriftgateProcess, ...]:
    monitor = _monitor(repository, workdir, workdir / "data")
    try:
        gateway = start_gateway(
            repository,
            workdir,
            "--monitor",
            monitor.address,
            "--report-interval",
            "0.2",
            *gateway_args,
        )
    except BaseException:
        monitor.terminate()
        raise
    return gateway, monitor


def _stop(processes: tuple[DriftgateProcess, ...]) -> None:
    """Stop every process, then say which did not exit cleanly (with its log)."""
    codes = [process.terminate() for process in processes]
    failed = [p.log for p, code in zip(processes, codes, strict=True) if code]
    assert not failed, failed


@pytest.fixture
def fast(repository: Path, tmp_path: Path) -> Iterator[tuple[DriftgateProcess, ...]]:
    """The defaults: calls this cheap run inline on the event loop, without a queue."""
    processes = pipeline(repository, tmp_path)
    yield processes
    _stop(processes)


@pytest.fixture
def queued(repository: Path, tmp_path: Path) -> Iterator[tuple[DriftgateProcess, ...]]:
    """Every request waits 100 ms in the batching queue: requests are in flight at any time."""
    processes = pipeline(
        repository, tmp_path, "--inline-below-us", "0", "--max-queue-delay-us", "100000"
    )
    yield processes
    _stop(processes)


@dataclass(frozen=True)
class Outcome:
    rows: int
    started: float
    ended: float
    code: grpc.StatusCode
    version: str = ""


class Load:
    """``CALLERS`` callers sending one request after another until stopped; every outcome kept."""

    def __init__(self, address: str, x: np.ndarray) -> None:
        self.address = address
        self.x = x
        self.outcomes: list[Outcome] = []
        self._numbers = itertools.count()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(*(self._caller(stub) for _ in range(CALLERS)))

    async def _caller(self, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        while not self._stop.is_set():
            if not await self.send(stub):
                await asyncio.sleep(0.001)  # the model is away: do not spin

    async def send(self, stub: pb_grpc.GRPCInferenceServiceStub) -> bool:
        """One request, its outcome kept; whether it succeeded."""
        (request,) = _requests(self.x, next(self._numbers), 1)
        rows = request.inputs[0].shape[0]
        started = time.monotonic()
        try:
            answer = await stub.ModelInfer(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            self.outcomes.append(Outcome(rows, started, time.monotonic(), exc.code()))
            return False
        assert answer.id == request.id
        ended = time.monotonic()
        self.outcomes.append(
            Outcome(rows, started, ended, grpc.StatusCode.OK, answer.model_version)
        )
        return True

    def stop(self) -> None:
        self._stop.set()

    def ok(self, since: float = float("-inf")) -> list[Outcome]:
        return [o for o in self.outcomes if o.code == grpc.StatusCode.OK and o.started >= since]

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code != grpc.StatusCode.OK]


@dataclass
class Reload:
    """When the Unload and the Load were sent and answered (``time.monotonic``)."""

    unload_sent: float = 0.0
    unload_done: float = 0.0
    load_sent: float = 0.0
    load_done: float = 0.0


def retirements(gateway: DriftgateProcess) -> int:
    return gateway.log.count(f"{MODEL} version 1 (generation ")


async def reload_under_load(
    gateway: DriftgateProcess, load: Load, wait_for_retirement: bool
) -> Reload:
    times = Reload()
    traffic = asyncio.create_task(load.run())
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await asyncio.sleep(0.8)
        # Unload just after a batch was answered: with a queue delay, the callers' next
        # requests then wait in the queue, in flight, for most of the delay.
        assert await load.send(stub)
        await asyncio.sleep(0.005)
        retired = retirements(gateway)
        times.unload_sent = time.monotonic()
        await stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name=MODEL), timeout=10
        )
        times.unload_done = time.monotonic()
        if wait_for_retirement:
            deadline = time.monotonic() + 10
            while retirements(gateway) == retired:
                assert time.monotonic() < deadline, "the unloaded version was never retired"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # callers meet the unloaded model for a while
        times.load_sent = time.monotonic()
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL), timeout=30)
        times.load_done = time.monotonic()
        await asyncio.sleep(1.0)  # the reloaded version under load
        load.stop()
        await traffic
        live = await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
        assert live.live
        ready = await stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=10)
        assert ready.ready
    return times


def model_statistics(gateway: DriftgateProcess) -> pb.ModelStatistics:
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelStatistics(
            pb.ModelStatisticsRequest(name=MODEL, version="1"), timeout=10
        )
    (stats,) = response.model_stats
    return stats


def check_failures(load: Load, times: Reload) -> None:
    """Only NOT_FOUND or UNAVAILABLE, only around the reload, nothing after the Load."""
    failed = load.failed()
    codes = {o.code for o in failed}
    assert codes <= WHILE_UNLOADED, codes
    assert all(times.unload_sent <= o.ended and o.started <= times.load_done for o in failed)
    after = [o for o in load.outcomes if o.started >= times.load_done]
    assert after and all(o.code == grpc.StatusCode.OK for o in after)
    assert {o.version for o in load.ok()} == {"1"}


def test_statistics_of_a_reloaded_version_reach_the_monitor_exactly_once(
    fast: tuple[DriftgateProcess, ...], x: np.ndarray
) -> None:
    gateway, monitor = fast
    load = Load(gateway.address, x)
    times = asyncio.run(reload_under_load(gateway, load, wait_for_retirement=True))

    check_failures(load, times)
    # The gap was real: callers met the unloaded model, and nothing else failed.
    assert any(o.code == grpc.StatusCode.NOT_FOUND for o in load.failed())
    assert "reclaimed while draining" not in gateway.log

    # Every successful row, from before and after the reload, counted once at the monitor.
    rows = sum(o.rows for o in load.ok())
    assert sum(o.rows for o in load.ok(since=times.load_done)) > 0
    assert _wait_for_rows(monitor, rows) == rows

    # The reloaded version is a new generation: its record holds what it answered, which is
    # every success sent after the Unload (the first generation had closed before the Load).
    stats = model_statistics(gateway)
    reloaded = load.ok(since=times.unload_done)
    assert stats.inference_stats.success.count == len(reloaded)
    assert stats.inference_count == sum(o.rows for o in reloaded)
    assert stats.inference_stats.fail.count == 0


def test_back_to_back_reload_reclaims_the_draining_version(
    queued: tuple[DriftgateProcess, ...], x: np.ndarray
) -> None:
    gateway, monitor = queued
    load = Load(gateway.address, x)
    times = asyncio.run(reload_under_load(gateway, load, wait_for_retirement=False))

    check_failures(load, times)
    assert not [o for o in load.failed() if o.code == grpc.StatusCode.INTERNAL]
    assert "reclaimed while draining" in gateway.log, gateway.log
    assert retirements(gateway) == 0  # the one generation served throughout

    rows = sum(o.rows for o in load.ok())
    assert _wait_for_rows(monitor, rows) == rows

    # One generation throughout: its record holds every success of the run.
    stats = model_statistics(gateway)
    assert stats.inference_stats.success.count == len(load.ok())
    assert stats.inference_count == rows

"""Delivery of statistics, prediction records and labels from the gateway to the monitor.

Every ``interval`` seconds the reporter takes the deltas of all collectors and merges them
into what it holds. When no report is awaiting acknowledgement, everything held becomes the
next report, with this process's instance id and the next sequence number. A report is sent
until the monitor acknowledges it, unchanged (the monitor ignores a sequence it has already
committed, so counts arrive exactly once); meanwhile new counts keep merging into the held
delta, whose size is fixed by the reference profiles, so memory stays bounded while the
monitor is away. Nothing here runs on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core.errors import ResourceExhausted
from driftgate.gateway.statistics import (
    LATENCY_BOUNDS,
    PredictionRecord,
    VersionCollector,
    VersionCounts,
)

__all__ = ["LabelBuffer", "MonitorReporter", "StatisticsHub"]

log = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass
class _Source:
    collector: VersionCollector
    retired: bool = False


class StatisticsHub:
    """The collectors of every loaded version; retired ones stay until their last take.

    Sources are keyed by generation, so retiring one load of a version never touches a later
    load of the same version; their counts merge under (model, version) in the report.
    """

    def __init__(self) -> None:
        self._sources: dict[tuple[str, int, int], _Source] = {}
        #: takes that failed (logged; the source is kept and tried again next time)
        self.errors = 0

    def add(self, model: str, version: int, generation: int, collector: VersionCollector) -> None:
        self._sources[(model, version, generation)] = _Source(collector)

    def retire(self, model: str, version: int, generation: int) -> None:
        source = self._sources.get((model, version, generation))
        if source is not None:
            source.retired = True

    def take(self) -> list[tuple[Key, VersionCollector, VersionCounts, list[PredictionRecord]]]:
        taken = []
        for key, source in list(self._sources.items()):
            try:
                counts, records = source.collector.take()
            except Exception:
                self.errors += 1
                log.exception("counting statistics of %s version %d failed", key[0], key[1])
                continue
            taken.append(((key[0], key[1]), source.collector, counts, records))
            if source.retired:
                del self._sources[key]
        return taken


class LabelBuffer:
    """Labels received by the gateway, held until forwarded; refuses more than ``capacity``."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._labels: deque[Any] = deque()

    def add(self, labels: Iterable[Any]) -> int:
        incoming = list(labels)
        if len(self._labels) + len(incoming) > self.capacity:
            raise ResourceExhausted(
                f"the label buffer is full ({self.capacity} labels waiting for the monitor); "
                "retry later"
            )
        self._labels.extend(incoming)
        return len(incoming)

    def take(self, limit: int) -> list[Any]:
        return [self._labels.popleft() for _ in range(min(limit, len(self._labels)))]

    def give_back(self, labels: list[Any]) -> None:
        self._labels.extendleft(reversed(labels))

    def __len__(self) -> int:
        return len(self._labels)


@dataclass
class _Held:
    """Counts and records taken from the collectors and not yet in a report."""

    counts: dict[Key, VersionCounts] = field(default_factory=dict)
    names: dict[Key, list[str]] = field(default_factory=dict)
    records: deque[tuple[Key, PredictionRecord]] = field(default_factory=deque)
    since: float = field(default_factory=time.time)


class MonitorReporter:
    """Sends the hub's deltas and the buffered labels to the monitor, exactly once."""

    def __init__(
        self,
        address: str,
        hub: StatisticsHub,
        labels: LabelBuffer,
        interval: float = 5.0,
        max_records: int = 50_000,
        records_per_report: int = 250,
    ) -> None:
        self.address = address
        self.instance_id = uuid.uuid4().hex
        self._hub = hub
        self._labels = labels
        self._interval = interval
        self._max_records = max_records
        self.records_per_report = records_per_report
        self._held = _Held()
        self._unacked: Any = None
        self._sequence = 0
        self.dropped_records = 0
        self.acknowledged = 0
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)
        self._task = asyncio.create_task(self._loop())

    async def stop(self, final_flush_seconds: float = 2.0) -> None:
        """One last attempt to deliver what is held, then close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), final_flush_seconds)
        if self._channel is not None:
            await self._channel.close(None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("reporting to the monitor failed")

    async def flush(self) -> None:
        """Send everything held, in reports of at most ``records_per_report`` records.

        Small reports keep each protobuf build and serialisation (on the event loop) short,
        so reporting never stalls requests for long.
        """
        self._gather()
        assert self._channel is not None
        stub = mpb_grpc.MonitorStub(self._channel)
        while True:
            if self._unacked is None:
                if not self._held.counts and not self._held.records:
                    break
                self._unacked = await self._report()
            try:
                await stub.Report(self._unacked, timeout=10.0)
            except grpc.aio.AioRpcError as exc:
                log.debug("monitor unreachable (%s); holding report", exc.code().name)
                return
            self.acknowledged = self._unacked.sequence
            self._unacked = None
        await self._send_labels(stub)

    def _gather(self) -> None:
        held = self._held
        for key, collector, counts, records in self._hub.take():
            if not counts.is_empty:
                if key in held.counts:
                    held.counts[key].merge(counts)
                else:
                    held.counts[key] = counts
                held.names[key] = [f.name for f in collector.features]
            room = max(self._max_records - len(held.records), 0)
            held.records.extend((key, record) for record in records[:room])
            self.dropped_records += max(len(records) - room, 0) + collector.dropped_records
            collector.dropped_records = 0

    async def _report(self) -> Any:
        held = self._held
        counts, held.counts = held.counts, {}
        since, held.since = held.since, time.time()
        records = []
        for index in range(min(self.records_per_report, len(held.records))):
            key, record = held.records.popleft()
            records.append(_record(key, record))
            if index % 50 == 49:
                await asyncio.sleep(0)  # let requests through between chunks
        self._sequence += 1
        now = time.time()
        return mpb.ReportRequest(
            instance_id=self.instance_id,
            sequence=self._sequence,
            sent_time=_timestamp(now),
            window_start=_timestamp(since),
            window_end=_timestamp(now),
            versions=[_version_stats(key, c, held.names[key]) for key, c in counts.items()],
            records=records,
        )

    async def _send_labels(self, stub: Any) -> None:
        while len(self._labels):
            batch = self._labels.take(5000)
            try:
                await stub.SendLabels(fb.SendLabelsRequest(labels=batch), timeout=10.0)
            except grpc.aio.AioRpcError:
                self._labels.give_back(batch)
                return


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _bins(name: str, counts: Any, nan: int, inf: int, out: int) -> Any:
    return mpb.BinCounts(
        name=name, counts=counts.tolist(), nan_count=nan, inf_count=inf, out_of_range_count=out
    )


def _version_stats(key: Key, counts: VersionCounts, names: list[str]) -> Any:
    return mpb.VersionStats(
        model=key[0],
        version=key[1],
        features=[
            _bins(
                name,
                counts.features[i],
                int(counts.nan[i]),
                int(counts.inf[i]),
                int(counts.out_of_range[i]),
            )
            for i, name in enumerate(names)
        ],
        predictions=_bins("prediction", counts.predictions, 0, 0, 0),
        requests=counts.requests,
        errors=counts.errors,
        rows=counts.rows,
        latency=mpb.LatencyHistogram(
            upper_bounds_seconds=LATENCY_BOUNDS,
            counts=counts.latency.tolist(),
            sum_seconds=counts.latency_sum,
        ),
    )


def _record(key: Key, record: PredictionRecord) -> Any:
    label = record.label
    if isinstance(label, bool | int):
        prediction = mpb.Prediction(int64_value=int(label), probabilities=record.probabilities)
    elif isinstance(label, float):
        prediction = mpb.Prediction(double_value=label, probabilities=record.probabilities)
    else:
        prediction = mpb.Prediction(string_value=str(label), probabilities=record.probabilities)
    seconds = int(record.time)
    return mpb.PredictionRecord(
        request_id=record.request_id,
        time=Timestamp(seconds=seconds, nanos=int((record.time - seconds) * 1e9)),
        model=key[0],
        version=key[1],
        numeric_values=record.numeric,
        categorical_values=record.categorical,
        prediction=prediction,
    )

"""Delivery of statistics, prediction records and labels from the gateway to the monitor.

Every ``interval`` seconds the reporter takes the deltas of all collectors and merges them
into what it holds. When no report is awaiting acknowledgement, everything held becomes the
next report, with this process's instance id and the next sequence number. A report is sent
until the monitor acknowledges it, unchanged (the monitor ignores a sequence it has already
committed, so counts arrive exactly once); meanwhile new counts keep merging into the held
delta, whose size is fixed by the reference profiles, so memory stays bounded while the
monitor is away. Nothing here runs on the request path.

Reports are bounded by bytes as well as records (``max_report_bytes``), and held records by
an estimate of their bytes. A report the monitor refuses for good (INVALID_ARGUMENT or
RESOURCE_EXHAUSTED) is never resent as it was: its counts are sent once more without its
records, and if that is refused too, the report is set aside; each step is logged and
counted (``refused_reports``, ``refused_records``). Labels are sent on every flush whatever
became of the reports, and a batch of labels the monitor refuses for good is set aside
(``refused_labels``) rather than returned to the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core.auth import TokenSource
from driftgate.core.errors import InvalidInput, ResourceExhausted, quote
from driftgate.core.repository import validate_model_name
from driftgate.core.rpc import aio_channel
from driftgate.core.tls import ClientTLS
from driftgate.gateway.statistics import (
    LATENCY_BOUNDS,
    MAX_RECORD_ID_BYTES,
    PredictionRecord,
    VersionCollector,
    VersionCounts,
    record_size,
)

__all__ = [
    "MAX_LABEL_VALUE_BYTES",
    "MAX_LABELS_PER_CALL",
    "LabelBuffer",
    "MonitorReporter",
    "StatisticsHub",
    "check_labels",
]

log = logging.getLogger(__name__)

Key = tuple[str, int]

#: most labels one SendLabels call may carry
MAX_LABELS_PER_CALL = 10_000
#: longest string label, in bytes
MAX_LABEL_VALUE_BYTES = 1024
# The monitor's refusals that resending cannot change.
_FINAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
# Label times the monitor takes: from 2000-01-01 to a day past its clock.
_EARLIEST = 946_684_800
_CLOCK_SKEW = 86_400


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


def check_labels(labels: Sequence[Any]) -> None:
    """Refuse a SendLabels batch, as a whole, unless every label is one the monitor can store.

    The count is checked before any label is read; each label's strings by their length
    before their content; messages quote client strings only in part.
    """
    if len(labels) > MAX_LABELS_PER_CALL:
        raise InvalidInput(
            f"SendLabels carries {len(labels)} labels; send at most {MAX_LABELS_PER_CALL} per call"
        )
    for index, label in enumerate(labels):
        _check_label(index, label)


def _check_label(index: int, label: Any) -> None:
    where = f"labels[{index}]"
    request_id = label.request_id
    if not request_id:
        raise InvalidInput(f"{where}.request_id is empty; it must name a request")
    if _longer_than(request_id, MAX_RECORD_ID_BYTES) or "\x00" in request_id:
        raise InvalidInput(
            f"{where}.request_id {quote(request_id)} is longer than {MAX_RECORD_ID_BYTES} "
            "bytes or holds NUL; no prediction record has such an id"
        )
    if label.model:
        validate_model_name(label.model)
    kind = label.WhichOneof("value")
    if kind is None:
        raise InvalidInput(
            f"{where} ({quote(request_id)}) has no value; set string_value, int64_value or "
            "double_value"
        )
    if kind == "string_value" and _longer_than(label.string_value, MAX_LABEL_VALUE_BYTES):
        raise InvalidInput(
            f"{where}.string_value {quote(label.string_value)} is longer than "
            f"{MAX_LABEL_VALUE_BYTES} bytes"
        )
    if kind == "double_value" and not math.isfinite(label.double_value):
        raise InvalidInput(f"{where}.double_value is {label.double_value}; it must be finite")
    if label.HasField("time") and not (
        _EARLIEST <= label.time.seconds <= time.time() + _CLOCK_SKEW
        and 0 <= label.time.nanos < 1_000_000_000
    ):
        raise InvalidInput(
            f"{where}.time: expected a time between 2000-01-01 and a day past the gateway's clock"
        )


def _longer_than(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (a long one is not encoded)."""
    if len(text) > limit:
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limit


class LabelBuffer:
    """Labels received by the gateway, held until forwarded; refuses more than ``capacity``.

    ``add`` checks the batch with ``check_labels`` first, so nothing oversized is held.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._labels: deque[Any] = deque()

    def add(self, labels: Sequence[Any]) -> int:
        check_labels(labels)
        incoming = list(labels)
        if len(self._labels) + len(incoming) > self.capacity:
            raise ResourceExhausted(
                f"the label buffer is full ({self.capacity} labels waiting for the monitor); "
                "retry later"
            )
        self._labels.extend(incoming)
        return len(incoming)

    def take(self, limit: int, max_bytes: int = 4 << 20) -> list[Any]:
        """The oldest labels, at most ``limit`` of them and about ``max_bytes`` (at least one)."""
        taken: list[Any] = []
        size = 0
        while self._labels and len(taken) < limit:
            size += self._labels[0].ByteSize()
            if taken and size > max_bytes:
                break
            taken.append(self._labels.popleft())
        return taken

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
    record_bytes: int = 0
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
        max_report_bytes: int = 4 << 20,
        max_record_bytes: int = 64 << 20,
        registry: CollectorRegistry | None = None,
        tls: ClientTLS | None = None,
        token: TokenSource | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._token = token
        self._credential_warned = -1e9
        self.instance_id = uuid.uuid4().hex
        self._hub = hub
        self._labels = labels
        self._interval = interval
        self._max_records = max_records
        self.records_per_report = records_per_report
        #: bytes of one report's records at most (the monitor's message limit is far above)
        self.max_report_bytes = max_report_bytes
        self._max_record_bytes = max_record_bytes  # of all held records
        self._held = _Held()
        self._unacked: Any = None
        self._sequence = 0
        self.dropped_records = 0
        self.acknowledged = 0
        #: reports the monitor refused for good, set aside (their counts are lost)
        self.refused_reports = 0
        #: records of refused reports, set aside (the counts were sent again without them)
        self.refused_records = 0
        #: labels the monitor refused for good, set aside
        self.refused_labels = 0
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        if registry is not None:
            registry.register(_ReportingCollector(self))

    def _held_back(self, exc: grpc.aio.AioRpcError, what: str) -> None:
        """A retryable refusal: hold on. A refused credential will not heal by waiting, so
        it is a warning (once a minute), not a debug line."""
        code = exc.code()
        if code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            log.debug("monitor unreachable (%s); holding %s", code.name, what)
            return
        now = time.monotonic()
        if now - self._credential_warned >= 60.0:
            self._credential_warned = now
            log.warning(
                "the monitor refused this gateway's ingest token (%s: %s); holding %s until "
                "the tokens agree (--ingest-token on both)",
                code.name, quote(exc.details() or "", 200), what,
            )  # fmt: skip

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The ingest token, read now (a rotated token file takes effect at the next call)."""
        token = self._token.current() if self._token is not None else None
        return (("authorization", f"Bearer {token}"),) if token else ()

    def start(self) -> None:
        self._channel = aio_channel(self.address, self._tls)
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
        so reporting never stalls requests for long. Labels are sent whatever became of the
        reports: they never wait behind a report the monitor cannot take.
        """
        self._gather()
        assert self._channel is not None
        stub = mpb_grpc.MonitorStub(self._channel)
        try:
            await self._send_reports(stub)
        finally:
            await self._send_labels(stub)

    async def _send_reports(self, stub: Any) -> None:
        while True:
            if self._unacked is None:
                if not self._held.counts and not self._held.records:
                    return
                self._unacked = await self._report()
            try:
                await stub.Report(self._unacked, timeout=10.0, metadata=self._metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _FINAL:
                    self._held_back(exc, "report")
                    return
                self._set_aside(exc)
                continue
            self.acknowledged = self._unacked.sequence
            self._unacked = None

    def _set_aside(self, exc: grpc.aio.AioRpcError) -> None:
        """The monitor refused the unacknowledged report for good: never send it again as is.

        With records, its counts go once more alone (same sequence: nothing of it was
        committed); without, the report is set aside.
        """
        report = self._unacked
        reason = quote(exc.details() or "", 200)
        if len(report.records):
            log.warning(
                "the monitor refused report %d (%s: %s); its %d records are set aside, its "
                "counts sent again alone",
                report.sequence, exc.code().name, reason, len(report.records),
            )  # fmt: skip
            self.refused_records += len(report.records)
            del report.records[:]
            return
        log.error(
            "the monitor refused report %d (%s: %s); it is set aside and its counts are lost",
            report.sequence, exc.code().name, reason,
        )  # fmt: skip
        self.refused_reports += 1
        self._unacked = None

    def _gather(self) -> None:
        held = self._held
        for key, collector, counts, records in self._hub.take():
            if not counts.is_empty:
                if key in held.counts:
                    held.counts[key].merge(counts)
                else:
                    held.counts[key] = counts
                held.names[key] = [f.name for f in collector.features]
            self.dropped_records += collector.dropped_records
            collector.dropped_records = 0
            for record in records:
                size = record_size(record)
                full = held.record_bytes + size > self._max_record_bytes
                if full or len(held.records) >= self._max_records:
                    self.dropped_records += 1
                    continue
                held.records.append((key, record))
                held.record_bytes += size

    async def _report(self) -> Any:
        held = self._held
        counts, held.counts = held.counts, {}
        since, held.since = held.since, time.time()
        records: list[Any] = []
        size = 0
        while held.records and len(records) < self.records_per_report:
            key, record = held.records[0]
            message = _record(key, record)
            grown = size + message.ByteSize()
            if records and grown > self.max_report_bytes:
                break  # the next report takes it
            held.records.popleft()
            held.record_bytes -= record_size(record)
            if grown > self.max_report_bytes:  # alone over the bound: never sendable
                self.dropped_records += 1
                continue
            records.append(message)
            size = grown
            if len(records) % 50 == 0:
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
            batch = self._labels.take(5000, self.max_report_bytes)
            try:
                await stub.SendLabels(
                    fb.SendLabelsRequest(labels=batch), timeout=10.0, metadata=self._metadata()
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _FINAL:
                    self._labels.give_back(batch)
                    self._held_back(exc, "labels")
                    return
                log.error(
                    "the monitor refused %d labels (%s: %s); they are set aside",
                    len(batch), exc.code().name, quote(exc.details() or "", 200),
                )  # fmt: skip
                self.refused_labels += len(batch)


class _ReportingCollector(Collector):
    """What reporting lost, read from the reporter at scrape time."""

    def __init__(self, reporter: MonitorReporter) -> None:
        self._reporter = reporter

    def collect(self) -> Iterator[Metric]:
        reporter = self._reporter
        set_aside = CounterMetricFamily(
            "driftgate_reporting_set_aside",
            "Reports, records and labels the monitor refused for good, set aside (not resent)",
            labels=("kind",),
        )
        set_aside.add_metric(["reports"], reporter.refused_reports)
        set_aside.add_metric(["records"], reporter.refused_records)
        set_aside.add_metric(["labels"], reporter.refused_labels)
        dropped = CounterMetricFamily(
            "driftgate_reporting_dropped_records",
            "Prediction records not kept: sampling caps, size bounds, over-long ids or values",
        )
        dropped.add_metric([], reporter.dropped_records)
        yield from (set_aside, dropped)


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

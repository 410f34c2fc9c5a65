"""Delivery of statistics, prediction records and labels from the gateway to the monitor.

Every ``interval`` seconds, and at every bucket boundary, the reporter takes the deltas of
all collectors and holds each in the bucket of time it was observed in (``HeldCounts``): a
bucket is ``bucket_seconds`` long, aligned on the epoch as the monitor's are, and must be
as long as the monitor's ``bucket_seconds`` (``--report-bucket-seconds`` and the monitor's
``--bucket-seconds``; both default to 60). A delta is taken at each boundary, so none spans
two buckets (to within the event loop's delay at the boundary); one that does, after a
stall, goes to the bucket of its middle. When no report is awaiting acknowledgement, the
oldest held bucket becomes the next report, with this process's instance id, the next
sequence number and ``window_start`` in that bucket (the start of its first delta, never
before the bucket's start), so the monitor, which files counts under the bucket of
``window_start``, puts them in the bucket they were observed in; held buckets go oldest
first, each once. A report is sent until the monitor acknowledges it, unchanged (the monitor
ignores a sequence it has already committed, so counts arrive exactly once); meanwhile new
deltas keep arriving in held buckets. While the monitor is up, that is one report per
interval (two when a boundary passed since the last); after an outage, one per held bucket.

Held buckets are bounded: at most ``max_buckets`` (default 1440, a day of one-minute
buckets). Past the bound the two oldest merge into the older one, so no count is lost, only
the time resolution of the oldest counts (a merged bucket's counts land in its first
bucket); each merge is counted (``driftgate_reporting_merged_buckets_total``). A bucket's
memory is fixed by the reference profiles: per version counted in it, 8 bytes per bin of
every feature and of the predictions, 24 per feature (NaN, infinite, out of range) and 144
for the latency histogram, plus about 200 bytes of numpy and Python overhead per feature;
measured, a version of 20 features of 12 bins takes 6.3 KB a bucket, so a full day of
buckets 9 MB per version served throughout it. The report awaiting acknowledgement comes
on top.

Prediction records are not bucketed: each keeps its own time, and they ride oldest first
on the reports (``records_per_report`` at most each), or alone when no counts are held.
Reports are bounded by bytes as well as records (``max_report_bytes``), and held records by
an estimate of their bytes. A report the monitor refuses for good (INVALID_ARGUMENT or
RESOURCE_EXHAUSTED) is never resent as it was: its counts are sent once more without its
records, and if that is refused too, the report is set aside; each step is logged and
counted (``refused_reports``, ``refused_records``). Labels are sent on every flush whatever
became of the reports, and a batch of labels the monitor refuses for good is set aside
(``refused_labels``) rather than returned to the buffer. Nothing here runs on the request path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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
    DROP_CAUSES,
    LATENCY_BOUNDS,
    MAX_RECORD_ID_BYTES,
    PredictionRecord,
    VersionCollector,
    VersionCounts,
    record_size,
)

__all__ = [
    "BUCKET_SECONDS",
    "MAX_HELD_BUCKETS",
    "MAX_LABEL_VALUE_BYTES",
    "MAX_LABELS_PER_CALL",
    "HeldCounts",
    "LabelBuffer",
    "MonitorReporter",
    "StatisticsHub",
    "check_labels",
]

log = logging.getLogger(__name__)

Key = tuple[str, int]

#: length of a held bucket, seconds: the monitor's default ``bucket_seconds``
BUCKET_SECONDS = 60
#: held buckets at most, by default: a day of one-minute buckets
MAX_HELD_BUCKETS = 1440
#: most labels one SendLabels call may carry
MAX_LABELS_PER_CALL = 10_000
#: longest string label, in bytes
MAX_LABEL_VALUE_BYTES = 1024
# The monitor's refusals that resending cannot change.
_FINAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
# Label times the monitor takes: from 2000-01-01 to a day past its clock.
_EARLIEST = 946_684_800
_CLOCK_SKEW = 86_400
# How long after a bucket boundary the boundary's take runs: past it, never before.
_PAST_BOUNDARY = 0.001


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
        #: labels refused because the buffer was full (the sender was told to retry)
        self.refused = 0

    def add(self, labels: Sequence[Any]) -> int:
        check_labels(labels)
        incoming = list(labels)
        if len(self._labels) + len(incoming) > self.capacity:
            self.refused += len(incoming)
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
class _Bucket:
    """Count deltas observed in one bucket of time, not yet in a report."""

    start: float  # when its first delta began, never before the bucket's own start
    end: float  # when its last delta ended
    counts: dict[Key, VersionCounts] = field(default_factory=dict)

    def add(self, key: Key, counts: VersionCounts) -> None:
        if key in self.counts:
            self.counts[key].merge(counts)
        else:
            self.counts[key] = counts

    def absorb(self, later: _Bucket) -> None:
        for key, counts in later.counts.items():
            self.add(key, counts)
        self.end = max(self.end, later.end)


class HeldCounts:
    """Count deltas held by the bucket of time they were observed in, oldest first.

    At most ``limit`` buckets: past it, the two oldest merge into the older one (counted in
    ``merged``), so no count is lost. Usage::

        held = HeldCounts(60, 1440)
        held.add(("m", 1), counts, start, end)  # a delta counted over [start, end)
        bucket = held.take_oldest()  # its counts, with bucket.start and bucket.end
    """

    def __init__(self, bucket_seconds: int = BUCKET_SECONDS, limit: int = MAX_HELD_BUCKETS):
        if bucket_seconds < 1 or limit < 1:
            raise ValueError(
                f"bucket_seconds and limit must be at least 1, got {bucket_seconds}, {limit}"
            )
        self.bucket_seconds = bucket_seconds
        self.limit = limit
        #: merges of the two oldest buckets, each past the bound
        self.merged = 0
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()  # by bucket number, oldest first

    def add(self, key: Key, counts: VersionCounts, start: float, end: float) -> None:
        """Hold a delta counted over [start, end) in the bucket of its middle.

        Deltas arrive in time order; one whose bucket is older than the newest held (the
        clock stepped back) joins the newest, so buckets stay in order."""
        number = int((start + end) / 2 // self.bucket_seconds)
        if self._buckets:
            number = max(number, next(reversed(self._buckets)))
        bucket = self._buckets.get(number)
        if bucket is None:
            first = max(start, number * self.bucket_seconds)
            bucket = self._buckets[number] = _Bucket(first, max(end, first))
        bucket.add(key, counts)
        bucket.end = max(bucket.end, end)
        self._bound()  # after the add: the new bucket may be the one merged away

    def _bound(self) -> None:
        while len(self._buckets) > self.limit:
            number, oldest = self._buckets.popitem(last=False)
            _, second = self._buckets.popitem(last=False)
            oldest.absorb(second)
            self._buckets[number] = oldest
            self._buckets.move_to_end(number, last=False)
            self.merged += 1

    def take_oldest(self) -> _Bucket | None:
        """The oldest held bucket, no longer held; None when none is."""
        return self._buckets.popitem(last=False)[1] if self._buckets else None

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _Held:
    """Records taken from the collectors and not yet in a report."""

    records: deque[tuple[Key, PredictionRecord]] = field(default_factory=deque)
    record_bytes: int = 0


class MonitorReporter:
    """Sends the hub's deltas and the buffered labels to the monitor, exactly once.

    ``bucket_seconds`` must equal the monitor's ``bucket_seconds``; ``max_buckets`` bounds
    the buckets held while the monitor is away (see the module docstring).
    """

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
        bucket_seconds: int = BUCKET_SECONDS,
        max_buckets: int = MAX_HELD_BUCKETS,
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
        self._counts = HeldCounts(bucket_seconds, max_buckets)
        self._names: dict[Key, list[str]] = {}
        self._taken_at = time.time()  # the end of the last delta taken
        self._unacked: Any = None
        self._sequence = 0
        #: prediction records dropped, by cause (``statistics.DROP_CAUSES``)
        self.dropped: collections.Counter[str] = collections.Counter()
        self.acknowledged = 0
        #: reports the monitor refused for good, set aside (their counts are lost)
        self.refused_reports = 0
        #: records of refused reports, set aside (the counts were sent again without them)
        self.refused_records = 0
        #: labels the monitor refused for good, set aside
        self.refused_labels = 0
        self._tasks: list[asyncio.Task[None]] = []
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

    @property
    def dropped_records(self) -> int:
        """Prediction records dropped, whatever the cause."""
        return sum(self.dropped.values())

    @property
    def buffer_refused_labels(self) -> int:
        """Labels the gateway's buffer refused (answered RESOURCE_EXHAUSTED), never held."""
        return self._labels.refused

    @property
    def held_buckets(self) -> int:
        """Buckets of counts held, not yet in a report."""
        return len(self._counts)

    @property
    def merged_buckets(self) -> int:
        """Merges of the two oldest held buckets, each past ``max_buckets``."""
        return self._counts.merged

    def start(self) -> None:
        self._channel = aio_channel(self.address, self._tls)
        self._tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._boundaries())]

    async def stop(self, final_flush_seconds: float = 2.0) -> None:
        """One last attempt to deliver what is held, then close."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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

    async def _boundaries(self) -> None:
        """Take the deltas just past every bucket boundary, so none spans two buckets, even
        while a report is stuck waiting for the monitor."""
        bucket = self._counts.bucket_seconds
        while True:
            now = time.time()
            await asyncio.sleep((now // bucket + 1) * bucket - now + _PAST_BOUNDARY)
            try:
                self._gather()
            except Exception:
                log.exception("taking statistics at a bucket boundary failed")

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
                if not len(self._counts) and not self._held.records:
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
        start, end = self._taken_at, time.time()
        taken = self._hub.take()
        self._taken_at = end
        for key, collector, counts, records in taken:
            if not counts.is_empty:
                self._counts.add(key, counts, start, end)
                self._names[key] = [f.name for f in collector.features]
            self.dropped.update(collector.dropped)
            collector.dropped.clear()
            for record in records:
                size = record_size(record)
                full = held.record_bytes + size > self._max_record_bytes
                if full or len(held.records) >= self._max_records:
                    self.dropped["buffer_full"] += 1
                    continue
                held.records.append((key, record))
                held.record_bytes += size

    async def _report(self) -> Any:
        """The next report: the oldest held bucket (if any) and the oldest records.

        Records are built in place in the report (half the time of building each alone
        and copying it in: 0.49 against 0.95 ms for 200 forest records).
        """
        held = self._held
        bucket = self._counts.take_oldest()
        report = mpb.ReportRequest(instance_id=self.instance_id)
        records = report.records
        size = 0
        while held.records and len(records) < self.records_per_report:
            key, record = held.records[0]
            grown = size + _add_record(records, key, record).ByteSize()
            if len(records) > 1 and grown > self.max_report_bytes:
                del records[-1]
                break  # the next report takes it
            held.records.popleft()
            held.record_bytes -= record_size(record)
            if grown > self.max_report_bytes:  # alone over the bound: never sendable
                del records[-1]
                self.dropped["too_large"] += 1
                continue
            size = grown
            if len(records) % 50 == 0:
                await asyncio.sleep(0)  # let requests through between chunks
        self._sequence += 1
        now = time.time()
        start, end = (now, now) if bucket is None else (bucket.start, bucket.end)
        counts = {} if bucket is None else bucket.counts
        report.sequence = self._sequence
        report.sent_time.CopyFrom(_timestamp(now))
        report.window_start.CopyFrom(_timestamp(start))
        report.window_end.CopyFrom(_timestamp(end))
        report.versions.extend(
            [_version_stats(key, c, self._names[key]) for key, c in counts.items()]
        )
        return report

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
            "Prediction records sampled but not kept, by cause: buffer_full (the bounded "
            "buffers while the monitor is away or slow), too_large (a record, id or value over "
            "its size bound), count_failed (the bulk count of their batch failed)",
            labels=("cause",),
        )
        for cause in DROP_CAUSES:
            dropped.add_metric([cause], reporter.dropped[cause])
        refused = CounterMetricFamily(
            "driftgate_feedback_refused_labels",
            "Labels refused with RESOURCE_EXHAUSTED because the label buffer was full",
        )
        refused.add_metric([], reporter.buffer_refused_labels)
        merged = CounterMetricFamily(
            "driftgate_reporting_merged_buckets",
            "Merges of the two oldest buckets of counts held for the monitor, past the bound "
            "(--report-max-buckets): no count lost, the oldest counts' time resolution coarser",
        )
        merged.add_metric([], reporter.merged_buckets)
        held = GaugeMetricFamily(
            "driftgate_reporting_held_buckets",
            "Buckets of counts held for the monitor, not yet in a report",
        )
        held.add_metric([], reporter.held_buckets)
        yield from (set_aside, dropped, refused, merged, held)


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


def _add_record(records: Any, key: Key, record: PredictionRecord) -> Any:
    """``record`` as a new message at the end of a report's ``records``; that message."""
    message = records.add(
        request_id=record.request_id,
        model=key[0],
        version=key[1],
        numeric_values=record.numeric,
        categorical_values=record.categorical,
    )
    seconds = int(record.time)
    message.time.seconds = seconds
    message.time.nanos = int((record.time - seconds) * 1e9)
    prediction = message.prediction
    label = record.label
    if isinstance(label, bool | int):
        prediction.int64_value = int(label)
    elif isinstance(label, float):
        prediction.double_value = label
    else:
        prediction.string_value = str(label)
    prediction.probabilities.extend(record.probabilities)
    return message

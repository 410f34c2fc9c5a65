"""The reporter against a monitor that refuses: nothing is resent forever, labels never wait
behind reports, reports stay within their byte bound, and labels are checked on the way in.

The monitor is a fake stub in this process (no sockets); tests/integration covers the real one.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import driftgate.gateway.reporter as reporter_module
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core.errors import InvalidInput
from driftgate.gateway.reporter import (
    MAX_LABELS_PER_CALL,
    HeldCounts,
    LabelBuffer,
    MonitorReporter,
    StatisticsHub,
    check_labels,
)
from driftgate.gateway.statistics import VersionCollector, VersionCounts

REFERENCE = {
    "features": [
        {"name": "f0", "input": "x", "column": 0, "kind": "numeric", "edges": [0.0, 1.0]},
        {"name": "c", "input": "c", "column": 0, "kind": "categorical", "categories": ["a"]},
    ],
    "prediction": {"kind": "categorical", "categories": ["0", "1"]},
}


def _error(code: grpc.StatusCode, details: str = "refused") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeMonitor:
    """Answers Report and SendLabels as ``decide`` says: None accepts, a code refuses."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.committed: list[Any] = []
        self.labels: list[Any] = []
        self.report_answer: Any = lambda request: None
        self.label_answer: Any = lambda request: None

    async def Report(self, request: Any, timeout: float, metadata: Any) -> Any:
        copy = type(request)()
        copy.CopyFrom(request)
        self.reports.append(copy)
        code = self.report_answer(request)
        if code is not None:
            raise _error(code)
        self.committed.append(copy)

    async def SendLabels(self, request: Any, timeout: float, metadata: Any) -> Any:
        code = self.label_answer(request)
        if code is not None:
            raise _error(code)
        self.labels.extend(label.request_id for label in request.labels)


@pytest.fixture
def monitor(monkeypatch: pytest.MonkeyPatch) -> FakeMonitor:
    fake = FakeMonitor()
    monkeypatch.setattr(reporter_module.mpb_grpc, "MonitorStub", lambda channel: fake)
    return fake


def _serve(collector: VersionCollector, rows: int, request_id: str, colour: str = "a") -> None:
    collector.record.request_succeeded(rows, 1000, 0, 0, 1000, 0)
    feed = {
        "x": np.arange(rows, dtype=np.float32).reshape(rows, 1),
        "c": np.full((rows, 1), colour, dtype=object),
    }
    collector.observe(feed, [np.zeros(rows, np.int64)], request_id)


def _label(request_id: str, value: str = "1") -> Any:
    return fb.Label(request_id=request_id, string_value=value)


def _run(monitor: FakeMonitor, steps: Any, **kwargs: Any) -> MonitorReporter:
    """Run ``steps(reporter, collector, labels)`` (a coroutine) against the fake monitor."""
    hub, labels = StatisticsHub(), LabelBuffer()
    collector = VersionCollector(REFERENCE, {"x": 1, "c": 1}, ["label"])
    hub.add("m", 1, 1, collector)
    # Day-long buckets unless a test says otherwise: no boundary splits a test's counts.
    kwargs.setdefault("bucket_seconds", 86_400)
    reporter = MonitorReporter("127.0.0.1:1", hub, labels, interval=3600, **kwargs)

    async def main() -> None:
        reporter.start()
        try:
            await steps(reporter, collector, labels)
        finally:
            await reporter.stop(final_flush_seconds=0)

    asyncio.run(main())
    return reporter


def test_refused_records_are_set_aside_and_the_counts_sent_alone(monitor: FakeMonitor) -> None:
    monitor.report_answer = lambda r: grpc.StatusCode.INVALID_ARGUMENT if r.records else None

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        _serve(collector, 3, "r1")
        labels.add([_label("r1:0")])
        await reporter.flush()
        assert reporter.refused_records == 3 and reporter.refused_reports == 0
        first, retry = monitor.reports
        assert (first.sequence, len(first.records)) == (retry.sequence, 3)
        assert (len(retry.records), retry.versions[0].rows) == (0, 3)
        assert monitor.labels == ["r1:0"]  # labels went too
        await reporter.flush()  # nothing is resent
        assert len(monitor.reports) == 2

    _run(monitor, steps)


def test_a_report_refused_for_good_is_set_aside_and_labels_do_not_wait(
    monitor: FakeMonitor,
) -> None:
    monitor.report_answer = lambda r: grpc.StatusCode.RESOURCE_EXHAUSTED

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        _serve(collector, 1, "r1")
        labels.add([_label("r1")])
        await reporter.flush()
        assert reporter.refused_reports == 1 and monitor.labels == ["r1"]
        assert len(monitor.reports) == 2  # once with its record, once without
        monitor.report_answer = lambda r: None
        _serve(collector, 1, "r2")
        await reporter.flush()
        assert [r.sequence for r in monitor.committed] == [2]
        assert [r.request_id for r in monitor.committed[0].records] == ["r2"]

    registry = CollectorRegistry()
    _run(monitor, steps, registry=registry)
    assert registry.get_sample_value("driftgate_reporting_set_aside_total", {"kind": "reports"})


def test_an_unreachable_monitor_gets_the_same_report_again(monitor: FakeMonitor) -> None:
    monitor.report_answer = lambda r: grpc.StatusCode.UNAVAILABLE
    monitor.label_answer = lambda r: grpc.StatusCode.UNAVAILABLE

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        _serve(collector, 2, "r1")
        labels.add([_label("r1:0")])
        await reporter.flush()
        await reporter.flush()
        assert [(r.sequence, len(r.records)) for r in monitor.reports] == [(1, 2), (1, 2)]
        assert len(labels) == 1  # given back, kept for later
        monitor.report_answer = monitor.label_answer = lambda r: None
        await reporter.flush()
        assert [r.sequence for r in monitor.committed] == [1] and monitor.labels == ["r1:0"]
        assert reporter.refused_reports == reporter.refused_records == 0

    _run(monitor, steps)


def test_labels_the_monitor_refuses_are_set_aside(monitor: FakeMonitor) -> None:
    monitor.label_answer = lambda r: (
        grpc.StatusCode.INVALID_ARGUMENT if r.labels[0].request_id == "bad" else None
    )

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        labels.add([_label("bad"), _label("worse")])
        await reporter.flush()
        assert reporter.refused_labels == 2 and len(labels) == 0
        labels.add([_label("good")])
        await reporter.flush()
        assert monitor.labels == ["good"]

    _run(monitor, steps)


def test_reports_are_bounded_by_bytes(monitor: FakeMonitor) -> None:
    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        for i in range(60):
            _serve(collector, 1, f"{i:0>200}", colour="c" * 1000)  # records of ~1.3 KB
        await reporter.flush()
        sizes = [r.ByteSize() for r in monitor.committed]
        assert len(monitor.committed) >= 3
        assert max(sizes) < 20_000 + 2_000  # the counts ride on the first report
        assert sum(len(r.records) for r in monitor.committed) == 60

    _run(monitor, steps, max_report_bytes=20_000)


def test_records_arrive_field_for_field_and_one_alone_over_the_bound_is_dropped(
    monitor: FakeMonitor,
) -> None:
    before = time.time()

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        _serve(collector, 2, "pair", colour="a")
        _serve(collector, 1, "huge", colour="c" * 3000)  # over the bound on its own
        _serve(collector, 1, "last", colour="b")
        await reporter.flush()

    reporter = _run(monitor, steps, max_report_bytes=2_000)
    after = time.time()
    records = [r for report in monitor.committed for r in report.records]
    assert [r.request_id for r in records] == ["pair:0", "pair:1", "last"]
    assert [list(r.numeric_values) for r in records] == [[0.0], [1.0], [0.0]]
    assert [list(r.categorical_values) for r in records] == [["a"], ["a"], ["b"]]
    for record in records:
        assert (record.model, record.version) == ("m", 1)
        assert record.prediction.WhichOneof("value") == "int64_value"
        assert record.prediction.int64_value == 0
        assert before - 1e-6 <= record.time.ToNanoseconds() / 1e9 <= after
    assert reporter.dropped["too_large"] == 1


@pytest.mark.parametrize(
    ("label", "field", "value"),
    [(True, "int64_value", 1), (7, "int64_value", 7), (0.25, "double_value", 0.25),
     ("spam", "string_value", "spam"), ("", "string_value", "")],
)  # fmt: skip
def test_a_record_keeps_its_label_type_time_and_probabilities(
    label: Any, field: str, value: Any
) -> None:
    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
    from driftgate.gateway.statistics import PredictionRecord

    record = PredictionRecord("r1", 1_700_000_000.25, [1.5, -2.0], ["x"], label, [0.2, 0.8])
    report = mpb.ReportRequest()
    message = reporter_module._add_record(report.records, ("m", 3), record)
    assert message is report.records[0]
    assert message.prediction.WhichOneof("value") == field
    assert getattr(message.prediction, field) == value
    assert list(message.prediction.probabilities) == pytest.approx([0.2, 0.8])
    assert (message.time.seconds, message.time.nanos) == (1_700_000_000, 250_000_000)
    assert (message.model, message.version, message.request_id) == ("m", 3, "r1")
    assert list(message.numeric_values) == [1.5, -2.0] and list(message.categorical_values) == ["x"]


def test_labels_are_checked_before_they_are_held() -> None:
    buffer = LabelBuffer()

    def refused(labels: list[Any], *fragments: str) -> None:
        with pytest.raises(InvalidInput) as info:
            buffer.add(labels)
        for fragment in fragments:
            assert fragment in info.value.message
        assert len(info.value.message) < 400
        assert len(buffer) == 0  # all or nothing

    refused([_label("ok")] * (MAX_LABELS_PER_CALL + 1), f"at most {MAX_LABELS_PER_CALL}")
    refused([_label("ok"), _label("i" * 300_000)], "labels[1].request_id", "(300000 bytes)")
    refused([_label("ok", "v" * 5000)], "string_value", "longer than 1024")
    refused([fb.Label(request_id="ok", double_value=float("nan"))], "finite")
    refused([fb.Label(request_id="ok", model="m" * 100_000, int64_value=1)], "invalid model name")
    refused([fb.Label(request_id="x" * 100_000)], "request_id")
    refused([fb.Label(request_id="ok")], "has no value")
    refused([fb.Label(request_id="n\x00", int64_value=1)], "NUL")
    future = fb.Label(request_id="ok", int64_value=1)
    future.time.seconds = 253_402_300_799
    refused([future], "labels[0].time")
    check_labels([_label("i" * 256), fb.Label(request_id="ok", model="m", int64_value=2)])
    assert buffer.add([_label("ok")]) == 1


def _delta(rows: int) -> VersionCounts:
    counts = VersionCounts.empty([3, 2], 2)
    counts.features[0][1] = rows
    counts.requests = counts.rows = rows
    return counts


def test_held_buckets_past_the_bound_merge_the_oldest_and_lose_no_count() -> None:
    held = HeldCounts(bucket_seconds=60, limit=3)
    minute = 1_800_000_000  # a minute boundary
    for i in range(5):  # five minutes of deltas, 12 s each: rows 1, 2, 3, 4, 5
        for k in range(5):
            start = minute + 60 * i + 12 * k
            held.add(("m", 1), _delta(i + 1), start, start + 12)
    assert (len(held), held.merged) == (3, 2)
    buckets = [held.take_oldest() for _ in range(3)]
    assert held.take_oldest() is None
    # The first three minutes merged into the first; the last two kept their own minute.
    assert [b.start for b in buckets if b] == [minute, minute + 180, minute + 240]
    assert [b.counts["m", 1].rows for b in buckets if b] == [5 * 6, 5 * 4, 5 * 5]
    assert sum(int(b.counts["m", 1].features[0].sum()) for b in buckets if b) == 5 * 15


def test_a_delta_goes_to_the_bucket_of_its_middle_never_starting_before_it() -> None:
    held = HeldCounts(bucket_seconds=60, limit=10)
    minute = 1_800_000_000
    held.add(("m", 1), _delta(1), minute - 0.001, minute + 5)  # a take just early
    held.add(("m", 1), _delta(2), minute + 5, minute + 59.9)
    held.add(("m", 1), _delta(4), minute + 59.9, minute + 70)
    first, second = held.take_oldest(), held.take_oldest()
    assert first is not None and second is not None and held.take_oldest() is None
    assert (first.start, first.end, first.counts["m", 1].rows) == (minute, minute + 59.9, 3)
    assert (second.start, second.counts["m", 1].rows) == (minute + 60, 4)
    with pytest.raises(ValueError):
        HeldCounts(bucket_seconds=0)


async def _next_second(past: float = 0.3) -> None:
    now = time.time()
    await asyncio.sleep(math.floor(now) + 1 + past - now)


def test_counts_held_while_the_monitor_is_away_arrive_per_bucket_oldest_first(
    monitor: FakeMonitor,
) -> None:
    """One-second buckets, at most one held besides the report awaiting acknowledgement."""
    monitor.report_answer = lambda r: grpc.StatusCode.UNAVAILABLE

    async def steps(reporter: MonitorReporter, collector: VersionCollector, labels: Any) -> None:
        await _next_second()
        for rows in (1, 2, 3):  # one request in each of three seconds
            _serve(collector, rows, f"r{rows}")
            await reporter.flush()  # the monitor is away
            await _next_second()
        monitor.report_answer = lambda r: None
        await reporter.flush()

    registry = CollectorRegistry()
    _run(monitor, steps, bucket_seconds=1, max_buckets=1, registry=registry)
    committed = monitor.committed
    assert [r.sequence for r in committed] == [1, 2]
    assert [r.versions[0].rows for r in committed] == [1, 2 + 3]  # the last two merged
    first, second = (r.window_start.seconds for r in committed)
    assert second == first + 1  # the merged bucket keeps its first second
    assert sum(len(r.records) for r in committed) == 6  # records keep their own times
    assert registry.get_sample_value("driftgate_reporting_merged_buckets_total") == 1
    assert registry.get_sample_value("driftgate_reporting_held_buckets") == 0

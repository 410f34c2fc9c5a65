"""Hostile requests to the monitor (``driftgate.monitor.v1.Monitor``), one ``MonitorCase`` each.

``build(model, version)`` is given a model version that is in the monitor's repository and
returns the request; the monitor must answer ``expected`` quickly, store nothing of it, and go
on serving. The cases hold whatever reference profile the version has: each is malformed
against any profile (a profile of fewer than 1000 features, with no prediction distribution of
exactly 5000 bins), so the catalogue can run them against any monitor.

Used by ``tests/integration/test_hostile_input.py`` (the whole catalogue, gateway and monitor),
``tests/integration/test_monitor_hostile.py`` (against a real monitor, on SQLite and PostgreSQL)
and ``tests/test_monitor_validation.py`` (the same requests through the servicer, no socket).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb

__all__ = ["MONITOR_CASES", "MonitorCase"]

NEAR_2_63 = 2**63 - 1
FAR_FUTURE = 253_402_300_799  # 9999-12-31T23:59:59Z, the largest valid Timestamp


@dataclass(frozen=True)
class MonitorCase:
    """A hostile request to ``method`` of ``driftgate.monitor.v1.Monitor``; answer: ``expected``."""

    name: str
    method: str
    build: Callable[[str, int], Any]
    expected: str = "INVALID_ARGUMENT"


def _report(model: str, version: int, **stats: Any) -> pb.ReportRequest:
    """A report of one version entry with ``stats`` (fields of VersionStats), sent now."""
    request = pb.ReportRequest(
        instance_id="hostile-gateway",
        sequence=1,
        versions=[pb.VersionStats(model=model, version=version, **stats)],
    )
    request.sent_time.FromNanoseconds(time.time_ns())
    return request


def _with_record(model: str, version: int, **fields: Any) -> pb.ReportRequest:
    """A report of one prediction record (no counts): ``fields`` of PredictionRecord."""
    request = pb.ReportRequest(instance_id="hostile-gateway", sequence=1)
    request.sent_time.FromNanoseconds(time.time_ns())
    record = request.records.add(model=model, version=version, request_id="r-1")
    record.prediction.string_value = "yes"
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(record, name).extend(value)
        else:
            setattr(record, name, value)
    return request


def _labels(*labels: fpb.Label) -> fpb.SendLabelsRequest:
    return fpb.SendLabelsRequest(labels=list(labels))


def _latency(bounds: list[float], counts: list[int]) -> pb.LatencyHistogram:
    return pb.LatencyHistogram(upper_bounds_seconds=bounds, counts=counts, sum_seconds=1.0)


def _many_versions(model: str, version: int) -> pb.ReportRequest:
    request = _report(model, version, requests=1)
    for _ in range(1024):
        request.versions.add(model=model, version=version, requests=1)
    return request


def _duplicate_version(model: str, version: int) -> pb.ReportRequest:
    request = _report(model, version, requests=1)
    request.versions.add(model=model, version=version, requests=1)
    return request


def _many_records(model: str, version: int) -> pb.ReportRequest:
    request = _report(model, version, requests=1)
    for i in range(10_001):
        request.records.add(request_id=f"r{i}", model=model, version=version)
    return request


def _future_window(model: str, version: int) -> pb.ReportRequest:
    request = _report(model, version, requests=1)
    request.window_start.seconds = FAR_FUTURE
    return request


def _future_label(model: str, version: int) -> fpb.SendLabelsRequest:
    label = fpb.Label(request_id="r-1", string_value="yes")
    label.time.seconds = FAR_FUTURE
    return _labels(label)


def _unknown_feature(model: str, version: int) -> pb.ReportRequest:
    return _report(
        model, version, requests=1, features=[pb.BinCounts(name="\x00no such", counts=[1])]
    )


def _instance(instance_id: str, sequence: int = 1) -> Callable[[str, int], pb.ReportRequest]:
    def build(model: str, version: int) -> pb.ReportRequest:
        request = _report(model, version, requests=1)
        request.instance_id, request.sequence = instance_id, sequence
        return request

    return build


MONITOR_CASES: list[MonitorCase] = [
    # -- Report: who and which version --------------------------------------------------------
    MonitorCase("report-empty-model", "Report", lambda m, v: _report("", v, requests=1)),
    MonitorCase("report-version-minus-1", "Report", lambda m, v: _report(m, -1, requests=1)),
    MonitorCase("report-version-0", "Report", lambda m, v: _report(m, 0, requests=1)),
    MonitorCase(
        "report-model-name-100kb", "Report", lambda m, v: _report("m" * 100_000, v, requests=1)
    ),
    MonitorCase(
        "report-model-path-traversal", "Report", lambda m, v: _report("../../etc", v, requests=1)
    ),
    MonitorCase(
        "report-model-not-in-repository",
        "Report",
        lambda m, v: _report("no-such-model", v, requests=1),
    ),
    MonitorCase(
        "report-version-not-in-repository", "Report", lambda m, v: _report(m, v + 1000, requests=1)
    ),
    MonitorCase("report-version-twice", "Report", _duplicate_version),
    MonitorCase("report-empty-instance-id", "Report", _instance("")),
    MonitorCase("report-instance-id-300-bytes", "Report", _instance("i" * 300)),
    MonitorCase("report-instance-id-nul", "Report", _instance("gateway\x00one")),
    MonitorCase("report-sequence-0", "Report", _instance("hostile-gateway", 0)),
    MonitorCase("report-sequence-negative", "Report", _instance("hostile-gateway", -(2**63))),
    MonitorCase("report-window-in-year-9999", "Report", _future_window),
    MonitorCase("report-1025-versions", "Report", _many_versions),
    MonitorCase("report-10001-records", "Report", _many_records),
    # -- Report: counts ----------------------------------------------------------------------
    MonitorCase("report-negative-requests", "Report", lambda m, v: _report(m, v, requests=-1)),
    MonitorCase(
        "report-near-2-63-requests", "Report", lambda m, v: _report(m, v, requests=NEAR_2_63)
    ),
    MonitorCase("report-near-2-63-rows", "Report", lambda m, v: _report(m, v, rows=NEAR_2_63)),
    MonitorCase(
        "report-errors-above-requests", "Report", lambda m, v: _report(m, v, requests=1, errors=2)
    ),
    MonitorCase(
        "report-counts-summing-past-2-53",
        "Report",
        lambda m, v: _report(m, v, requests=2**52, rows=2**52, latency=_latency([1.0], [2**52, 0])),
    ),
    MonitorCase(
        "report-negative-prediction-count",
        "Report",
        lambda m, v: _report(m, v, requests=1, predictions=pb.BinCounts(name="p", nan_count=-5)),
    ),
    MonitorCase(
        "report-near-2-63-prediction-count",
        "Report",
        lambda m, v: _report(
            m, v, requests=1, predictions=pb.BinCounts(name="p", out_of_range_count=NEAR_2_63)
        ),
    ),
    MonitorCase(
        "report-wrong-prediction-bin-count",
        "Report",
        lambda m, v: _report(
            m, v, requests=1, predictions=pb.BinCounts(name="p", counts=[1] * 5000)
        ),
    ),
    MonitorCase(
        "report-1000-features",
        "Report",
        lambda m, v: _report(
            m, v, requests=1, features=[pb.BinCounts(name=f"f{i}", counts=[1]) for i in range(1000)]
        ),
    ),
    MonitorCase("report-unknown-feature", "Report", _unknown_feature),
    MonitorCase(
        "report-latency-counts-not-bounds-plus-one",
        "Report",
        lambda m, v: _report(m, v, requests=2, latency=_latency([0.1, 1.0], [1, 1])),
    ),
    MonitorCase(
        "report-latency-bounds-decreasing",
        "Report",
        lambda m, v: _report(m, v, requests=2, latency=_latency([1.0, 0.1], [1, 1, 0])),
    ),
    MonitorCase(
        "report-latency-bound-nan",
        "Report",
        lambda m, v: _report(m, v, requests=1, latency=_latency([float("nan")], [1, 0])),
    ),
    MonitorCase(
        "report-negative-latency-count",
        "Report",
        lambda m, v: _report(m, v, requests=1, latency=_latency([0.1], [2, -1])),
    ),
    # -- Report: prediction records ------------------------------------------------------------
    MonitorCase(
        "record-request-id-257-bytes",
        "Report",
        lambda m, v: _with_record(m, v, request_id="r" * 257),
    ),
    MonitorCase(
        "record-request-id-1mb", "Report", lambda m, v: _with_record(m, v, request_id="r" * 2**20)
    ),
    MonitorCase(
        "record-empty-request-id", "Report", lambda m, v: _with_record(m, v, request_id="")
    ),
    MonitorCase(
        "record-request-id-nul", "Report", lambda m, v: _with_record(m, v, request_id="r\x001")
    ),
    MonitorCase("record-empty-model", "Report", lambda m, v: _with_record("", v)),
    MonitorCase("record-version-minus-1", "Report", lambda m, v: _with_record(m, -1)),
    MonitorCase(
        "record-1000-numeric-values",
        "Report",
        lambda m, v: _with_record(m, v, numeric_values=[0.5] * 1000),
    ),
    MonitorCase(
        "record-categorical-value-1mb",
        "Report",
        lambda m, v: _with_record(m, v, categorical_values=["c" * 2**20]),
    ),
    # -- SendLabels ----------------------------------------------------------------------------
    MonitorCase(
        "labels-10001-in-one-call",
        "SendLabels",
        lambda m, v: _labels(
            *(fpb.Label(request_id=f"r{i}", int64_value=1) for i in range(10_001))
        ),
    ),
    MonitorCase(
        "labels-200000-in-one-call",
        "SendLabels",
        lambda m, v: _labels(*(fpb.Label(request_id="r", int64_value=1) for _ in range(200_000))),
    ),
    MonitorCase(
        "label-request-id-257-bytes",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="r" * 257, int64_value=1)),
    ),
    MonitorCase(
        "label-request-id-1mb",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="r" * 2**20, int64_value=1)),
    ),
    MonitorCase(
        "label-empty-request-id",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="", int64_value=1)),
    ),
    MonitorCase(
        "label-string-value-1mb",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="r-1", string_value="y" * 2**20)),
    ),
    MonitorCase(
        "label-nan-value",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="r-1", double_value=float("nan"))),
    ),
    MonitorCase(
        "label-without-value", "SendLabels", lambda m, v: _labels(fpb.Label(request_id="r-1"))
    ),
    MonitorCase(
        "label-model-name-100kb",
        "SendLabels",
        lambda m, v: _labels(fpb.Label(request_id="r-1", model="m" * 100_000, int64_value=1)),
    ),
    MonitorCase("label-time-in-year-9999", "SendLabels", _future_label),
]

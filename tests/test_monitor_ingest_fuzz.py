"""Fuzzing report and label ingest: any ReportRequest (a gateway's report with random damage,
or one built from nothing) is either stored or refused with InvalidInput, never another
exception; what is stored fits the PostgreSQL schema and can be evaluated.

No sockets on SQLite: the requests go through ``MonitorServicer`` methods called directly,
with the monitor's store behind. The same runs on PostgreSQL when
``DRIFTGATE_TEST_POSTGRES_URL`` names a test server (``.ci/run`` starts one).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.errors import FailedPrecondition, InvalidInput
from driftgate.core.repository import validate_model_name
from tests.integration.test_monitor_hostile import store_url
from tests.test_monitor_validation import MODEL, Harness, good_report

EDGES = [2**31, 2**52, 2**53 - 1, 2**53, 2**62, 2**63 - 1, -(2**63), -(2**53)]
ints = st.one_of(st.integers(-2, 12), st.sampled_from(EDGES), st.integers(-(2**63), 2**63 - 1))
TEXTS = [
    "", MODEL, "plain", "broken", "age", "spend", "plan", "../x", "a" * 64, "a" * 65,
    "r" * 256, "r" * 257, "é" * 128, "é" * 129, "x\x00y", "x" * 5000,
]  # fmt: skip
texts = st.one_of(st.text(max_size=6), st.sampled_from(TEXTS), st.text(min_size=100, max_size=300))
floats = st.floats(allow_nan=True, allow_infinity=True)
Mutation = Callable[[st.DrawFn, Any], None]


def _pick(draw: st.DrawFn, repeated: Any) -> Any:
    return repeated[draw(st.integers(0, len(repeated) - 1))] if len(repeated) else None


def _replace(repeated: Any, values: list[Any]) -> None:
    del repeated[:]
    repeated.extend(values)


def _version(draw: st.DrawFn, r: Any) -> None:
    v = _pick(draw, r.versions)
    if v is not None:
        name = draw(st.sampled_from(["model", "version", "requests", "errors", "rows"]))
        setattr(v, name, draw(texts if name == "model" else ints))


def _feature(draw: st.DrawFn, r: Any) -> None:
    v = _pick(draw, r.versions)
    f = None if v is None else _pick(draw, v.features)
    if f is None:
        return
    what = draw(st.sampled_from(["name", "counts", "count", "special", "drop", "twice"]))
    if what == "name":
        f.name = draw(texts)
    elif what == "counts":
        _replace(f.counts, draw(st.lists(ints, max_size=14)))
    elif what == "count" and len(f.counts):
        f.counts[draw(st.integers(0, len(f.counts) - 1))] = draw(ints)
    elif what == "special":
        special = draw(st.sampled_from(["nan_count", "inf_count", "out_of_range_count"]))
        setattr(f, special, draw(ints))
    elif what == "drop":
        v.features.remove(f)
    else:
        v.features.add().CopyFrom(f)


def _predictions(draw: st.DrawFn, r: Any) -> None:
    v = _pick(draw, r.versions)
    if v is None:
        return
    what = draw(st.sampled_from(["name", "counts", "special", "clear"]))
    if what == "name":
        v.predictions.name = draw(texts)
    elif what == "counts":
        _replace(v.predictions.counts, draw(st.lists(ints, max_size=5)))
    elif what == "special":
        v.predictions.nan_count = draw(ints)
    else:
        v.ClearField("predictions")


def _latency(draw: st.DrawFn, r: Any) -> None:
    v = _pick(draw, r.versions)
    if v is not None:
        _replace(v.latency.upper_bounds_seconds, draw(st.lists(floats, max_size=4)))
        _replace(v.latency.counts, draw(st.lists(ints, max_size=5)))
        v.latency.sum_seconds = draw(floats)


def _record(draw: st.DrawFn, r: Any) -> None:
    record = _pick(draw, r.records)
    if record is None:
        return
    what = draw(st.sampled_from(["id", "model", "version", "numeric", "categorical", "value"]))
    if what == "id":
        record.request_id = draw(texts)
    elif what == "model":
        record.model = draw(texts)
    elif what == "version":
        record.version = draw(ints)
    elif what == "numeric":
        _replace(record.numeric_values, draw(st.lists(floats, max_size=4)))
    elif what == "categorical":
        _replace(record.categorical_values, draw(st.lists(texts, max_size=3)))
    else:
        kind = draw(st.sampled_from(["string_value", "int64_value", "double_value", None]))
        if kind is None:
            record.prediction.ClearField("value")
        else:
            values = {"string_value": texts, "double_value": floats, "int64_value": ints}
            setattr(record.prediction, kind, draw(values[kind]))
        _replace(record.prediction.probabilities, draw(st.lists(floats, max_size=3)))


def _times(draw: st.DrawFn, r: Any) -> None:
    stamp = draw(st.sampled_from(["sent_time", "window_start", "record"]))
    target = _pick(draw, r.records).time if stamp == "record" and r.records else None
    if target is None:
        target = getattr(r, "window_start" if stamp == "record" else stamp)
    target.seconds = draw(ints)
    target.nanos = draw(st.integers(-(2**31), 2**31 - 1))


def _entries(draw: st.DrawFn, r: Any) -> None:
    """Add or drop whole version entries and records."""
    what = draw(st.sampled_from(["copy version", "new version", "drop version", "copy record"]))
    if what == "copy version" and r.versions:
        r.versions.add().CopyFrom(_pick(draw, r.versions))
    elif what == "new version":
        r.versions.add(model=draw(texts), version=draw(ints), requests=draw(ints))
    elif what == "drop version" and r.versions:
        r.versions.remove(_pick(draw, r.versions))
    elif r.records:
        r.records.add().CopyFrom(_pick(draw, r.records))


def _instance(draw: st.DrawFn, r: Any) -> None:
    if draw(st.booleans()):
        r.instance_id = draw(texts)
    else:
        r.sequence = draw(ints)


MUTATIONS: list[Mutation] = [
    _version, _feature, _feature, _predictions, _latency, _record, _record, _times, _entries,
    _instance,
]  # fmt: skip


@st.composite
def reports(draw: st.DrawFn, harness: Harness) -> Any:
    """A good report with up to four random changes, or now and then one built from nothing."""
    if draw(st.integers(0, 9)) == 0:
        request = pb.ReportRequest(instance_id=draw(texts), sequence=draw(ints))
        for _ in range(draw(st.integers(0, 2))):
            v = request.versions.add(model=draw(texts), version=draw(ints), requests=draw(ints))
            v.features.add(name=draw(texts), counts=draw(st.lists(ints, max_size=4)))
        return request
    request = good_report(harness.profile, records=draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(0, 4))):
        draw(st.sampled_from(MUTATIONS))(draw, request)
    return request


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    for url in store_url(request.param):
        h = Harness(tmp_path_factory.mktemp(f"fuzz-{request.param}"), url)
        yield h
        h.close()


def _ingest(harness: Harness, request: Any) -> str:
    """Report ``request``; "stored" or "refused" (anything else raises)."""
    if request.instance_id == "gateway-1":  # unchanged: a fresh instance, so sequence 1 applies
        request.instance_id = f"fuzz-{uuid.uuid4().hex}"
    try:
        harness.call("Report", request)
    except InvalidInput:
        return "refused"
    except FailedPrecondition:  # only a version or record whose reference.json is unreadable
        named = [v.model for v in request.versions] + [r.model for r in request.records]
        assert "broken" in named, request
        return "refused"
    return "stored"


def test_any_report_is_stored_or_refused_and_what_is_stored_fits(harness: Harness) -> None:
    outcomes: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=reports(harness))
    def ingest(request: Any) -> None:
        outcome = _ingest(harness, request)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        event(outcome)

    ingest()
    assert outcomes.get("stored", 0) > 10 and outcomes.get("refused", 0) > 10, outcomes
    _assert_store_fits_the_schema(harness)
    harness.monitor.evaluate()
    assert harness.sample("driftgate_monitor_evaluation_failures_total", model=MODEL) == 0


def _assert_store_fits_the_schema(harness: Harness) -> None:
    """What PostgreSQL would refuse or overflow on, checked on any store."""
    with harness.store.engine.connect() as connection:

        def column(sql: str) -> list[Any]:
            return [row[0] for row in connection.execute(sa.text(sql))]

        models = column("SELECT DISTINCT model FROM bin_counts UNION SELECT model FROM traffic")
        for model in models:
            validate_model_name(model)
        versions = column("SELECT version FROM traffic UNION SELECT version FROM predictions")
        assert all(v >= 1 for v in versions)
        for request_id in column("SELECT request_id FROM predictions"):
            assert 0 < len(request_id.encode()) <= 256 and "\x00" not in request_id
        for instance in column("SELECT instance_id FROM reports"):
            assert 0 < len(instance.encode()) <= 128 and "\x00" not in instance
        for name in column("SELECT DISTINCT name FROM bin_counts"):
            assert len(name.encode()) <= 256 and "\x00" not in name
        counts = column("SELECT count FROM bin_counts UNION ALL SELECT count FROM latency")
        assert all(0 <= c < 2**63 for c in counts)
        assert all(math.isfinite(le) and le > 0 for le in column("SELECT le FROM latency"))


@st.composite
def label_batches(draw: st.DrawFn) -> list[Any]:
    values = {"string_value": texts, "int64_value": ints, "double_value": floats}
    batch = []
    for _ in range(draw(st.integers(0, 6))):
        label = fpb.Label(request_id=draw(texts), model=draw(st.one_of(st.just(""), texts)))
        kind = draw(st.sampled_from([*values, None]))
        if kind is not None:
            setattr(label, kind, draw(values[kind]))
        if draw(st.booleans()):
            label.time.seconds = draw(ints)
        batch.append(label)
    return batch


def test_any_label_batch_is_joined_or_refused(harness: Harness) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=label_batches())
    def send(batch: list[Any]) -> None:
        try:
            answer = harness.call("SendLabels", fpb.SendLabelsRequest(labels=batch))
        except InvalidInput:
            event("refused")
            return
        event("joined")
        assert answer.accepted + answer.duplicates + answer.unknown == len(batch)

    send()

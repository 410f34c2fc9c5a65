"""The monitor store on both of its databases: SQLite and a real PostgreSQL server.

Every test runs twice, on an SQLite file and on a fresh PostgreSQL database made for it on the
server named by ``DRIFTGATE_TEST_POSTGRES_URL`` (``.ci/run`` starts one on loopback and sets
it; without it the PostgreSQL cases are skipped, and fail under CI). The last test runs a real
``driftgate monitor --store-url postgresql+psycopg://...``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.profile import FeatureProfile, NumericBins, ReferenceProfile
from driftgate.monitor.accuracy import Accuracy, JoinedPrediction, accuracy_from, accuracy_of
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.service import Monitor
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import (
    MIGRATIONS,
    Distribution,
    LabelIn,
    PredictionIn,
    Report,
    Store,
    Task,
    VersionCounts,
    sqlite_url,
)
from tests.postgres import scratch_database
from tests.processes import DriftgateProcess

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    with scratch_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    value: str = request.getfixturevalue("postgres_url")
    return value


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = Store(url)
    yield store
    store.close()


def _report(sequence: int, instance: str = "gw-a", records: tuple[str, ...] = ()) -> Report:
    counts = VersionCounts(
        "iris", 1,
        [Distribution("x", [1, 2, 3], nan_count=1), Distribution("label", [4, 0], prediction=True)],
        requests=5, errors=1, rows=6, latency_bounds=[0.01], latency_counts=[4, 1], latency_sum=0.1,
    )  # fmt: skip
    return Report(
        instance, sequence, T0 + sequence,
        [counts],
        [PredictionIn(r, T0 + sequence, "iris", 1, [1.5], ["a"], "setosa", [0.9]) for r in records],
    )  # fmt: skip


def test_dialect(store: Store, url: str) -> None:
    assert store.engine.dialect.name == url.split(":")[0].split("+")[0]
    assert store.schema_version == len(MIGRATIONS)


def test_same_sequence_twice_is_counted_once(store: Store) -> None:
    assert store.ingest(_report(1)) == (1, True)
    assert store.ingest(_report(1)) == (1, False)
    assert store.ingest(_report(2)) == (2, True)
    assert store.ingest(_report(1, instance="gw-b")) == (1, True)
    counts = store.counts("iris", 1, None, None)
    assert counts[(False, "x")] == {0: 3, 1: 6, 2: 9, -1: 3}
    assert counts[(True, "label")] == {0: 12}
    traffic = store.traffic("iris", 1, None, None)
    assert (traffic["requests"], traffic["errors"], traffic["rows"]) == (15, 3, 18)


def test_committed_reports_survive_reopen(store: Store, url: str) -> None:
    store.ingest(_report(1, records=("r1",)))
    store.close()
    reopened = Store(url)
    try:
        assert reopened.schema_version == len(MIGRATIONS)
        assert reopened.ingest(_report(1, records=("r1",))) == (1, False)
        assert reopened.counts("iris", 1, None, None)[(False, "x")][2] == 3
        assert [p.request_id for p in reopened.predictions("iris", 1, None, None)] == ["r1"]
    finally:
        reopened.close()


def test_windows_select_buckets(url: str) -> None:
    store = Store(url, bucket_seconds=60)
    try:
        store.ingest(Report("gw", 1, T0, [VersionCounts("m", 1, [Distribution("x", [1])])]))
        later = Report("gw", 2, T0 + 3600, [VersionCounts("m", 1, [Distribution("x", [10])])])
        store.ingest(later)
        assert store.counts("m", 1, T0 + 1800, T0 + 7200)[(False, "x")] == {0: 10}
        assert store.counts("m", 1, None, T0 + 7200)[(False, "x")] == {0: 11}
        assert store.active_versions(T0 + 1800) == [("m", 1)]
    finally:
        store.close()


def test_labels_join_in_any_order_and_duplicates_are_idempotent(store: Store) -> None:
    store.ingest(_report(1, records=("known",)))
    result = store.add_labels(
        [
            LabelIn("known", "setosa", T0 + 10),
            LabelIn("early", "virginica", T0 + 11),
            LabelIn("known", "versicolor", T0 + 12),
            LabelIn("early", "setosa", T0 + 13),
        ],
        now=T0 + 20,
    )
    assert result == (1, 2, 1, 0)  # accepted, duplicates, unknown, ambiguous
    store.ingest(_report(2, records=("early",)))
    labels = {p.request_id: p.label for p in store.predictions("iris", 1, None, None)}
    assert labels == {"known": "setosa", "early": "virginica"}
    assert store.table_rows()["pending_labels"] == 0


def _records(sequence: int, model: str, ids: tuple[str, ...], value: str) -> Report:
    """A report of records only: ``model`` version 1 answered ``value`` to each id."""
    return Report(
        f"gw-{model}", sequence, T0 + sequence, [],
        [PredictionIn(r, T0 + sequence, model, 1, [1.0], ["a"], value, [0.9]) for r in ids],
    )  # fmt: skip


def _joined(store: Store, model: str) -> dict[str, object]:
    return {p.request_id: p.label for p in store.predictions(model, 1, None, None)}


def test_two_models_sharing_request_ids_join_their_own_labels(store: Store) -> None:
    """Records and labels are keyed by (model, request id): one business id, two models."""
    store.ingest(_records(1, "iris", ("a", "b"), "setosa"))
    store.ingest(_records(1, "churn", ("a",), "stay"))
    outcome = store.add_labels(
        [
            LabelIn("a", "virginica", T0 + 10, "iris"),
            LabelIn("a", "leave", T0 + 11, "churn"),
            LabelIn("b", "leave", T0 + 12, "churn"),  # churn has not answered "b" yet: held
            LabelIn("a", "setosa", T0 + 13, "iris"),  # the first label of (iris, a) wins
        ],
        now=T0 + 20,
    )
    assert outcome == (2, 1, 1, 0)
    store.ingest(_records(2, "churn", ("b", "a"), "stay"))  # (churn, a) again: first kept
    assert _joined(store, "iris") == {"a": "virginica", "b": None}
    assert _joined(store, "churn") == {"a": "leave", "b": "leave"}
    assert store.table_rows()["pending_labels"] == 0
    # The held label of one model never joins another model's record with the same id.
    store.add_labels([LabelIn("c", "stay", T0 + 30, "churn")], now=T0 + 30)
    store.ingest(_records(3, "iris", ("c",), "setosa"))
    assert _joined(store, "iris")["c"] is None
    assert store.table_rows()["pending_labels"] == 1
    store.ingest(_records(4, "churn", ("c",), "stay"))
    assert _joined(store, "churn")["c"] == "stay"
    assert store.table_rows()["pending_labels"] == 0


def test_label_without_model_joins_only_an_unambiguous_record(store: Store) -> None:
    store.ingest(_records(1, "iris", ("only-iris", "both"), "setosa"))
    store.ingest(_records(1, "churn", ("both",), "stay"))
    outcome = store.add_labels(
        [
            LabelIn("only-iris", "virginica", T0 + 10),  # one model has it: joined
            LabelIn("only-iris", "setosa", T0 + 11),  # ... once
            LabelIn("both", "leave", T0 + 12),  # two models have it: ambiguous, not stored
            LabelIn("later", "leave", T0 + 13),  # none has it yet: held
            LabelIn("later", "stay", T0 + 14),  # held once
            LabelIn("both", "leave", T0 + 15, "churn"),  # naming the model settles it
        ],
        now=T0 + 20,
    )
    assert outcome == (2, 2, 1, 1)
    # A held label that named no model joins the first record with its id to arrive; a label
    # held for that record's own model wins over it.
    store.add_labels([LabelIn("later", "stay", T0 + 21, "churn")], now=T0 + 21)
    store.ingest(_records(2, "churn", ("later",), "stay"))
    store.ingest(_records(3, "iris", ("later",), "setosa"))
    assert _joined(store, "churn") == {"both": "leave", "later": "stay"}
    assert _joined(store, "iris") == {"only-iris": "virginica", "both": None, "later": "leave"}
    assert store.table_rows()["pending_labels"] == 0


def test_retention_honours_the_label_delay(store: Store) -> None:
    """Records younger than the label window survive the row cap and a shorter age limit."""
    for sequence in range(1, 11):  # records at T0 + 1 ... T0 + 10
        store.ingest(_records(sequence, "iris", (f"r{sequence}",), "setosa"))
    store.add_labels([LabelIn("held", 1, T0 + 6, "iris")], now=T0 + 6)
    now = T0 + 20
    # The newest 3 are kept by count, plus r5 ... r7, which are younger than the window (15 s).
    deleted = store.prune(now, max_records=3, record_age=1, counts_age=1e9, label_window=15.5)
    assert deleted["predictions"] == 4
    assert deleted["pending_labels"] == 0  # received 14 s ago: past record_age, not the window
    assert list(_joined(store, "iris")) == [f"r{i}" for i in range(5, 11)]
    deleted = store.prune(now + 100, max_records=3, record_age=1, counts_age=1e9, label_window=15)
    assert (deleted["predictions"], deleted["pending_labels"]) == (6, 1)


def _old_store(url: str) -> None:
    """A store as schema version 2 left it: records and held labels keyed by request id."""
    old = sa.MetaData()
    sa.Table("schema_version", old, sa.Column("version", sa.Integer, nullable=False))
    sa.Table(
        "predictions", old,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("request_id", sa.String(256), nullable=False, unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("time", sa.Float, nullable=False, index=True),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("prediction", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("label_time", sa.Float, nullable=True),
        sa.Index("predictions_model_version_time", "model", "version", "time"),
    )  # fmt: skip
    sa.Table(
        "pending_labels", old,
        sa.Column("request_id", sa.String(256), primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("label_time", sa.Float, nullable=False),
        sa.Column("received", sa.Float, nullable=False, index=True),
    )  # fmt: skip
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        old.create_all(connection)
        # The other tables of versions 1 and 2 are today's: only these two changed.
        from driftgate.monitor.store import metadata

        keep = [t for t in metadata.sorted_tables if t.name not in old.tables]
        metadata.create_all(connection, tables=keep)
        connection.execute(sa.text("INSERT INTO schema_version (version) VALUES (2)"))
        record = "INSERT INTO predictions (request_id, model, version, time, inputs, prediction)"
        connection.execute(
            sa.text(f"{record} VALUES ('a', 'iris', 1, {T0}, :inputs, :prediction)"),
            {
                "inputs": json.dumps({"numeric": [1.0], "categorical": ["a"]}),
                "prediction": json.dumps({"value": "setosa", "probabilities": [0.9]}),
            },
        )
        connection.execute(
            sa.text(
                "INSERT INTO pending_labels (request_id, label, label_time, received)"
                f" VALUES ('early', '{{\"value\": \"stay\"}}', {T0}, {T0})"
            )
        )
    engine.dispose()


def test_an_old_store_is_migrated_in_place(url: str) -> None:
    _old_store(url)
    store = Store(url)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert _joined(store, "iris") == {"a": None}
        # The same id answered by another model is a second record now, with its own label.
        store.ingest(_records(1, "churn", ("a", "early"), "stay"))
        assert store.add_labels([LabelIn("a", "leave", T0 + 5, "churn")], now=T0 + 5) == (
            1, 0, 0, 0,
        )  # fmt: skip
        assert _joined(store, "churn") == {"a": "leave", "early": "stay"}  # the held label
        assert _joined(store, "iris") == {"a": None}
        assert store.table_rows()["pending_labels"] == 0
    finally:
        store.close()
    reopened = Store(url)  # migrates nothing again
    assert reopened.schema_version == len(MIGRATIONS)
    reopened.close()


def test_retention_prunes_by_age_and_by_rows(store: Store) -> None:
    for sequence in range(1, 11):
        store.ingest(_report(sequence, records=(f"r{sequence}",)))
    store.add_labels([LabelIn("never", 1, T0)], now=T0)
    deleted = store.prune(now=T0 + 5.5 + 100, max_records=3, record_age=100, counts_age=1e9)
    assert deleted["predictions"] == 7
    assert deleted["pending_labels"] == 1
    remaining = [p.request_id for p in store.predictions("iris", 1, None, None)]
    assert remaining == ["r8", "r9", "r10"]


def test_events_round_trip(store: Store) -> None:
    store.add_event(T0, "rollback", "iris", 2, "accuracy drop", {"accuracy": 0.71})
    store.add_event(T0 + 1, "promote", "iris", 3, "healthy", {})
    events = store.events("iris")
    assert [(e.kind, e.version, e.figures) for e in events] == [
        ("promote", 3, {}),
        ("rollback", 2, {"accuracy": 0.71}),
    ]


def test_concurrent_writers_lose_no_increment(store: Store, url: str) -> None:
    """Four gateways report at once into the same bins: every count lands exactly once."""
    writers = [Store(url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(index: int, writer: Store) -> None:
        try:
            for sequence in range(1, 16):
                writer.ingest(_report(sequence, instance=f"gw-{index}"))
                writer.ingest(_report(sequence, instance=f"gw-{index}"))  # a resend
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, w)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for writer in writers:
        writer.close()
    assert not errors, errors
    assert store.counts("iris", 1, None, None)[(False, "x")] == {0: 60, 1: 120, 2: 180, -1: 60}
    assert store.traffic("iris", 1, None, None)["requests"] == 4 * 15 * 5


def test_replicas_opening_together_migrate_once(postgres_url: str) -> None:
    """Replicas share one PostgreSQL store (an embedded SQLite file has one opener)."""
    url = postgres_url
    opened: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            opened.append(Store(url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert {s.schema_version for s in opened} == {len(MIGRATIONS)}
    with opened[0].engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT version FROM schema_version")).all()
    assert [tuple(r) for r in rows] == [(len(MIGRATIONS),)]
    for store in opened:
        store.close()


def test_monitor_process_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """``driftgate monitor --store-url postgresql+psycopg://...`` commits reports there."""
    # The monitor stores counts only of a version in its repository, on its profile's bins.
    version = tmp_path / "models" / "churn" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not read by the monitor")
    age = NumericBins((0.0, 1.0), (1, 2, 3), 0, None, None, None, None, 0.0)
    profile = ReferenceProfile(6, (FeatureProfile("age", "input", 0, age),), None)
    (version / "reference.json").write_text(json.dumps(profile.to_dict()))
    args = [
        "--store-url", postgres_url, "--repository", str(tmp_path / "models"),
        "--data-dir", str(tmp_path / "unused"), "--host", "127.0.0.1",
        "--grpc-port", "0", "--metrics-port", "0",
    ]  # fmt: skip
    process = DriftgateProcess("monitor", args, tmp_path, {}).wait_ready()
    try:
        request = pb.ReportRequest(
            instance_id="gateway-1",
            sequence=1,
            versions=[
                pb.VersionStats(
                    model="churn",
                    version=1,
                    features=[pb.BinCounts(name="age", counts=[1, 2, 3])],
                    requests=7,
                    rows=6,
                )
            ],
        )
        request.sent_time.FromNanoseconds(time.time_ns())
        with grpc.insecure_channel(process.address) as channel:
            stub = pb_grpc.MonitorStub(channel)
            assert stub.Report(request, timeout=10).committed_sequence == 1
            assert stub.Report(request, timeout=10).committed_sequence == 1
    finally:
        assert process.terminate() == 0
    assert not (tmp_path / "unused" / "monitor.db").exists()
    store = Store(postgres_url)
    try:
        assert store.counts("churn", 1, None, None) == {(False, "age"): {0: 1, 1: 2, 2: 3}}
        assert store.traffic("churn", 1, None, None)["requests"] == 7
    finally:
        store.close()


# -- accuracy aggregates ------------------------------------------------------------------


def _answers(
    sequence: int, model: str, answers: list[tuple[str, object, list[float]]], at: float = 0.0
) -> Report:
    """A report of records only: ``model`` version 1 gave each (request id, value, probabilities)
    at ``T0 + at`` (records a second apart)."""
    return Report(
        f"gw-{model}", sequence, T0 + at, [],
        [
            PredictionIn(r, T0 + at + i, model, 1, [1.0], ["a"], value, probabilities)  # type: ignore[arg-type]
            for i, (r, value, probabilities) in enumerate(answers)
        ],
    )  # fmt: skip


def _from_records(store: Store, model: str, task: str, classes: tuple[str, ...]) -> Accuracy:
    """The figures ``accuracy_of`` gives from the stored records themselves."""
    records = store.predictions(model, 1, None, None)
    joined = [
        JoinedPrediction(
            r.value, r.probabilities, r.label,
            None if r.label_time is None else max(r.label_time - r.time, 0.0),
        )
        for r in records
    ]  # fmt: skip
    return accuracy_of(joined, task, classes)


def _same(a: Accuracy, b: Accuracy) -> None:
    """Equal figures, floats to rounding (sums are added in another order)."""
    left, right = dataclasses.asdict(a), dataclasses.asdict(b)
    assert left.keys() == right.keys()
    for name in left:
        x, y = left[name], right[name]
        if isinstance(x, float | dict):
            assert x == pytest.approx(y, rel=1e-12), name
        else:
            assert x == y, name


CLASSIFIER_ANSWERS = [
    ("c1", "yes", [0.2, 0.8]),
    ("c2", "no", [0.9, 0.1]),
    ("c3", "yes", [0.4, 0.6]),
    ("c4", "no", [0.7, 0.3]),
    ("c5", "yes", [0.0, 1.0]),  # clipped before the log
    ("c6", "no", [0.55, 0.45]),  # never labelled
]


@pytest.mark.parametrize("classes", [("no", "yes"), ()], ids=["class-labels", "no-model-json"])
def test_classifier_aggregates_give_the_records_figures(
    store: Store, classes: tuple[str, ...]
) -> None:
    """Labels before and after their records, resent reports and records, repeated labels:
    the per-bucket aggregates give what ``accuracy_of`` gives on the stored records."""
    task = Task("classification", classes)
    early = store.add_labels([LabelIn("c1", "yes", T0 - 5, "churn")], now=T0)
    assert early == (0, 0, 1, 0)  # held until its record arrives
    tasks = {("churn", 1): task}
    assert store.ingest(_answers(1, "churn", CLASSIFIER_ANSWERS[:3]), tasks)[1]
    assert not store.ingest(_answers(1, "churn", CLASSIFIER_ANSWERS[:3]), tasks)[1]  # resent
    store.ingest(_answers(2, "churn", CLASSIFIER_ANSWERS[2:], at=90), tasks)  # c3 again: kept once
    outcome = store.add_labels(
        [
            LabelIn("c2", "yes", T0 + 400, "churn"),  # wrong, lag ~400 s
            LabelIn("c3", "yes", T0 + 7200, "churn"),
            LabelIn("c4", "no", T0 + 95, "churn"),
            LabelIn("c5", "no", T0 + 100),  # the only record with that id: joined, wrong
            LabelIn("c2", "no", T0 + 500, "churn"),  # the first label wins
        ],
        now=T0 + 7200,
    )
    assert outcome == (4, 1, 0, 0)
    figures = accuracy_from(
        store.accuracy_totals("churn", 1, None, None), "classification", classes
    )
    assert (figures.prediction_count, figures.label_count) == (6, 5)
    assert figures.accuracy == pytest.approx(3 / 5)
    assert figures.recall == {"no": pytest.approx(1 / 2), "yes": pytest.approx(2 / 3)}
    assert figures.estimated_accuracy == pytest.approx((0.8 + 0.9 + 0.6 + 0.7 + 1.0 + 0.55) / 6)
    assert figures.log_loss is not None and figures.log_loss > 6  # c5: -log(1e-15) / 5
    _same(figures, _from_records(store, "churn", "classification", classes))
    # The bucket of the first records holds c1 ... c3 (the second report came 90 s later).
    bucket = T0 // 60 * 60
    totals = store.accuracy_totals("churn", 1, bucket, bucket + 60)
    first = accuracy_from(totals, "classification", classes)
    assert (first.prediction_count, first.label_count, first.accuracy) == (3, 3, 2 / 3)


def test_regressor_aggregates_give_the_records_figures(store: Store) -> None:
    answers = [("r1", 10.0, []), ("r2", 12.5, []), ("r3", 7.0, []), ("r4", 1.0, [])]
    store.ingest(_answers(1, "price", answers[:2]), {("price", 1): Task("regression")})
    # Without the task from model.json the store guesses it from the first record: a number
    # without probabilities is a regressor's answer.
    store.ingest(_answers(2, "price", answers[2:], at=60))
    store.add_labels(
        [LabelIn("r1", 11.0, T0 + 30), LabelIn("r2", 10.0, T0 + 3600), LabelIn("r3", 7, T0 + 61)],
        now=T0 + 3600,
    )
    figures = accuracy_from(store.accuracy_totals("price", 1, None, None), "regression")
    assert (figures.prediction_count, figures.label_count) == (4, 3)
    assert figures.mae == pytest.approx((1.0 + 2.5 + 0.0) / 3)
    assert figures.rmse == pytest.approx(((1.0 + 6.25) / 3) ** 0.5)
    assert figures.accuracy is None and figures.estimated_accuracy is None
    _same(figures, _from_records(store, "price", "regression", ()))
    assert store.table_rows()["confusion"] == 0  # a regressor's answers are not classes


def test_windows_across_days_count_each_record_once(store: Store) -> None:
    """A window sums whole days from day rows and its partial days from bucket rows: every
    window gives the figures of exactly the records made in its buckets."""
    answers = [(f"d{i}", "yes" if i % 3 else "no", [0.4, 0.6]) for i in range(40)]
    task = {("churn", 1): Task("classification", ("no", "yes"))}
    for i, answer in enumerate(answers):  # a record every 2 hours and a bit, over 3.5 days
        store.ingest(_answers(i + 1, "churn", [answer], at=i * 7500.0), task)
    labels = [
        LabelIn(r, "yes" if i % 2 else "no", T0 + i * 7500 + 60, "churn")
        for i, (r, _, _) in enumerate(answers)
        if i % 4  # a quarter never labelled
    ]
    store.add_labels(labels, now=T0 + 4 * 86400)
    records = store.predictions("churn", 1, None, None)
    day = T0 // 86400 * 86400
    for start, end in [
        (None, None), (T0 + 3600, T0 + 3 * 86400), (day + 86400, day + 3 * 86400),
        (day + 86400 - 60, day + 2 * 86400 + 60), (T0 - 60, T0 + 7600), (None, day + 2 * 86400),
    ]:  # fmt: skip
        lo = -math.inf if start is None else math.floor(start)
        hi = math.inf if end is None else math.ceil(end)
        inside = [r for r in records if lo <= r.time // 60 * 60 < hi]
        joined = [
            JoinedPrediction(r.value, r.probabilities, r.label,
                             None if r.label_time is None else r.label_time - r.time)
            for r in inside
        ]  # fmt: skip
        expected = accuracy_of(joined, "classification", ("no", "yes"))
        totals = store.accuracy_totals("churn", 1, start, end)
        figures = accuracy_from(totals, "classification", ("no", "yes"))
        assert figures.prediction_count == len(inside) > 0, (start, end)
        _same(figures, expected)


def test_label_lag_percentiles_from_the_histogram(store: Store) -> None:
    answers = [(f"l{i}", "yes", [0.3, 0.7]) for i in range(100)]
    store.ingest(_answers(1, "churn", answers), {("churn", 1): Task("classification")})
    # Record i was made at T0 + i; its label comes 60 s later, or 1 h later for the last 5.
    lags = [3600.0 if i >= 95 else 60.0 for i in range(100)]
    store.add_labels(
        [LabelIn(f"l{i}", "yes", T0 + i + lag, "churn") for i, lag in enumerate(lags)],
        now=T0 + 4000,
    )
    lag = accuracy_from(
        store.accuracy_totals("churn", 1, None, None), "classification"
    ).label_lag_seconds
    assert lag["p50"] == pytest.approx(60, rel=0.06)
    assert lag["p90"] == pytest.approx(60, rel=0.06)
    assert lag["p99"] == pytest.approx(3600, rel=0.06)


def test_accuracy_aggregates_are_pruned_with_the_counts(store: Store) -> None:
    """Aggregates outlive their records (record retention) and go with the counts."""
    task = {("churn", 1): Task("classification", ("no", "yes"))}
    store.ingest(_answers(1, "churn", CLASSIFIER_ANSWERS[:3]), task)  # T0 ... T0 + 2
    store.ingest(_answers(2, "churn", CLASSIFIER_ANSWERS[3:], at=3600), task)
    store.add_labels([LabelIn(r, "yes", T0 + 3700, "churn") for r, _, _ in CLASSIFIER_ANSWERS], T0)
    deleted = store.prune(T0 + 7200, max_records=0, record_age=60, counts_age=1e9)
    assert deleted["predictions"] == 6
    total = accuracy_from(store.accuracy_totals("churn", 1, None, None), "classification")
    assert (total.prediction_count, total.label_count, total.accuracy) == (6, 6, 3 / 6)
    store.prune(T0 + 7200, max_records=0, record_age=60, counts_age=5000)  # the first bucket
    total = accuracy_from(store.accuracy_totals("churn", 1, None, None), "classification")
    assert (total.prediction_count, total.label_count, total.accuracy) == (3, 3, 1 / 3)  # c5


def test_a_store_of_schema_3_gets_aggregates_of_its_records(url: str) -> None:
    """Migration 4 on a store holding records and labels: the aggregates are summed from them
    (the task guessed per version), and the window indexes exist."""
    store = Store(url)
    store.ingest(_answers(1, "churn", CLASSIFIER_ANSWERS))
    store.ingest(_answers(1, "price", [("r1", 10.0, []), ("r2", 12.5, [])]))
    store.add_labels(
        [LabelIn(r, v, T0 + 100, "churn") for r, v in (("c1", "yes"), ("c2", "yes"), ("c5", "no"))]
        + [LabelIn("r1", 11.0, T0 + 50, "price"), LabelIn("c9", "no", T0 + 5, "churn")],
        now=T0 + 100,
    )
    expected = _from_records(store, "churn", "classification", ())
    with store.engine.begin() as connection:  # back to schema 3: its tables, its indexes
        for name in (
            "version_tasks", "accuracy_sums", "confusion", "label_losses", "label_lags",
            "top_histograms", "class_histograms",
        ):  # fmt: skip
            connection.execute(sa.text(f"DROP TABLE {name}"))
        for index in ("bin_counts_window", "traffic_bucket", "latency_bucket", "reports_received"):
            connection.execute(sa.text(f"DROP INDEX {index}"))
        connection.execute(sa.text("UPDATE schema_version SET version = 3"))
    store.close()
    migrated = Store(url)
    try:
        assert migrated.schema_version == len(MIGRATIONS) == 6
        figures = accuracy_from(migrated.accuracy_totals("churn", 1, None, None), "classification")
        assert (figures.prediction_count, figures.label_count) == (6, 3)
        _same(figures, expected)
        price = accuracy_from(migrated.accuracy_totals("price", 1, None, None), "regression")
        assert (price.prediction_count, price.label_count, price.mae) == (2, 1, 1.0)
        # The regressor's labelled answer made no confusion cell: as a classifier, no accuracy.
        as_classes = migrated.accuracy_totals("price", 1, None, None)
        assert as_classes.confusion == {} and as_classes.labels == 1
        indexes = {i["name"] for i in sa.inspect(migrated.engine).get_indexes("bin_counts")}
        assert "bin_counts_window" in indexes
        # The held label joins its record when it arrives, into the aggregates.
        migrated.ingest(_answers(2, "churn", [("c9", "no", [0.9, 0.1])], at=60))
        after = accuracy_from(migrated.accuracy_totals("churn", 1, None, None), "classification")
        assert (after.prediction_count, after.label_count) == (7, 4)
        _same(after, _from_records(migrated, "churn", "classification", ()))
    finally:
        migrated.close()


def test_large_tables_are_sized_by_estimate(store: Store) -> None:
    """Past 200,000 rows a table's size is the database's estimate, close to the count."""
    fill = (
        "INSERT INTO bin_counts (model, version, prediction, name, bucket, bin, count)"
        " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 249999)"
        " SELECT 'm', 1, false, 'f' || (i % 20), i / 400 * 60, i % 400 / 20, 1 FROM n"
    )
    with store.engine.begin() as connection:
        connection.execute(sa.text(fill))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("ANALYZE"))  # as autovacuum does on PostgreSQL
    assert store.table_rows()["bin_counts"] == pytest.approx(250_000, rel=0.02)
    assert store.table_rows()["traffic"] == 0


def test_total_accuracy_gauge_outlives_pruned_records(url: str, tmp_path: Path) -> None:
    """The monitor's whole-history accuracy keeps the records that retention deleted: it is
    summed from the aggregates, which live as long as the counts."""
    version = tmp_path / "models" / "churn" / "1"
    version.mkdir(parents=True)
    meta = {"task": "classification", "class_labels": ["no", "yes"]}
    (version / "model.json").write_text(json.dumps(meta))
    settings = MonitorSettings(
        data_dir=tmp_path, repository=tmp_path / "models", record_retention_seconds=60,
        label_delay_seconds=60,
    )  # fmt: skip
    registry = CollectorRegistry()
    store = Store(url)
    monitor = Monitor(settings, store, MonitorMetrics(registry))
    try:
        store.ingest(_answers(1, "churn", CLASSIFIER_ANSWERS))
        store.add_labels(
            [LabelIn(r, "yes", T0 + 60, "churn") for r, _, _ in CLASSIFIER_ANSWERS], T0
        )
        later = T0 + 2 * 86400
        assert monitor.prune(now=later)["predictions"] == 6
        # A report of the version's traffic in the last hour makes it active.
        store.ingest(Report("gw", 1, later - 60, [VersionCounts("churn", 1, requests=1)]))
        monitor.evaluate(now=later)
        labels = {"model": "churn", "version": "1"}
        total = registry.get_sample_value(
            "driftgate_monitor_accuracy", labels | {"window": "total"}
        )
        assert total == pytest.approx(3 / 6)
        hour = registry.get_sample_value("driftgate_monitor_accuracy", labels | {"window": "1h"})
        assert hour is None  # no record in the last hour
    finally:
        store.close()

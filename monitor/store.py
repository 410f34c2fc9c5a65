"""The monitor's store: statistics, prediction records, labels and events, via SQLAlchemy Core.

One code path for SQLite (the embedded default, WAL, ``synchronous=FULL`` so that an
acknowledged report survives a crash) and PostgreSQL (by URL, for scale-out).

Exactly-once ingest: a report is one transaction that first inserts its (instance id,
sequence) into ``reports`` and then adds its counts; a sequence already present inserts
nothing and the counts are not applied again. Counts are upserted with
``INSERT .. ON CONFLICT DO UPDATE SET count = count + excluded.count`` (both dialects), so
concurrent writers never lose an increment.

Counts are kept per (model, version, distribution, time bucket, bin), a bucket being
``bucket_seconds`` long (default one minute). Special bins: -1 missing (NaN), -2 infinite,
-3 out of range (also counted in the open end bins).

Schema versioning: a one-row ``schema_version`` table and the ordered ``MIGRATIONS`` list; at
open, every migration past the stored version runs, each in its own transaction that also
records its number (on PostgreSQL under an advisory lock, so replicas starting together
migrate once). Alembic would add a dependency, a script directory and a CLI step for a
schema of a handful of tables that must also create itself silently in an embedded file;
ordered functions give the same guarantees here. A migration must leave earlier ones alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from driftgate.monitor.accuracy import AccuracyTotals, Task, label_terms, record_top, top_bin

__all__ = [
    "INSTANCE_ID_LENGTH",
    "MIGRATIONS",
    "NAME_LENGTH",
    "REQUEST_ID_LENGTH",
    "Distribution",
    "EventRecord",
    "LabelIn",
    "LabelOutcome",
    "PredictionIn",
    "Report",
    "Store",
    "StoredPrediction",
    "Task",
    "VersionCounts",
    "sqlite_url",
]

NAN_BIN, INF_BIN, OUT_OF_RANGE_BIN = -1, -2, -3

_T = TypeVar("_T")

# Column sizes (characters; PostgreSQL refuses longer strings): ``monitor.validation`` bounds
# what it accepts by them, in UTF-8 bytes, so nothing it lets through fails an insert.
INSTANCE_ID_LENGTH = 128
NAME_LENGTH = 256
REQUEST_ID_LENGTH = 256
# A label or predicted class in the accuracy aggregates' keys; a longer one (rare: a string
# label may have 4 kB) is keyed by its digest, "sha256:<hex>", which keeps index rows small.
LABEL_KEY_LENGTH = 256
# ``Store.table_rows`` counts a table exactly up to this many rows, estimates beyond.
EXACT_ROWS = 200_000
# Aggregates made from records stored before migration 4 use this bucket length: windows
# select whole buckets by their start, so a finer bucket than the store's is harmless.
BACKFILL_BUCKET_SECONDS = 60

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata, sa.Column("version", sa.Integer, nullable=False)
)
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("instance_id", sa.String(INSTANCE_ID_LENGTH), primary_key=True),
    sa.Column("sequence", sa.BigInteger, primary_key=True),
    sa.Column("received", sa.Float, nullable=False),
)
bin_counts = sa.Table(
    "bin_counts",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("prediction", sa.Boolean, primary_key=True),
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("bin", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
traffic = sa.Table(
    "traffic",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("latency_sum", sa.Float, nullable=False),
)
latency = sa.Table(
    "latency",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    # Upper bound in seconds; the overflow bucket is stored as 1e300.
    sa.Column("le", sa.Float, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("request_id", sa.String(REQUEST_ID_LENGTH), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=True),
    sa.Column("label_time", sa.Float, nullable=True),
    sa.Index("predictions_model_version_time", "model", "version", "time"),
    # A record is one (model, request id): two models may answer the same business id.
    # Request id first, so that a label naming no model finds its records by the id alone.
    sa.UniqueConstraint("request_id", "model", name="predictions_request_id_model_key"),
)
pending_labels = sa.Table(
    "pending_labels",
    metadata,
    sa.Column("request_id", sa.String(REQUEST_ID_LENGTH), primary_key=True),
    # "" when the label named no model: it joins the first record with its id.
    sa.Column("model", sa.String(64), primary_key=True, server_default=""),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("label_time", sa.Float, nullable=False),
    sa.Column("received", sa.Float, nullable=False, index=True),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("figures", sa.Text, nullable=False),
)


policy_state = sa.Table(
    "policy_state",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)


# Accuracy aggregates (migration 4): per (model, version, bucket of the record's prediction
# time), updated in the transaction that stores a record or joins its label, so that the
# accuracy of any window is a sum over its buckets (``monitor.accuracy.AccuracyTotals``).
# Every record and label is added twice: to its bucket's row and to its day's row (``daily``,
# keyed by the start of the UTC day holding the bucket's start), so that a window of 90 days
# sums 90 day rows and the buckets of its partial days, not 129,600 buckets.
DAY = 86400
version_tasks = sa.Table(
    "version_tasks",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("task", sa.String(32), nullable=False),
    # JSON list of class labels; [] when model.json did not name them.
    sa.Column("classes", sa.Text, nullable=False),
)
accuracy_sums = sa.Table(
    "accuracy_sums",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("labels", sa.BigInteger, nullable=False),
    sa.Column("top_count", sa.BigInteger, nullable=False),
    sa.Column("top_sum", sa.Float, nullable=False),
    sa.Column("error_count", sa.BigInteger, nullable=False),
    sa.Column("absolute_error_sum", sa.Float, nullable=False),
    sa.Column("squared_error_sum", sa.Float, nullable=False),
)
confusion = sa.Table(
    "confusion",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("actual", sa.String(LABEL_KEY_LENGTH), primary_key=True),
    sa.Column("predicted", sa.String(LABEL_KEY_LENGTH), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
label_losses = sa.Table(
    "label_losses",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("actual", sa.String(LABEL_KEY_LENGTH), primary_key=True),
    # The record's number of probabilities and the column whose log loss is summed.
    sa.Column("width", sa.Integer, primary_key=True),
    sa.Column("column", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("loss_sum", sa.Float, nullable=False),
)
label_lags = sa.Table(
    "label_lags",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("bin", sa.Integer, primary_key=True),  # monitor.accuracy.lag_bin
    sa.Column("count", sa.BigInteger, nullable=False),
)
_AGGREGATES = (accuracy_sums, confusion, label_losses, label_lags)

# Top-class probability histograms (migration 5), for the label-free accuracy estimate: per
# (model, version, daily, bucket) as the other aggregates, and per ``labelled`` (False: every
# record with probabilities, added when it is stored; True: the same record again when its
# label joins) and ``monitor.accuracy.top_bin``, the records and the sum of their top-class
# probabilities. The estimate applies the model's calibration when read, so a histogram
# serves any map.
top_histograms = sa.Table(
    "top_histograms",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("labelled", sa.Boolean, primary_key=True),
    sa.Column("bin", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("top_sum", sa.Float, nullable=False),
)
# The same per predicted class (migration 6), for the expected confusion matrix: the
# record's prediction as the confusion table keys it. Since migration 6 the live path writes
# only this table; the overall histogram is its sum over the classes (top_histograms stays
# for the migrations that made it, and is pruned with the rest).
class_histograms = sa.Table(
    "class_histograms",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("daily", sa.Boolean, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("labelled", sa.Boolean, primary_key=True),
    sa.Column("predicted", sa.String(LABEL_KEY_LENGTH), primary_key=True),
    sa.Column("bin", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("top_sum", sa.Float, nullable=False),
)
_ESTIMATE_AGGREGATES = (top_histograms, class_histograms)
sa.Index("top_histograms_bucket", top_histograms.c.bucket)  # pruning; made with the table
sa.Index("class_histograms_bucket", class_histograms.c.bucket)

# Migration 4's indexes: a window of a version is a range of (model, version, bucket); the
# pruning and the active versions go by bucket.
_INDEXES = (
    # Covering on purpose: the window query reads the index alone (benchmarks/store_window.py).
    sa.Index(
        "bin_counts_window",
        bin_counts.c.model, bin_counts.c.version, bin_counts.c.bucket, bin_counts.c.prediction,
        bin_counts.c.name, bin_counts.c.bin, bin_counts.c.count,
    ),
    sa.Index("traffic_bucket", traffic.c.bucket, traffic.c.model, traffic.c.version),
    sa.Index("latency_bucket", latency.c.bucket),
    sa.Index("reports_received", reports.c.received),
    *(sa.Index(f"{t.name}_bucket", t.c.bucket) for t in _AGGREGATES),
)  # fmt: skip


def _migration_1(connection: Connection) -> None:
    """The first schema."""
    metadata.create_all(
        connection,
        tables=[reports, bin_counts, traffic, latency, predictions, pending_labels, events],
    )


def _migration_2(connection: Connection) -> None:
    """Durable policy state: canary analyses, drift streaks, last retrain."""
    metadata.create_all(connection, tables=[policy_state])


def _migration_3(connection: Connection) -> None:
    """Records and held labels keyed by (model, request id), not by the request id alone.

    Idempotent: a store created by migration 1 from the current tables is already keyed so
    and is left alone. An older store is converted in place, its rows kept (a held label of
    an old store names no model, as it never could).
    """
    inspector = sa.inspect(connection)
    if "model" in {c["name"] for c in inspector.get_columns("pending_labels")}:
        return
    if connection.dialect.name == "postgresql":
        for statement in (
            "ALTER TABLE predictions DROP CONSTRAINT IF EXISTS predictions_request_id_key",
            "ALTER TABLE predictions ADD CONSTRAINT predictions_request_id_model_key"
            " UNIQUE (request_id, model)",
            "ALTER TABLE pending_labels ADD COLUMN model VARCHAR(64) NOT NULL DEFAULT ''",
            "ALTER TABLE pending_labels DROP CONSTRAINT IF EXISTS pending_labels_pkey",
            "ALTER TABLE pending_labels ADD PRIMARY KEY (request_id, model)",
        ):
            connection.execute(sa.text(statement))
        return
    # SQLite cannot drop a constraint: rebuild both tables under their indexes' names.
    for table, indexes in (
        (predictions, ("ix_predictions_time", "predictions_model_version_time")),
        (pending_labels, ("ix_pending_labels_received",)),
    ):
        old = f"{table.name}_before_3"
        for index in indexes:
            connection.execute(sa.text(f'DROP INDEX IF EXISTS "{index}"'))
        connection.execute(sa.text(f'ALTER TABLE "{table.name}" RENAME TO "{old}"'))
        metadata.create_all(connection, tables=[table])
        columns = [c["name"] for c in sa.inspect(connection).get_columns(old)]
        listed = ", ".join(f'"{c}"' for c in columns)
        connection.execute(
            sa.text(f'INSERT INTO "{table.name}" ({listed}) SELECT {listed} FROM "{old}"')
        )
        connection.execute(sa.text(f'DROP TABLE "{old}"'))


def _migration_4(connection: Connection) -> None:
    """Accuracy aggregates per bucket, backfilled from the stored records; indexes for
    window queries, active versions and pruning that read a range, not a table."""
    metadata.create_all(connection, tables=[version_tasks, *_AGGREGATES])
    for index in _INDEXES:
        index.create(connection, checkfirst=True)
    _backfill_aggregates(connection)


def _backfill_aggregates(connection: Connection) -> None:
    """Sum the records already stored, oldest first; a version's task is guessed from its
    first record (a number without probabilities: regression), its classes unknown."""
    tasks: dict[tuple[str, int], Task] = {}
    query = sa.select(
        predictions.c.model, predictions.c.version, predictions.c.time,
        predictions.c.prediction, predictions.c.label, predictions.c.label_time,
    ).order_by(predictions.c.id)  # fmt: skip
    sums = _Sums(BACKFILL_BUCKET_SECONDS, histograms=False, classes=False)
    rows = connection.execute(query.execution_options(yield_per=5000))
    for row in rows:
        answer = json.loads(row.prediction)
        key = (row.model, int(row.version))
        if key not in tasks:
            tasks[key] = _guess_task(answer["value"], answer["probabilities"])
        sums.record(key, row.time, tasks[key], answer)
        if row.label is not None:
            label = json.loads(row.label)["value"]
            sums.label(key, row.time, tasks[key], answer, label, row.label_time)
        if sums.size() > 50_000:
            sums.write(connection)
            sums = _Sums(BACKFILL_BUCKET_SECONDS, histograms=False, classes=False)
    sums.write(connection)
    _remember_tasks(connection, tasks)


def _migration_5(connection: Connection) -> None:
    """Top-class probability histograms, backfilled from the stored records (bucketed by
    ``BACKFILL_BUCKET_SECONDS``, as migration 4's; records already pruned are not counted)."""
    metadata.create_all(connection, tables=[top_histograms])
    _backfill_histograms(connection, histograms=True, classes=False)


def _migration_6(connection: Connection) -> None:
    """Top-class probability histograms per predicted class, backfilled as migration 5's."""
    metadata.create_all(connection, tables=[class_histograms])
    _backfill_histograms(connection, histograms=False, classes=True)


def _backfill_histograms(connection: Connection, histograms: bool, classes: bool) -> None:
    known = _tasks_of(connection, _stored_versions(connection))
    query = sa.select(
        predictions.c.model, predictions.c.version, predictions.c.time,
        predictions.c.prediction, predictions.c.label.is_not(None).label("labelled"),
    ).order_by(predictions.c.id)  # fmt: skip

    def fresh() -> _Sums:
        return _Sums(BACKFILL_BUCKET_SECONDS, histograms=histograms, classes=classes)

    sums = fresh()
    for row in connection.execute(query.execution_options(yield_per=5000)):
        key = (row.model, int(row.version))
        answer = json.loads(row.prediction)
        task = known.get(key) or _guess_task(answer["value"], answer["probabilities"])
        sums.top(key, row.time, task, answer, labelled=False)
        if row.labelled:
            sums.top(key, row.time, task, answer, labelled=True)
        if sums.size() > 50_000:
            sums.write(connection)
            sums = fresh()
    sums.write(connection)


def _stored_versions(connection: Connection) -> list[tuple[str, int]]:
    query = sa.select(predictions.c.model, predictions.c.version).distinct()
    return [(m, int(v)) for m, v in connection.execute(query)]


MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
]
"""Ordered schema migrations; the schema version is the number applied."""


@dataclass(frozen=True)
class Distribution:
    """Counts of one feature (or of the predictions) on its reference bins."""

    name: str
    counts: Sequence[int]
    nan_count: int = 0
    inf_count: int = 0
    out_of_range_count: int = 0
    prediction: bool = False


@dataclass(frozen=True)
class VersionCounts:
    """One model version's counts in one report."""

    model: str
    version: int
    distributions: Sequence[Distribution] = ()
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_bounds: Sequence[float] = ()
    latency_counts: Sequence[int] = ()
    latency_sum: float = 0.0


@dataclass(frozen=True)
class PredictionIn:
    """A prediction record: the row as sent and the model's answer."""

    request_id: str
    time: float
    model: str
    version: int
    numeric: Sequence[float]
    categorical: Sequence[str]
    value: str | int | float
    probabilities: Sequence[float] = ()


@dataclass(frozen=True)
class Report:
    """A statistics delta from one gateway process."""

    instance_id: str
    sequence: int
    time: float
    versions: Sequence[VersionCounts] = ()
    records: Sequence[PredictionIn] = ()


@dataclass(frozen=True)
class LabelIn:
    """A ground-truth label for one request id of ``model`` ("": the sender did not say)."""

    request_id: str
    value: str | int | float
    time: float
    model: str = ""


class LabelOutcome(NamedTuple):
    """What became of a batch of labels in ``Store.add_labels``."""

    accepted: int
    """Joined to a record now."""
    duplicates: int
    """For a (model, request id) that already has a label, joined or held: the first wins."""
    unknown: int
    """No record yet: held, and joined when the record arrives, until retention ends."""
    ambiguous: int = 0
    """Named no model while records of several models carry the id: not stored."""


@dataclass(frozen=True)
class StoredPrediction:
    """A prediction record with its label, if any."""

    request_id: str
    model: str
    version: int
    time: float
    numeric: list[float]
    categorical: list[str]
    value: Any
    probabilities: list[float]
    label: Any = None
    label_time: float | None = None


@dataclass(frozen=True)
class EventRecord:
    """A recorded decision."""

    id: int
    time: float
    kind: str
    model: str
    version: int
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def sqlite_url(data_dir: Path) -> str:
    """The embedded default store URL in ``data_dir``."""
    return f"sqlite:///{Path(data_dir).resolve() / 'monitor.db'}"


class Store:
    """The monitor store at ``url``; migrates the schema on open.

    Usage: ``store = Store("sqlite:///driftgate-data/monitor.db"); store.ingest(report)``.
    Methods are synchronous; the server calls them from one worker thread.
    """

    def __init__(self, url: str, bucket_seconds: int = 60) -> None:
        self.url = url
        self.bucket_seconds = bucket_seconds
        self.engine = _engine(url)
        self._dialect = self.engine.dialect.name
        self.fence: Callable[[Connection], None] | None = None
        """Called inside every policy-state and event write's transaction; raises to refuse
        it (``monitor.leader`` refuses the writes of a monitor that no longer leads)."""
        self.schema_version = self._migrate()

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> int:
        with self.engine.begin() as connection:
            self._lock_schema(connection)
            schema_version.create(connection, checkfirst=True)
        for number, migration in enumerate(MIGRATIONS, start=1):
            with self.engine.begin() as connection:
                self._lock_schema(connection)
                current = connection.execute(sa.select(schema_version.c.version)).scalar()
                if current is not None and current >= number:
                    continue
                migration(connection)
                connection.execute(sa.delete(schema_version))
                connection.execute(sa.insert(schema_version).values(version=number))
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(schema_version.c.version)).scalar_one())

    def _lock_schema(self, connection: Connection) -> None:
        """On PostgreSQL, serialize schema changes of replicas starting together."""
        if self._dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7203914)"))

    # -- ingest ---------------------------------------------------------------------------

    def ingest(
        self, report: Report, tasks: Mapping[tuple[str, int], Task] | None = None
    ) -> tuple[int, bool]:
        """Commit ``report`` once; returns (highest committed sequence, applied now).

        ``tasks`` says what each (model, version) predicts (from its model.json), for the
        accuracy aggregates of its records; a version the store has not seen and ``tasks``
        does not name gets a task guessed from its first record.
        """
        with self.engine.begin() as connection:
            first = connection.execute(
                self._insert(reports)
                .values(
                    instance_id=report.instance_id, sequence=report.sequence, received=report.time
                )
                .on_conflict_do_nothing()
                # RETURNING, not rowcount: SQLAlchemy reports -1 for this insert on psycopg.
                .returning(reports.c.sequence)
            )
            applied = first.first() is not None
            if applied:
                bucket = int(report.time // self.bucket_seconds) * self.bucket_seconds
                for counts in report.versions:
                    self._add_counts(connection, counts, bucket)
                self._add_records(connection, report.records, tasks or {})
            highest = connection.execute(
                sa.select(sa.func.max(reports.c.sequence)).where(
                    reports.c.instance_id == report.instance_id
                )
            ).scalar_one()
        return int(highest), applied

    def _insert(self, table: sa.Table) -> Any:
        return _insert(self._dialect, table)

    def _add(self, connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        _add(connection, table, rows)

    def _add_counts(self, connection: Connection, v: VersionCounts, bucket: int) -> None:
        key = {"model": v.model, "version": v.version, "bucket": bucket}
        rows: list[dict[str, Any]] = []
        for d in v.distributions:
            special = {NAN_BIN: d.nan_count, INF_BIN: d.inf_count}
            special[OUT_OF_RANGE_BIN] = d.out_of_range_count
            for index, count in [*enumerate(d.counts), *special.items()]:
                if count:
                    rows.append(
                        key | {"prediction": d.prediction, "name": d.name, "bin": index}
                        | {"count": int(count)}
                    )  # fmt: skip
        self._add(connection, bin_counts, rows)
        self._add(
            connection,
            traffic,
            [
                key
                | {"requests": v.requests, "errors": v.errors, "rows": v.rows}
                | {"latency_sum": v.latency_sum}
            ],
        )
        bounds = [*v.latency_bounds, 1e300]
        latency_rows = [
            key | {"le": float(le), "count": int(c)}
            for le, c in zip(bounds, v.latency_counts, strict=False)
            if c
        ]
        self._add(connection, latency, latency_rows)

    def _add_records(
        self,
        connection: Connection,
        records: Sequence[PredictionIn],
        given: Mapping[tuple[str, int], Task],
    ) -> None:
        if not records:
            return
        rows = [
            {
                "request_id": r.request_id,
                "model": r.model,
                "version": r.version,
                "time": r.time,
                "inputs": json.dumps(
                    {
                        "numeric": [_json_float(x) for x in r.numeric],
                        "categorical": list(r.categorical),
                    }
                ),
                "prediction": json.dumps(
                    {"value": r.value, "probabilities": list(r.probabilities)}
                ),
            }
            for r in records
        ]
        # A (model, request id) seen before keeps its first record, and counts once.
        inserted = {
            (row.model, row.request_id)
            for row in connection.execute(
                self._insert(predictions)
                .on_conflict_do_nothing()
                .returning(predictions.c.model, predictions.c.request_id),
                rows,
            )
        }
        tasks = self._record_tasks(connection, records, given)
        sums = _Sums(self.bucket_seconds)
        for r, row in zip(records, rows, strict=True):
            if (r.model, r.request_id) in inserted:
                inserted.discard((r.model, r.request_id))
                answer = json.loads(str(row["prediction"]))  # what a query of it reads
                key = (r.model, r.version)
                sums.record(key, r.time, tasks[key], answer)
        self._join_pending(connection, [(r.model, r.request_id) for r in records], sums)
        sums.write(connection)

    def _record_tasks(
        self,
        connection: Connection,
        records: Sequence[PredictionIn],
        given: Mapping[tuple[str, int], Task],
    ) -> dict[tuple[str, int], Task]:
        """The stored task of each version of ``records``, storing it the first time."""
        keys = {(r.model, r.version) for r in records}
        tasks = _tasks_of(connection, keys)
        new: dict[tuple[str, int], Task] = {}
        for r in records:
            key = (r.model, r.version)
            if key not in tasks and key not in new:
                new[key] = given.get(key) or _guess_task(r.value, r.probabilities)
        if new:
            _remember_tasks(connection, new)
            tasks |= _tasks_of(connection, new)  # a replica may have stored another first
        return tasks

    def _join_pending(
        self, connection: Connection, keys: list[tuple[str, str]], sums: _Sums
    ) -> None:
        """Join held labels to the records ``keys`` (model, request id) just stored.

        A label held for the record's model wins over one that named no model; a label that
        named no model joins the first record with its id to arrive.
        """
        joined = []
        for chunk in _chunks(keys, 500):
            ids = sorted({request_id for _, request_id in chunk})
            held = {
                (row.model, row.request_id): row
                for row in connection.execute(
                    sa.select(pending_labels).where(pending_labels.c.request_id.in_(ids))
                )
            }
            for model, request_id in chunk:
                row = held.pop((model, request_id), None) or held.pop(("", request_id), None)
                if row is None:
                    continue
                record = connection.execute(
                    sa.update(predictions)
                    .where(predictions.c.model == model, predictions.c.request_id == request_id)
                    .where(predictions.c.label.is_(None))
                    .values(label=row.label, label_time=row.label_time)
                    .returning(*_JOINED)
                ).first()
                if record is not None:
                    joined.append(record)
                connection.execute(
                    sa.delete(pending_labels).where(
                        pending_labels.c.model == row.model,
                        pending_labels.c.request_id == request_id,
                    )
                )
        _sum_labels(connection, joined, sums)

    # -- labels ---------------------------------------------------------------------------

    def add_labels(self, labels: Sequence[LabelIn], now: float) -> LabelOutcome:
        """Join labels to records by (model, request id); returns what became of them.

        The first label of a (model, request id) wins. A label whose record is not known yet
        is held in ``pending_labels`` and joined when the record arrives. A label that names
        no model joins the record with its request id if exactly one model has one; with
        none it is held (and joins the first record with that id to arrive); with several
        it is ambiguous and not stored.
        """
        accepted = duplicates = unknown = ambiguous = 0
        joined = []
        with self.engine.begin() as connection:
            for label in labels:
                value = json.dumps({"value": label.value})
                model = label.model
                if not model:
                    owners = connection.execute(
                        sa.select(predictions.c.model)
                        .where(predictions.c.request_id == label.request_id)
                        .limit(2)
                    ).all()
                    if len(owners) > 1:
                        ambiguous += 1
                        continue
                    if owners:
                        model = owners[0].model
                record = connection.execute(
                    sa.update(predictions)
                    .where(
                        predictions.c.model == model,
                        predictions.c.request_id == label.request_id,
                        predictions.c.label.is_(None),
                    )
                    .values(label=value, label_time=label.time)
                    .returning(*_JOINED)
                ).first()
                if record is not None:
                    joined.append(record)
                    accepted += 1
                    continue
                known = connection.execute(
                    sa.select(predictions.c.id).where(
                        predictions.c.model == model, predictions.c.request_id == label.request_id
                    )
                ).first()
                if known is not None:
                    duplicates += 1
                    continue
                held = connection.execute(
                    self._insert(pending_labels)
                    .values(
                        request_id=label.request_id,
                        model=model,
                        label=value,
                        label_time=label.time,
                        received=now,
                    )
                    .on_conflict_do_nothing()
                    .returning(pending_labels.c.request_id)
                ).first()
                if held is not None:
                    unknown += 1
                else:
                    duplicates += 1
            sums = _Sums(self.bucket_seconds)
            _sum_labels(connection, joined, sums)
            sums.write(connection)
        return LabelOutcome(accepted, duplicates, unknown, ambiguous)

    # -- queries --------------------------------------------------------------------------

    def counts(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> dict[tuple[bool, str], dict[int, int]]:
        """Summed counts per (is prediction, name) and bin over buckets in [start, end)."""
        query = (
            sa.select(
                bin_counts.c.prediction,
                bin_counts.c.name,
                bin_counts.c.bin,
                sa.func.sum(bin_counts.c.count),
            )
            .where(bin_counts.c.model == model, bin_counts.c.version == version)
            .group_by(bin_counts.c.prediction, bin_counts.c.name, bin_counts.c.bin)
        )
        query = self._in_window(query, bin_counts.c.bucket, start, end)
        result: dict[tuple[bool, str], dict[int, int]] = {}
        with self.engine.connect() as connection:
            for is_prediction, name, index, total in connection.execute(query):
                result.setdefault((bool(is_prediction), name), {})[int(index)] = int(total)
        return result

    def traffic(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> dict[str, float]:
        """Summed requests, errors, rows and latency sum over buckets in [start, end)."""
        columns = [traffic.c.requests, traffic.c.errors, traffic.c.rows, traffic.c.latency_sum]
        query = sa.select(*(sa.func.coalesce(sa.func.sum(c), 0) for c in columns)).where(
            traffic.c.model == model, traffic.c.version == version
        )
        query = self._in_window(query, traffic.c.bucket, start, end)
        with self.engine.connect() as connection:
            values = connection.execute(query).one()
        return {c.name: float(v) for c, v in zip(columns, values, strict=True)}

    def _in_window(self, query: Any, column: Any, start: float | None, end: float | None) -> Any:
        # A bucket belongs to the window when it starts inside it.
        if start is not None:
            query = query.where(column >= math.floor(start))
        if end is not None:
            query = query.where(column < math.ceil(end))
        return query

    def predictions(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> list[StoredPrediction]:
        """Prediction records of a version made in [start, end), oldest first."""
        query = (
            sa.select(predictions)
            .where(predictions.c.model == model, predictions.c.version == version)
            .order_by(predictions.c.time)
        )
        if start is not None:
            query = query.where(predictions.c.time >= start)
        if end is not None:
            query = query.where(predictions.c.time < end)
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def latency(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> list[tuple[float, int]]:
        """Latency histogram (upper bound in seconds, count), ascending, over [start, end)."""
        query = (
            sa.select(latency.c.le, sa.func.sum(latency.c.count))
            .where(latency.c.model == model, latency.c.version == version)
            .group_by(latency.c.le)
            .order_by(latency.c.le)
        )
        query = self._in_window(query, latency.c.bucket, start, end)
        with self.engine.connect() as connection:
            return [(float(le), int(n)) for le, n in connection.execute(query)]

    def labelled(
        self, model: str, start: float | None, end: float | None
    ) -> list[StoredPrediction]:
        """Labelled prediction records of every version of ``model`` in [start, end)."""
        query = (
            sa.select(predictions)
            .where(predictions.c.model == model, predictions.c.label.is_not(None))
            .order_by(predictions.c.time)
        )
        if start is not None:
            query = query.where(predictions.c.time >= start)
        if end is not None:
            query = query.where(predictions.c.time < end)
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def active_versions(self, since: float) -> list[tuple[str, int]]:
        """(model, version) pairs with traffic in buckets from ``since`` on (a report's
        counts of a version always come with its traffic row)."""
        query = (
            sa.select(traffic.c.model, traffic.c.version)
            .where(traffic.c.bucket >= math.floor(since))
            .distinct()
        )
        with self.engine.connect() as connection:
            return sorted((m, int(v)) for m, v in connection.execute(query))

    def version_task(self, model: str, version: int) -> Task | None:
        """What the accuracy aggregates of a version were summed for; None before a record."""
        with self.engine.connect() as connection:
            return _tasks_of(connection, [(model, version)]).get((model, version))

    def accuracy_totals(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> AccuracyTotals:
        """The accuracy aggregates of records made in buckets in [start, end), summed: the
        day rows of the whole days inside, the bucket rows of the rest."""
        totals = AccuracyTotals()
        c, x, g = confusion, label_losses, label_lags
        with self.engine.connect() as connection:
            ranges = self._accuracy_ranges(connection, model, version, start, end)
            if not ranges:
                return totals

            def window(table: sa.Table, *columns: Any) -> Any:
                inside = [
                    sa.and_(table.c.daily == daily, table.c.bucket >= lo, table.c.bucket < hi)
                    for daily, lo, hi in ranges
                ]
                return sa.select(*columns).where(
                    table.c.model == model, table.c.version == version, sa.or_(*inside)
                )

            sums = (sa.func.sum(accuracy_sums.c[n]) for n in _SUM_COLUMNS)
            values = connection.execute(window(accuracy_sums, *sums)).one()
            for name, value in zip(_SUM_COLUMNS, values, strict=True):
                setattr(totals, name, type(getattr(totals, name))(value or 0))
            cells = window(c, c.c.actual, c.c.predicted, sa.func.sum(c.c.count))
            totals.confusion = {
                (a, p): int(n)
                for a, p, n in connection.execute(cells.group_by(c.c.actual, c.c.predicted))
            }
            columns = (x.c.actual, x.c.width, x.c.column)
            losses = window(x, *columns, sa.func.sum(x.c.count), sa.func.sum(x.c.loss_sum))
            totals.losses = {
                (a, int(w), int(k)): (int(n), float(loss))
                for a, w, k, n, loss in connection.execute(losses.group_by(*columns))
            }
            lags = window(g, g.c.bin, sa.func.sum(g.c.count)).group_by(g.c.bin)
            totals.lags = {int(b): int(n) for b, n in connection.execute(lags)}
            k = class_histograms
            columns = (k.c.labelled, k.c.predicted, k.c.bin)
            by_class = window(k, *columns, sa.func.sum(k.c.count), sa.func.sum(k.c.top_sum))
            totals.class_bins = {
                (bool(flag), str(p), int(b)): (int(n), float(x))
                for flag, p, b, n, x in connection.execute(by_class.group_by(*columns))
            }
            # The overall histogram is the classes' summed (migration 6 backfilled them from
            # the same records as migration 5's table, which the live path no longer writes).
            for (flag, _, b), (n, summed) in totals.class_bins.items():
                n0, summed0 = totals.top_bins.get((flag, b), (0, 0.0))
                totals.top_bins[flag, b] = (n0 + n, summed0 + summed)
        return totals

    def _accuracy_ranges(
        self,
        connection: Connection,
        model: str,
        version: int,
        start: float | None,
        end: float | None,
    ) -> list[tuple[bool, int, int]]:
        """(daily, from, to) bucket ranges that sum a window exactly once.

        A day row is read only when every bucket of its day is in the window and none was
        pruned (the window starts at the version's oldest bucket row at the earliest).
        """
        oldest = connection.execute(
            sa.select(sa.func.min(accuracy_sums.c.bucket)).where(
                accuracy_sums.c.model == model,
                accuracy_sums.c.version == version,
                accuracy_sums.c.daily.is_(False),
            )
        ).scalar()
        if oldest is None:
            return []
        lo = int(oldest) if start is None else max(math.floor(start), int(oldest))
        hi = 2**62 if end is None else math.ceil(end)
        first_day, last_day = -(-lo // DAY) * DAY, hi // DAY * DAY
        if first_day >= last_day:
            return [(False, lo, hi)]
        return [(False, lo, first_day), (True, first_day, last_day), (False, last_day, hi)]

    def table_rows(self) -> dict[str, int]:
        """Row count of each data table (the store size a dashboard shows).

        Exact up to ``EXACT_ROWS`` rows; a larger table's count is the database's estimate
        (counting 50 million count rows takes seconds, and evaluation refreshes this every
        minute): on PostgreSQL the planner's row estimate, on SQLite the span of its row
        ids, which rows enter in order and leave oldest first.
        """
        tables = [reports, bin_counts, traffic, latency, predictions, pending_labels, events]
        tables += [*_AGGREGATES, *_ESTIMATE_AGGREGATES]
        with self.engine.connect() as connection:
            return {t.name: self._rows(connection, t) for t in tables}

    def _rows(self, connection: Connection, table: sa.Table) -> int:
        if self._dialect == "postgresql":
            query = "SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"
        else:
            # Each aggregate alone, or SQLite reads the whole table for them.
            span = (
                f'(SELECT max(rowid) FROM "{table.name}") - (SELECT min(rowid) FROM "{table.name}")'
            )
            query = f"SELECT {span} + 1"
        estimate = connection.execute(sa.text(query), {"name": table.name}).scalar()
        if estimate is not None and estimate > EXACT_ROWS:
            return int(estimate)
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    # -- events ---------------------------------------------------------------------------

    def add_event(
        self, time: float, kind: str, model: str, version: int, reason: str, figures: dict[str, Any]
    ) -> None:
        with self.engine.begin() as connection:
            self._fenced(connection)
            connection.execute(
                sa.insert(events).values(
                    time=time, kind=kind, model=model, version=version, reason=reason,
                    figures=json.dumps(figures),
                )
            )  # fmt: skip

    def events(self, model: str = "", limit: int = 100) -> list[EventRecord]:
        query = sa.select(events).order_by(events.c.id.desc()).limit(limit)
        if model:
            query = query.where(events.c.model == model)
        with self.engine.connect() as connection:
            return [
                EventRecord(
                    r.id, r.time, r.kind, r.model, r.version, r.reason, json.loads(r.figures)
                )
                for r in connection.execute(query)
            ]

    # -- durable policy state ------------------------------------------------------------

    def get_state(self, model: str, name: str) -> Any:
        """The JSON value stored under (model, name), or None."""
        with self.engine.connect() as connection:
            raw = connection.execute(
                sa.select(policy_state.c.value).where(
                    policy_state.c.model == model, policy_state.c.name == name
                )
            ).scalar()
        return None if raw is None else json.loads(raw)

    def put_state(self, model: str, name: str, value: Any, now: float) -> None:
        """Store ``value`` (JSON) under (model, name); None deletes it."""
        with self.state_transaction() as connection:
            self._fenced(connection)
            self._write_state(connection, model, name, value, now)

    def update_state(
        self,
        model: str,
        name: str,
        change: Callable[[Any], Any],
        now: float,
        *,
        fenced: bool = True,
    ) -> Any:
        """Read-modify-write of (model, name) in one transaction: ``change(current)`` (None
        when absent) is stored (None deletes) and returned. The row is locked from the read
        to the commit (``SELECT .. FOR UPDATE`` on PostgreSQL, the database's write lock taken
        at ``BEGIN IMMEDIATE`` on SQLite), so two writers cannot lose an update. ``fenced``
        False skips ``fence`` (the leader election's own epoch row)."""
        with self.state_transaction() as connection:
            if fenced:
                self._fenced(connection)
            if self._dialect == "postgresql":
                # A row to lock even when the state is absent: a placeholder, JSON null.
                connection.execute(
                    self._insert(policy_state)
                    .values(model=model, name=name, value="null", updated=now)
                    .on_conflict_do_nothing()
                )
            current = self.locked_state(connection, model, name)
            value = change(current)
            self._write_state(connection, model, name, value, now)
        return value

    def locked_state(
        self, connection: Connection, model: str, name: str, *, share: bool = False
    ) -> Any:
        """The value of (model, name) inside ``connection``'s transaction, its row locked on
        PostgreSQL until the transaction ends (``FOR SHARE`` with ``share``, else ``FOR
        UPDATE``); SQLite has no row locks, ``state_transaction`` holds its write lock."""
        query = sa.select(policy_state.c.value).where(
            policy_state.c.model == model, policy_state.c.name == name
        )
        if self._dialect == "postgresql":
            query = query.with_for_update(read=share)
        raw = connection.execute(query).scalar()
        return None if raw is None else json.loads(raw)

    def states(self, name: str) -> dict[str, Any]:
        """Every model's value stored under ``name``."""
        query = sa.select(policy_state.c.model, policy_state.c.value).where(
            policy_state.c.name == name
        )
        with self.engine.connect() as connection:
            rows = [(row.model, json.loads(row.value)) for row in connection.execute(query)]
        return {model: value for model, value in rows if value is not None}

    @contextmanager
    def state_transaction(self) -> Iterator[Connection]:
        """A transaction for policy state; on SQLite it holds the write lock from its start
        (``BEGIN IMMEDIATE``; a deferred one that reads first and then writes fails with
        SQLITE_BUSY when another connection wrote in between, instead of waiting)."""
        with self.engine.begin() as connection:
            if self._dialect == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection

    def _fenced(self, connection: Connection) -> None:
        if self.fence is not None:
            self.fence(connection)

    def _write_state(
        self, connection: Connection, model: str, name: str, value: Any, now: float
    ) -> None:
        if value is None:
            connection.execute(
                sa.delete(policy_state).where(
                    policy_state.c.model == model, policy_state.c.name == name
                )
            )
            return
        statement = self._insert(policy_state).values(
            model=model, name=name, value=json.dumps(value), updated=now
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["model", "name"],
                set_={"value": statement.excluded.value, "updated": statement.excluded.updated},
            )
        )

    # -- retention ------------------------------------------------------------------------

    def prune(
        self,
        now: float,
        max_records: int,
        record_age: float,
        counts_age: float,
        label_window: float = 0.0,
    ) -> dict[str, int]:
        """Delete records older than ``record_age`` s or beyond the newest ``max_records``,
        held labels older than ``record_age``, and counts, accuracy aggregates and report ids
        older than ``counts_age``. Returns the rows deleted per table. The aggregates outlive
        the records they were summed from: accuracy is kept as long as the counts.

        ``label_window`` (the stated label delay plus a margin) protects the newest records
        and held labels: nothing younger is deleted, whatever ``record_age`` and
        ``max_records`` say, so that a label arriving within the delay still finds its record.
        """
        record_age = max(record_age, label_window)
        protected = now - label_window
        deleted: dict[str, int] = {}
        with self.engine.begin() as connection:
            deleted["predictions"] = connection.execute(
                sa.delete(predictions).where(predictions.c.time < now - record_age)
            ).rowcount
            cut = connection.execute(
                sa.select(predictions.c.id)
                .order_by(predictions.c.id.desc())
                .offset(max_records)
                .limit(1)
            ).scalar()
            if cut is not None:
                deleted["predictions"] += connection.execute(
                    sa.delete(predictions).where(
                        predictions.c.id <= cut, predictions.c.time < protected
                    )
                ).rowcount
            deleted["pending_labels"] = connection.execute(
                sa.delete(pending_labels).where(pending_labels.c.received < now - record_age)
            ).rowcount
            cut = now - counts_age
            # bin_counts has no index by bucket alone (it is the largest table): its rows go
            # by (model, version, bucket) range for each version with traffic that old.
            old = connection.execute(
                sa.select(traffic.c.model, traffic.c.version)
                .where(traffic.c.bucket < cut)
                .distinct()
            ).all()
            deleted["bin_counts"] = 0
            for model, version in old:
                deleted["bin_counts"] += connection.execute(
                    sa.delete(bin_counts).where(
                        bin_counts.c.model == model,
                        bin_counts.c.version == version,
                        bin_counts.c.bucket < cut,
                    )
                ).rowcount
            for table in (traffic, latency, *_AGGREGATES, *_ESTIMATE_AGGREGATES):
                deleted[table.name] = connection.execute(
                    sa.delete(table).where(table.c.bucket < cut)
                ).rowcount
            deleted["reports"] = connection.execute(
                sa.delete(reports).where(reports.c.received < now - counts_age)
            ).rowcount
        return deleted


def _insert(dialect: str, table: sa.Table) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _add(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Upsert ``rows`` adding their non-key columns to the stored ones."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    statement = _insert(connection.dialect.name, table)
    added = {
        c.name: c + getattr(statement.excluded, c.name) for c in table.columns if c.name not in keys
    }
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=added), rows)


_SUM_COLUMNS = [c.name for c in accuracy_sums.columns if not c.primary_key]


class _Sums:
    """The accuracy aggregates one transaction adds, summed per key before one upsert a table.

    Keys are (model, version, daily, bucket or day of the record's time, ...); what a record
    and a label add is ``monitor.accuracy``'s ``record_top`` and ``label_terms``.
    """

    def __init__(self, bucket_seconds: int, histograms: bool = False, classes: bool = True) -> None:
        self.bucket_seconds = bucket_seconds
        self.histograms = histograms  # top_histograms: migration 5's backfill only
        self.classes = classes  # False: migrations 4 and 5, before class_histograms exists
        self.sums: dict[tuple[str, int, bool, int], dict[str, float]] = {}
        self.confusion: dict[tuple[str, int, bool, int, str, str], int] = {}
        self.losses: dict[tuple[str, int, bool, int, str, int, int], list[float]] = {}
        self.lags: dict[tuple[str, int, bool, int, int], int] = {}
        self.tops: dict[tuple[str, int, bool, int, bool, int], list[float]] = {}
        self.class_tops: dict[tuple[str, int, bool, int, bool, str, int], list[float]] = {}

    def size(self) -> int:
        sizes = (self.sums, self.confusion, self.losses, self.lags, self.tops, self.class_tops)
        return sum(len(x) for x in sizes)

    def _rows(
        self, key: tuple[str, int], time: float
    ) -> list[tuple[tuple[str, int, bool, int], dict[str, float]]]:
        """The bucket's and the day's keys and sums of a record made at ``time``."""
        bucket = int(time // self.bucket_seconds) * self.bucket_seconds
        wheres = [(*key, False, bucket), (*key, True, bucket // DAY * DAY)]
        return [(w, self.sums.setdefault(w, dict.fromkeys(_SUM_COLUMNS, 0))) for w in wheres]

    def record(self, key: tuple[str, int], time: float, task: Task, answer: dict[str, Any]) -> None:
        """A record made at ``time`` answering ``answer`` (as stored)."""
        top = record_top(task, answer["probabilities"])
        for _, row in self._rows(key, time):
            row["records"] += 1
            if top is not None:
                row["top_count"] += 1
                row["top_sum"] += top
        self.top(key, time, task, answer, labelled=False)

    def top(
        self, key: tuple[str, int], time: float, task: Task, answer: dict[str, Any], labelled: bool
    ) -> None:
        """Count a record's top-class probability in its histograms (all or labelled), overall
        and by its predicted class."""
        top = record_top(task, answer["probabilities"])
        if top is None:
            return
        bucket = int(time // self.bucket_seconds) * self.bucket_seconds
        predicted = _label_key(str(answer["value"]))
        for where in ((*key, False, bucket), (*key, True, bucket // DAY * DAY)):
            cells = []
            if self.histograms:
                cells.append(self.tops.setdefault((*where, labelled, top_bin(top)), [0, 0.0]))
            if self.classes:
                cell = (*where, labelled, predicted, top_bin(top))
                cells.append(self.class_tops.setdefault(cell, [0, 0.0]))
            for summed in cells:
                summed[0] += 1
                summed[1] += top

    def label(
        self,
        key: tuple[str, int],
        time: float,
        task: Task,
        answer: dict[str, Any],
        label: Any,
        label_time: float,
    ) -> None:
        """A label joined to a record made at ``time`` answering ``answer`` (as stored)."""
        terms = label_terms(
            task, answer["value"], answer["probabilities"], label, max(label_time - time, 0.0)
        )
        self.top(key, time, task, answer, labelled=True)
        for where, row in self._rows(key, time):
            row["labels"] += 1
            if terms.error is not None:
                row["error_count"] += 1
                row["absolute_error_sum"] += abs(terms.error)
                row["squared_error_sum"] += terms.error**2
            lag = (*where, terms.lag_bin)
            self.lags[lag] = self.lags.get(lag, 0) + 1
            if terms.confusion is None:
                continue
            actual, predicted = (_label_key(x) for x in terms.confusion)
            cell = (*where, actual, predicted)
            self.confusion[cell] = self.confusion.get(cell, 0) + 1
            for width, column, loss in terms.losses:
                summed = self.losses.setdefault((*where, actual, width, column), [0, 0.0])
                summed[0] += 1
                summed[1] += loss

    def write(self, connection: Connection) -> None:
        def keyed(table: sa.Table, key: tuple[Any, ...]) -> dict[str, Any]:
            names = [c.name for c in table.primary_key.columns]
            return dict(zip(names, key, strict=True))

        _add(connection, accuracy_sums, [keyed(accuracy_sums, k) | v for k, v in self.sums.items()])
        _add(
            connection,
            confusion,
            [keyed(confusion, k) | {"count": n} for k, n in self.confusion.items()],
        )
        _add(
            connection,
            label_losses,
            [
                keyed(label_losses, k) | {"count": n, "loss_sum": x}
                for k, (n, x) in self.losses.items()
            ],
        )
        _add(
            connection,
            label_lags,
            [keyed(label_lags, k) | {"count": n} for k, n in self.lags.items()],
        )
        _add(
            connection,
            top_histograms,
            [
                keyed(top_histograms, k) | {"count": n, "top_sum": x}
                for k, (n, x) in self.tops.items()
            ],
        )
        _add(
            connection,
            class_histograms,
            [
                keyed(class_histograms, k) | {"count": n, "top_sum": x}
                for k, (n, x) in self.class_tops.items()
            ],
        )


# What a label join reads back of its record for the aggregates.
_JOINED = (
    predictions.c.model, predictions.c.version, predictions.c.time, predictions.c.prediction,
    predictions.c.label, predictions.c.label_time,
)  # fmt: skip


def _sum_labels(connection: Connection, joined: Sequence[Any], sums: _Sums) -> None:
    """Add labels just joined (rows of ``_JOINED``) to ``sums``, by their version's task."""
    tasks = _tasks_of(connection, {(r.model, int(r.version)) for r in joined})
    for r in joined:
        key = (r.model, int(r.version))
        answer = json.loads(r.prediction)
        task = tasks.get(key) or _guess_task(answer["value"], answer["probabilities"])
        sums.label(key, r.time, task, answer, json.loads(r.label)["value"], r.label_time)


def _label_key(value: str) -> str:
    if len(value) <= LABEL_KEY_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _guess_task(value: Any, probabilities: Sequence[float]) -> Task:
    """A version's task when model.json does not say: a number without probabilities is a
    regressor's answer (an integer too: JSON keeps 3.0 apart from 3, a float is written)."""
    if isinstance(value, float) and not probabilities:
        return Task("regression")
    return Task("classification")


def _remember_tasks(connection: Connection, tasks: dict[tuple[str, int], Task]) -> None:
    """Store each version's task once: the first one stored is what its aggregates follow."""
    if not tasks:
        return
    rows = [
        {"model": m, "version": v, "task": t.kind, "classes": json.dumps(list(t.classes))}
        for (m, v), t in tasks.items()
    ]
    statement = _insert(connection.dialect.name, version_tasks).on_conflict_do_nothing()
    connection.execute(statement, rows)


def _tasks_of(
    connection: Connection, keys: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], Task]:
    wanted = set(keys)
    if not wanted:
        return {}
    query = sa.select(version_tasks).where(
        sa.tuple_(version_tasks.c.model, version_tasks.c.version).in_(sorted(wanted))
    )
    return {
        (row.model, int(row.version)): Task(row.task, tuple(json.loads(row.classes)))
        for row in connection.execute(query)
    }


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name != "postgresql":
        raise ValueError(f"the monitor store supports SQLite and PostgreSQL, not {url!r}")
    return engine


def _stored(row: Any) -> StoredPrediction:
    inputs = json.loads(row.inputs)
    answer = json.loads(row.prediction)
    label = None if row.label is None else json.loads(row.label)["value"]
    return StoredPrediction(
        request_id=row.request_id,
        model=row.model,
        version=int(row.version),
        time=float(row.time),
        numeric=[math.nan if x is None else float(x) for x in inputs["numeric"]],
        categorical=list(inputs["categorical"]),
        value=answer["value"],
        probabilities=list(answer["probabilities"]),
        label=label,
        label_time=row.label_time,
    )


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _chunks(items: list[_T], size: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

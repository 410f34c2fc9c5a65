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

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

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


MIGRATIONS: list[Callable[[Connection], None]] = [_migration_1, _migration_2, _migration_3]
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

    def ingest(self, report: Report) -> tuple[int, bool]:
        """Commit ``report`` once; returns (highest committed sequence, applied now)."""
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
                self._add_records(connection, report.records)
            highest = connection.execute(
                sa.select(sa.func.max(reports.c.sequence)).where(
                    reports.c.instance_id == report.instance_id
                )
            ).scalar_one()
        return int(highest), applied

    def _insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _add(self, connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Upsert ``rows`` adding their non-key columns to the stored ones."""
        if not rows:
            return
        keys = [c.name for c in table.primary_key.columns]
        statement = self._insert(table)
        added = {
            c.name: c + getattr(statement.excluded, c.name)
            for c in table.columns
            if c.name not in keys
        }
        connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=added), rows)

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

    def _add_records(self, connection: Connection, records: Sequence[PredictionIn]) -> None:
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
        # A (model, request id) seen before keeps its first record.
        connection.execute(self._insert(predictions).on_conflict_do_nothing(), rows)
        self._join_pending(connection, [(r.model, r.request_id) for r in records])

    def _join_pending(self, connection: Connection, keys: list[tuple[str, str]]) -> None:
        """Join held labels to the records ``keys`` (model, request id) just stored.

        A label held for the record's model wins over one that named no model; a label that
        named no model joins the first record with its id to arrive.
        """
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
                connection.execute(
                    sa.update(predictions)
                    .where(predictions.c.model == model, predictions.c.request_id == request_id)
                    .where(predictions.c.label.is_(None))
                    .values(label=row.label, label_time=row.label_time)
                )
                connection.execute(
                    sa.delete(pending_labels).where(
                        pending_labels.c.model == row.model,
                        pending_labels.c.request_id == request_id,
                    )
                )

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
                updated = connection.execute(
                    sa.update(predictions)
                    .where(
                        predictions.c.model == model,
                        predictions.c.request_id == label.request_id,
                        predictions.c.label.is_(None),
                    )
                    .values(label=value, label_time=label.time)
                ).rowcount
                if updated:
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
        """(model, version) pairs with counts in buckets from ``since`` on."""
        query = (
            sa.select(bin_counts.c.model, bin_counts.c.version)
            .where(bin_counts.c.bucket >= math.floor(since))
            .distinct()
        )
        with self.engine.connect() as connection:
            return sorted((m, int(v)) for m, v in connection.execute(query))

    def table_rows(self) -> dict[str, int]:
        """Row count of each data table (the store size a dashboard shows)."""
        tables = [reports, bin_counts, traffic, latency, predictions, pending_labels, events]
        with self.engine.connect() as connection:
            return {
                t.name: int(
                    connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                )
                for t in tables
            }

    # -- events ---------------------------------------------------------------------------

    def add_event(
        self, time: float, kind: str, model: str, version: int, reason: str, figures: dict[str, Any]
    ) -> None:
        with self.engine.begin() as connection:
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
        with self.engine.begin() as connection:
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
        held labels older than ``record_age``, and counts and report ids older than
        ``counts_age``. Returns the rows deleted per table.

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
            for table in (bin_counts, traffic, latency):
                deleted[table.name] = connection.execute(
                    sa.delete(table).where(table.c.bucket < now - counts_age)
                ).rowcount
            deleted["reports"] = connection.execute(
                sa.delete(reports).where(reports.c.received < now - counts_age)
            ).rowcount
        return deleted


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

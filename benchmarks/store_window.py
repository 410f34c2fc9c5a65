"""How fast the monitor store answers at full retention: window, accuracy and pruning queries.

    python benchmarks/store_window.py [--days 90] [--postgres URL] [--json FILE]

Fills a store with ``--days`` days of one model version at one bucket a minute, as the
gateway's reports leave it: 20 features of 20 bins plus a 2-bin prediction distribution
(402 count rows a bucket, 52 million at 90 days), a traffic row, 10 latency bins, and the
accuracy aggregates of a binary classifier whose records all get a label. The rows are
bulk-inserted straight into the store's tables (SQLAlchemy ``exec_driver_sql``, COPY on
PostgreSQL) after ``Store`` created the schema with every migration, so that the indexes are
the ones a real store has. A built store is kept in ``--cache`` (SQLite) or as database
``driftgate_bench_<days>d`` on the PostgreSQL server, and reused.

Then it times, ``--repeat`` times each, through ``driftgate.monitor.store.Store``:
the 1-hour window ``counts`` query (what drift evaluation reads every minute),
``active_versions`` over the last hour, the accuracy of the last hour and of the whole
history (``accuracy_totals`` + ``accuracy_from``: what ``Monitor.accuracy`` does), the
row counts of ``table_rows`` (the store-size gauges), and a prune that deletes the oldest
minute (the deleted minutes are written back afterwards, so
the cached store keeps its size). Reported: median and p95 in milliseconds, on SQLite and,
with ``--postgres URL`` or ``DRIFTGATE_TEST_POSTGRES_URL``, on PostgreSQL. Target: the
1-hour window query under 50 ms on both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from driftgate.monitor.accuracy import accuracy_from, lag_bin  # noqa: E402
from driftgate.monitor.store import Store, sqlite_url  # noqa: E402

MODEL, VERSION = "bench", 1
BUCKET = 60
START = 1_699_920_000  # the start of a (UTC) day
FEATURES, BINS = 20, 20
CLASSES = ("no", "yes")
LATENCY_BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1e300)
TARGET_MS = 50.0


# -- filling ------------------------------------------------------------------------------


def _bucket_rows(bucket: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row one minute of traffic leaves in the store's tables (counts vary a little)."""
    k = bucket // BUCKET
    rows: dict[str, list[tuple[Any, ...]]] = {
        "bin_counts": [
            (MODEL, VERSION, False, f"f{f:02d}", bucket, b, 5 + (k + f + b) % 7)
            for f in range(FEATURES)
            for b in range(BINS)
        ],
        "traffic": [(MODEL, VERSION, bucket, 100, k % 2, 100, 0.5)],
        "latency": [(MODEL, VERSION, bucket, le, 10) for le in LATENCY_BOUNDS],
        "accuracy_sums": [(MODEL, VERSION, False, bucket, 50, 50, 50, 40.0, 0, 0.0, 0.0)],
        "confusion": [
            (MODEL, VERSION, False, bucket, a, p, 10 + (k % 3 if a == p else 0))
            for a in CLASSES
            for p in CLASSES
        ],
        "label_losses": [
            (MODEL, VERSION, False, bucket, a, 2, i, 25, 8.0) for i, a in enumerate(CLASSES)
        ],
        "label_lags": [
            (MODEL, VERSION, False, bucket, lag_bin(s), 10) for s in (30, 300, 3000, 3e4, 3e5)
        ],
        "reports": [("bench-gateway", k, float(bucket))],
    }
    rows["bin_counts"] += [(MODEL, VERSION, True, "label", bucket, b, 50) for b in range(2)]
    return rows


# The accuracy aggregates' value columns (the rest is the key), summed into day rows.
SUMMED = {"accuracy_sums": 7, "confusion": 1, "label_losses": 2, "label_lags": 1}


def _fill(store: Store, first: int, buckets: int, days: bool = True) -> None:
    """Bulk-insert ``buckets`` minutes from bucket ``first`` on (the start of a day), a day
    per transaction, with the accuracy aggregates' day rows (``days``)."""
    day = 1440
    for start in range(0, buckets, day):
        chunk: dict[str, list[tuple[Any, ...]]] = {}
        for i in range(start, min(start + day, buckets)):
            for table, rows in _bucket_rows(first + i * BUCKET).items():
                chunk.setdefault(table, []).extend(rows)
        with store.engine.begin() as connection:
            for table, rows in chunk.items():
                if days and table in SUMMED:
                    rows = rows + _day_rows(rows, SUMMED[table])
                _bulk(connection, table, rows)


def _day_rows(rows: list[tuple[Any, ...]], values: int) -> list[tuple[Any, ...]]:
    """The day row of each key of one day's bucket rows (model, version, daily, bucket, ...)."""
    summed: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = (row[0], row[1], True, row[3] // 86400 * 86400, *row[4:-values])
        total = summed.setdefault(key, [0] * values)
        for i, value in enumerate(row[-values:]):
            total[i] += value
    return [(*key, *total) for key, total in summed.items()]


def _bulk(connection: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(rows[0]))
    connection.exec_driver_sql(f"INSERT INTO {table} VALUES ({marks})", rows)


def _built(store: Store, buckets: int) -> bool:
    with store.engine.connect() as connection:
        found = connection.execute(sa.text("SELECT count(*) FROM traffic")).scalar_one()
    return int(found) == buckets


def _sqlite_store(cache: Path, days: float, log: Callable[[str], None]) -> Store:
    buckets = int(days * 1440)
    directory = cache / f"store-{days:g}d"
    store = Store(sqlite_url(directory))
    if not _built(store, buckets):
        store.close()
        for name in ("monitor.db", "monitor.db-wal", "monitor.db-shm"):
            (directory / name).unlink(missing_ok=True)
        store = Store(sqlite_url(directory))
        started = time.perf_counter()
        with store.engine.begin() as connection:  # only while filling: speed, not safety
            connection.exec_driver_sql("PRAGMA cache_size=-1000000")
        _fill(store, START, buckets)
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        log(f"sqlite: built {days:g} days in {time.perf_counter() - started:.0f} s")
    return store


def _postgres_store(admin: str, name: str | None, days: float, log: Callable[[str], None]) -> Store:
    buckets = int(days * 1440)
    name = name or f"driftgate_bench_{days:g}d".replace(".", "_")
    url = sa.engine.make_url(admin)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
        if exists is None:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    store = Store(url.set(database=name).render_as_string(hide_password=False))
    if not _built(store, buckets):
        with store.engine.begin() as connection:
            for table in (*_bucket_rows(START), "version_tasks"):
                connection.execute(sa.text(f"TRUNCATE {table}"))
        started = time.perf_counter()
        _fill(store, START, buckets)
        log(f"postgresql: built {days:g} days in {time.perf_counter() - started:.0f} s")
    # Statistics and the visibility map (index-only scans), as autovacuum keeps them.
    target = sa.create_engine(store.url, isolation_level="AUTOCOMMIT")
    with target.connect() as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
    target.dispose()
    engine.dispose()
    return store


# -- measuring ----------------------------------------------------------------------------


def _timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Wall-clock median and p95, and the median CPU time of this process (on SQLite the
    whole query: the figure a busy machine does not inflate)."""
    call()  # warm
    times, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - used) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "cpu_median_ms": statistics.median(cpu),
    }


def measure(store: Store, days: float, repeat: int) -> dict[str, Any]:
    buckets = int(days * 1440)
    end = START + buckets * BUCKET
    hour = end - 3600
    counts = store.counts(MODEL, VERSION, hour, end)
    assert len(counts) == FEATURES + 1 and sum(counts[False, "f00"].values()) > 0, counts.keys()
    figures: dict[str, Any] = {
        "count_rows": store.table_rows()["bin_counts"],
        "queries": {
            "window_counts_1h": _timed(lambda: store.counts(MODEL, VERSION, hour, end), repeat),
            "active_versions_1h": _timed(lambda: store.active_versions(hour), repeat),
            "accuracy_1h": _timed(lambda: _accuracy(store, hour, end), repeat),
            "accuracy_total": _timed(lambda: _accuracy(store, None, end), repeat),
            # The store-size gauges' row counts, refreshed by every evaluation.
            "table_rows": _timed(store.table_rows, max(1, repeat // 10)),
        },
    }
    prunes = list(_prunes(store, buckets, min(repeat, 10)))
    figures["queries"]["prune_oldest_minute"] = {
        "median_ms": statistics.median(prunes),
        "p95_ms": sorted(prunes)[min(len(prunes) - 1, round(0.95 * (len(prunes) - 1)))],
    }
    return figures


def _accuracy(store: Store, start: float | None, end: float) -> None:
    totals = store.accuracy_totals(MODEL, VERSION, start, end)
    figures = accuracy_from(totals, "classification", CLASSES)
    assert figures.accuracy is not None and figures.label_count > 0


def _prunes(store: Store, buckets: int, times: int) -> Iterator[float]:
    """Prune the oldest minute ``times`` times (as the monitor's retention would), then write
    those minutes back."""
    end = START + buckets * BUCKET
    for i in range(times):
        age = end - (START + (i + 1) * BUCKET)  # counts older than this go: minute i
        started = time.perf_counter()
        deleted = store.prune(end, max_records=10**9, record_age=1e12, counts_age=age)
        yield (time.perf_counter() - started) * 1e3
        assert deleted["bin_counts"] == FEATURES * BINS + 2, deleted
    # The minutes back; the first day's row was pruned with its first minute: back too.
    _fill(store, START, times, days=False)
    with store.engine.begin() as connection:
        for table, values in SUMMED.items():
            day = [r for m in range(1440) for r in _bucket_rows(START + m * BUCKET)[table]]
            _bulk(connection, table, _day_rows(day, values))


def _table(results: dict[str, Any]) -> str:
    heads = [f"{d}: median / p95 (client CPU) ms" for d in results]
    lines = ["| query | " + " | ".join(heads) + " |", "|---|" + "--:|" * len(results)]
    for name in next(iter(results.values()))["queries"]:
        cells = []
        for r in results.values():
            q = r["queries"][name]
            cpu = f" ({q['cpu_median_ms']:.1f})" if "cpu_median_ms" in q else ""
            cells.append(f"{q['median_ms']:.2f} / {q['p95_ms']:.2f}{cpu}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=90.0, help="days of history (90)")
    parser.add_argument("--repeat", type=int, default=30, help="timings per query (30)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "store_window")
    parser.add_argument("--postgres", default=os.environ.get("DRIFTGATE_TEST_POSTGRES_URL"))
    parser.add_argument(
        "--postgres-database", help="database for the store (driftgate_bench_<days>d)"
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--json", type=Path, help="write the figures there too")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    makers: list[tuple[str, Callable[[], Store]]] = []
    if not args.no_sqlite:
        makers.append(("sqlite", lambda: _sqlite_store(args.cache, args.days, log)))
    if args.postgres:
        makers.append(
            (
                "postgresql",
                lambda: _postgres_store(args.postgres, args.postgres_database, args.days, log),
            )
        )
    if not makers:
        parser.error("nothing to measure: --no-sqlite without --postgres")
    results: dict[str, Any] = {}
    for dialect, make in makers:
        store = make()
        try:
            results[dialect] = measure(store, args.days, args.repeat)
        finally:
            store.close()
        log(f"{dialect}: {results[dialect]['count_rows']:,} count rows measured")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# store window queries, {args.days:g} days, one bucket a minute (load {load})\n")
    print(_table(results))
    for dialect, r in results.items():
        window = r["queries"]["window_counts_1h"]["median_ms"]
        verdict = "pass" if window < TARGET_MS else "FAIL"
        print(
            f"\ntarget: 1-hour window under {TARGET_MS:g} ms on {dialect}: {window:.1f} {verdict}"
        )
    if args.json:
        args.json.write_text(json.dumps({"days": args.days, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

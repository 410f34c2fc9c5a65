"""The monitor store on SQLite: exactly-once ingest, durability, label join, retention."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from monitor.store import (
    MIGRATIONS,
    Distribution,
    LabelIn,
    PredictionIn,
    Report,
    Store,
    VersionCounts,
    sqlite_url,
)

T0 = 1_700_000_000.0


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


def test_same_sequence_twice_is_counted_once(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    assert store.ingest(_report(1)) == (1, True)
    assert store.ingest(_report(1)) == (1, False)
    assert store.ingest(_report(2)) == (2, True)
    assert store.ingest(_report(1, instance="gw-b")) == (1, True)
    counts = store.counts("iris", 1, None, None)
    assert counts[(False, "x")] == {0: 3, 1: 6, 2: 9, -1: 3}
    assert counts[(True, "label")] == {0: 12}
    assert store.traffic("iris", 1, None, None)["requests"] == 15


def test_committed_reports_survive_reopen(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    store.ingest(_report(1, records=("r1",)))
    store.close()
    reopened = Store(sqlite_url(tmp_path))
    assert reopened.schema_version == len(MIGRATIONS)
    assert reopened.ingest(_report(1, records=("r1",))) == (1, False)
    assert reopened.counts("iris", 1, None, None)[(False, "x")][2] == 3
    assert [p.request_id for p in reopened.predictions("iris", 1, None, None)] == ["r1"]
    with reopened.engine.connect() as connection:
        mode = connection.execute(sa.text("PRAGMA journal_mode")).scalar()
    assert mode == "wal"


def test_windows_select_buckets(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path), bucket_seconds=60)
    store.ingest(Report("gw", 1, T0, [VersionCounts("m", 1, [Distribution("x", [1])])]))
    store.ingest(Report("gw", 2, T0 + 3600, [VersionCounts("m", 1, [Distribution("x", [10])])]))
    assert store.counts("m", 1, T0 + 1800, T0 + 7200)[(False, "x")] == {0: 10}
    assert store.counts("m", 1, None, T0 + 7200)[(False, "x")] == {0: 11}


def test_labels_join_in_any_order_and_duplicates_are_idempotent(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
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
    assert result == (1, 2, 1)  # accepted, duplicates, unknown
    store.ingest(_report(2, records=("early",)))
    labels = {p.request_id: p.label for p in store.predictions("iris", 1, None, None)}
    assert labels == {"known": "setosa", "early": "virginica"}
    assert store.table_rows()["pending_labels"] == 0
    assert store.add_labels([LabelIn("early", "x", T0)], now=T0) == (0, 1, 0)


def test_retention_prunes_by_age_and_by_rows(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    for sequence in range(1, 11):
        store.ingest(_report(sequence, records=(f"r{sequence}",)))
    store.add_labels([LabelIn("never", 1, T0)], now=T0)
    deleted = store.prune(now=T0 + 5.5 + 100, max_records=3, record_age=100, counts_age=1e9)
    assert deleted["predictions"] == 7  # r1..r5 by age, r6 and r7 beyond the newest 3
    assert deleted["pending_labels"] == 1
    remaining = [p.request_id for p in store.predictions("iris", 1, None, None)]
    assert remaining == ["r8", "r9", "r10"]
    store.prune(now=T0 + 1e6, max_records=3, record_age=1e9, counts_age=10)
    assert store.counts("iris", 1, None, None) == {}
    # Pruned report ids are old enough that no gateway still resends them.
    assert store.table_rows()["reports"] == 0

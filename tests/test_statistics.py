"""The gateway's statistics collector counts exactly what the converter's binning rule says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftgate.core.profile import categorical_bins, count_categories, count_numeric, numeric_bins
from driftgate.gateway.statistics import VersionCollector, VersionCounts


def _reference(train: np.ndarray, colours: list[str], classes: list[str]) -> dict:
    features = [
        {"name": f"f{j}", "input": "numeric", "column": j, **numeric_bins(train[:, j]).to_dict()}
        for j in range(train.shape[1])
    ]
    features.append(
        {
            "name": "colour",
            "input": "categorical",
            "column": 0,
            **categorical_bins(np.array(colours, dtype=object)).to_dict(),
        }
    )
    prediction = categorical_bins(np.array(classes, dtype=object)).to_dict()
    return {"version": 1, "rows": len(train), "features": features, "prediction": prediction}


@pytest.fixture
def reference() -> dict:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 3))
    colours = list(rng.choice(["red", "green", "blue"], size=500))
    return _reference(train, colours, ["0", "1"])


def _collector(reference: dict, **kwargs: object) -> VersionCollector:
    return VersionCollector(
        reference, {"numeric": 3, "categorical": 1}, ["label", "probabilities"], **kwargs
    )


def serve(
    collector: VersionCollector, feed: dict, outputs: list[np.ndarray], rid: str, seconds: float
) -> None:
    """What the version runtime does for an answered request: record it, then observe it."""
    ns = int(seconds * 1e9)
    rows = len(next(iter(feed.values())))
    collector.record.request_succeeded(rows, ns, 0, 0, ns, 0)
    collector.observe(feed, outputs, rid)


def _request(rng: np.random.Generator, rows: int) -> tuple[dict, list[np.ndarray]]:
    numeric = rng.normal(scale=2.0, size=(rows, 3)).astype(np.float32)
    numeric[rng.random((rows, 3)) < 0.05] = np.nan
    numeric[rng.random((rows, 3)) < 0.02] = np.inf
    colours = rng.choice(["red", "green", "blue", "mauve", ""], size=(rows, 1)).astype(object)
    labels = rng.integers(0, 3, size=rows)  # class 2 is unknown to the profile: "other"
    probabilities = rng.random((rows, 2)).astype(np.float32)
    return {"numeric": numeric, "categorical": colours}, [labels, probabilities]


def test_counts_match_the_converter_binning_rule(reference: dict) -> None:
    rng = np.random.default_rng(1)
    collector = _collector(reference, max_pending=7)  # also exercises counting mid-stream
    feeds, outputs = [], []
    for i in range(40):
        feed, out = _request(rng, rows=int(rng.integers(1, 5)))
        serve(collector, feed, out, f"r{i}", 0.001 * i)
        feeds.append(feed)
        outputs.append(out)
    counts, records = collector.take()

    numeric = np.concatenate([f["numeric"] for f in feeds])
    for j in range(3):
        expected, non_finite = count_numeric(reference["features"][j]["edges"], numeric[:, j])
        assert counts.features[j].tolist() == expected.tolist()
        assert counts.nan[j] + counts.inf[j] == non_finite
        assert counts.nan[j] == np.isnan(numeric[:, j]).sum()
    colours = np.concatenate([f["categorical"] for f in feeds])[:, 0]
    expected, missing = count_categories(reference["features"][3]["categories"], colours)
    assert counts.features[3].tolist() == expected.tolist()
    assert counts.nan[3] == missing
    labels = np.concatenate([o[0] for o in outputs]).astype(str)
    assert counts.predictions.tolist() == [
        int((labels == "0").sum()),
        int((labels == "1").sum()),
        int((labels == "2").sum()),
    ]
    assert counts.requests == 40
    assert counts.rows == len(numeric) == len(records)
    assert counts.latency.sum() == 40
    assert counts.latency_sum == pytest.approx(sum(0.001 * i for i in range(40)))


def test_records_carry_the_row_and_the_prediction(reference: dict) -> None:
    rng = np.random.default_rng(2)
    collector = _collector(reference)
    feed, out = _request(rng, rows=2)
    serve(collector, feed, out, "order-7", 0.002)
    _, records = collector.take()
    assert [r.request_id for r in records] == ["order-7:0", "order-7:1"]
    first = records[0]
    np.testing.assert_array_equal(np.float32(first.numeric), feed["numeric"][0])
    assert list(first.categorical) == [str(feed["categorical"][0, 0])]
    assert first.label == int(out[0][0])
    assert list(first.probabilities) == pytest.approx(list(out[1][0]))


def test_sampling_and_the_record_cap_bound_memory(reference: dict) -> None:
    rng = np.random.default_rng(3)
    none = _collector(reference, record_rate=0.0)
    capped = _collector(reference, max_records=10)
    for i in range(30):
        feed, out = _request(rng, rows=1)
        serve(none, feed, out, f"a{i}", 0.001)
        serve(capped, feed, out, f"b{i}", 0.001)
    counts, records = none.take()
    assert records == [] and none.errors == 0
    assert counts.rows == 30 and counts.features[3].sum() + counts.nan[3] == 30  # still counted
    counts, records = capped.take()
    assert len(records) == 10 and capped.dropped_records == 20
    assert counts.requests == 30  # counting is never sampled


def test_failures_count_as_requests_and_errors_from_the_record(reference: dict) -> None:
    collector = _collector(reference)
    collector.record.request_failed(4_000_000, "INVALID_ARGUMENT")
    counts, _ = collector.take()
    assert (counts.requests, counts.errors, counts.rows) == (1, 1, 0)
    assert counts.latency.sum() == 0  # the latency histogram holds answered requests
    assert collector.take()[0].is_empty  # each take sends the difference since the last


def test_a_version_without_a_profile_still_counts_traffic() -> None:
    collector = VersionCollector(None, {"INPUT0": 3}, ["OUTPUT0"])
    serve(collector, {"INPUT0": np.zeros((4, 3), np.float32)}, [np.zeros((4, 3))], "x", 0.001)
    counts, _ = collector.take()
    assert (counts.requests, counts.rows, counts.features) == (1, 4, [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=6))
def test_deltas_merge_by_addition(parts: list[int]) -> None:
    rng = np.random.default_rng(sum(parts))
    train = rng.normal(size=(200, 3))
    reference = _reference(train, ["a", "b"] * 100, ["0", "1"])
    whole = _collector(reference)
    merged: VersionCounts | None = None
    for size in parts:
        piece = _collector(reference)
        for _ in range(size):
            feed, out = _request(rng, rows=1)
            serve(whole, feed, out, "r", 0.001)
            serve(piece, feed, out, "r", 0.001)
        counts, _ = piece.take()
        if merged is None:
            merged = counts
        else:
            merged.merge(counts)
    total, _ = whole.take()
    assert merged is not None
    assert [c.tolist() for c in merged.features] == [c.tolist() for c in total.features]
    assert merged.predictions.tolist() == total.predictions.tolist()
    assert (merged.requests, merged.rows) == (total.requests, total.rows)


def test_records_per_second_are_capped_and_counts_are_not(
    reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import driftgate.gateway.statistics as statistics

    clock = [1_000.2]
    monkeypatch.setattr(statistics.time, "time", lambda: clock[0])
    collector = _collector(reference, record_max_per_second=10)
    rng = np.random.default_rng(4)
    for second in range(3):
        clock[0] = 1_000.2 + second
        for i in range(25):
            feed, out = _request(rng, rows=1)
            serve(collector, feed, out, f"s{second}-{i}", 0.001)
    counts, records = collector.take()
    assert counts.requests == 75  # every request is counted
    assert len(records) == 30  # 10 records in each of the 3 seconds
    assert [r.request_id for r in records[:2]] == ["s0-0", "s0-1"]
    assert records[10].request_id == "s1-0"


# -- hostile values and failures: bounded, and never misaligned ----------------------------


def _rows_request(rows: int, first: float, colour: str = "red") -> tuple[dict, list[np.ndarray]]:
    """Rows whose first numeric value identifies them: first, first + 1, ..."""
    numeric = np.zeros((rows, 3), np.float32)
    numeric[:, 0] = first + np.arange(rows)
    colours = np.full((rows, 1), colour, dtype=object)
    return {"numeric": numeric, "categorical": colours}, [
        np.zeros(rows, np.int64),
        np.full((rows, 2), 0.5, np.float32),
    ]


def _assert_aligned(records: list) -> None:
    """Every record's id names the request (and row) whose values it carries."""
    for record in records:
        request, _, row = record.request_id.partition(":")
        assert record.numeric[0] == float(request.removeprefix("r")) + int(row or 0)


def test_a_16m_character_category_counts_as_other_without_an_error(reference: dict) -> None:
    collector = _collector(reference)
    feed, out = _rows_request(256, 1000.0)
    feed["categorical"][0, 0] = "x" * 16_000_000
    serve(collector, feed, out, "r1000", 0.001)
    serve(collector, *_rows_request(2, 5000.0), "r5000", 0.001)
    counts, records = collector.take()
    assert collector.errors == 0
    other = counts.features[3][-1]
    assert other == 1 and counts.features[3].sum() == 258 - counts.nan[3]
    assert counts.rows == 258
    # The row with the huge value is not recorded; every other row is, with its own id.
    assert len(records) == 257 and collector.dropped_records == 1
    assert "r1000:0" not in {r.request_id for r in records}
    assert max(len(v) for r in records for v in r.categorical) <= 1024
    _assert_aligned(records)


def test_a_failed_count_loses_only_its_batch_and_ids_stay_aligned(
    reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import driftgate.gateway.statistics as statistics

    collector = _collector(reference)
    counter = statistics._count_feature
    calls = {"n": 0}

    def failing_once(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated")
        counter(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(statistics, "_count_feature", failing_once)
    for first in (100.0, 200.0, 300.0):
        serve(collector, *_rows_request(3, first), f"r{int(first)}", 0.001)
    lost, records = collector.take()
    assert collector.errors == 1 and collector.lost_requests == 3
    assert (lost.rows, records) == (0, [])
    assert lost.requests == 3  # requests are counted by the record, never lost
    # A request whose observe fails leaves nothing behind either.
    with pytest.raises(KeyError):
        collector.observe({"numeric": np.zeros((1, 3))}, [np.zeros(1)], "r-bad")
    for first in (400.0, 500.0):
        serve(collector, *_rows_request(2, first), f"r{int(first)}", 0.001)
    counts, records = collector.take()
    assert counts.rows == 4 and len(records) == 4
    assert [r.request_id for r in records] == ["r400:0", "r400:1", "r500:0", "r500:1"]
    _assert_aligned(records)


def test_records_are_bounded_by_bytes_and_ids_by_what_the_monitor_stores(
    reference: dict,
) -> None:
    collector = _collector(reference, max_record_bytes=2000)
    for first in range(40):  # records of about 100 bytes each
        serve(collector, *_rows_request(1, float(first)), f"r{first}", 0.001)
    _, records = collector.take()
    assert 10 <= len(records) < 40 and collector.dropped_records == 40 - len(records)
    _assert_aligned(records)

    ids = _collector(reference)
    serve(ids, *_rows_request(1, 1.0), "i" * 256, 0.001)  # 256 bytes: kept
    serve(ids, *_rows_request(2, 1.0), "j" * 255, 0.001)  # "j...j:1" is 257 bytes: not kept
    serve(ids, *_rows_request(1, 1.0), "nul\x00", 0.001)  # the monitor refuses NUL: not kept
    _, records = ids.take()
    assert [len(r.request_id) for r in records] == [256]
    assert ids.dropped_records == 3


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["float32", "float64", "int64"]))
def test_features_counted_together_equal_features_counted_one_by_one(seed: int, wire: str) -> None:
    """The block count (one cast, one bincount for all plain numeric features of an input)
    gives each feature exactly the bins, NaN, Inf and out-of-range counts of its own count,
    on the data users send: ties on the edges, integers, NaN, +-Inf and float64 values that
    overflow the served float32."""
    from driftgate.gateway.statistics import _count_feature

    rng = np.random.default_rng(seed)
    train = np.round(rng.normal(scale=3.0, size=(400, 4)), 1)  # decimals: ties on the edges
    train[:, 1] = rng.integers(-3, 4, size=400)  # an integer feature
    features = [
        {"name": f"f{j}", "input": "numeric", "column": j, **numeric_bins(train[:, j]).to_dict()}
        for j in (2, 0, 3, 1)  # the profile need not list columns in order
    ]
    features[2]["dtype"] = "float64"  # a second served dtype: a block of its own
    collector = VersionCollector(
        {"version": 1, "rows": 400, "features": features}, {"numeric": 4}, ["label"]
    )
    assert len(collector._blocks) == 2
    rows = int(rng.integers(1, 300))
    if wire == "int64":
        matrix = rng.integers(-5, 6, size=(rows, 4))
    else:
        matrix = np.round(rng.normal(scale=3.0, size=(rows, 4)), 1).astype(wire)
        matrix[rng.random((rows, 4)) < 0.1] = np.nan
        matrix[rng.random((rows, 4)) < 0.05] = np.inf
        matrix[rng.random((rows, 4)) < 0.05] = -np.inf
        if wire == "float64":
            matrix[rng.random((rows, 4)) < 0.05] = 1e300  # +Inf once served as float32
        edges = np.concatenate([f.edges for f in collector.features if f.edges is not None])
        matrix[:, 0][: len(edges)] = edges[:rows]  # values exactly on an edge

    together = collector._empty()
    for block in collector._blocks:
        block.count(together, matrix)
    alone = collector._empty()
    for index, feature in enumerate(collector.features):
        _count_feature(alone, index, feature, matrix, {})
    for mine, theirs in zip(together.features, alone.features, strict=True):
        assert mine.tolist() == theirs.tolist()
    assert together.nan.tolist() == alone.nan.tolist()
    assert together.inf.tolist() == alone.inf.tolist()
    assert together.out_of_range.tolist() == alone.out_of_range.tolist()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1.0, 0.3]))
def test_records_carry_their_own_rows_whatever_the_sampling_and_the_layout(
    seed: int, rate: float
) -> None:
    """Only sampled requests leave ids behind, so each record must still find its own rows:
    numeric values in profile order across inputs (columns out of order, a 1-D input between
    them), its category, prediction and probabilities, and every row of a sampled request."""
    import random

    rng = np.random.default_rng(seed)
    random.seed(seed)
    train = np.round(rng.normal(size=(300, 3)), 1)
    features = [
        {"name": "a2", "input": "a", "column": 2, **numeric_bins(train[:, 2]).to_dict()},
        {"name": "a0", "input": "a", "column": 0, **numeric_bins(train[:, 0]).to_dict()},
        {"name": "c", "input": "c", "column": 0,
         **categorical_bins(np.array(["x", "y"] * 150, dtype=object)).to_dict()},
        {"name": "b", "input": "b", "column": 0, **numeric_bins(train[:, 1]).to_dict()},
        {"name": "a1", "input": "a", "column": 1, **numeric_bins(train[:, 1]).to_dict()},
    ]  # fmt: skip
    collector = VersionCollector(
        {"version": 1, "rows": 300, "features": features},
        {"a": 3, "b": 1, "c": 1},
        ["label", "probabilities"],
        record_rate=rate,
    )
    sent = {}
    for i in range(int(rng.integers(1, 60))):
        rows = int(rng.integers(1, 4))
        feed = {
            "a": np.round(rng.normal(size=(rows, 3)), 1).astype(np.float32),
            "b": rng.integers(-3, 4, size=rows),
            "c": rng.choice(["x", "y", "z"], size=(rows, 1)).astype(object),
        }
        out = [rng.integers(0, 2, size=rows), rng.random((rows, 2)).astype(np.float32)]
        sent[f"q{i}"] = (feed, out)
        serve(collector, feed, out, f"q{i}", 0.001)
    _, records = collector.take()

    seen: dict[str, list[int]] = {}
    for record in records:
        request, _, row_text = record.request_id.partition(":")
        feed, out = sent[request]
        row = int(row_text or 0)
        assert row_text or len(out[0]) == 1
        seen.setdefault(request, []).append(row)
        a = feed["a"][row].astype(np.float64)
        assert list(record.numeric) == [a[2], a[0], float(feed["b"][row]), a[1]]
        assert list(record.categorical) == [feed["c"][row, 0]]
        assert record.label == int(out[0][row])
        assert list(record.probabilities) == out[1][row].astype(np.float64).tolist()
    for request, rows in seen.items():
        assert rows == list(range(len(sent[request][1][0])))  # every row, in order
    if rate == 1.0:
        assert list(seen) == list(sent)

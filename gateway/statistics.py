"""Input and prediction statistics of one served version, counted into its reference bins.

The request path only appends references to the arrays it already has (``observe``); the
counting happens in bulk, vectorised over many requests at once (``count_pending``): per
numeric feature one ``np.searchsorted`` over the frozen edges and one ``np.bincount``, per
categorical feature one sorted lookup. Counts are plain integer arrays that merge by
addition, so a delta can be held, re-sent or combined without loss. Request, error and
latency counts are not kept here: each ``take`` reads their difference from the version's
``VersionRecord``, where every request is counted once. Memory is bounded: at
``max_pending`` requests the pending arrays are counted soon after, on the event loop but
outside any request's handler (an error there is logged and counted), and at most
``max_records`` sampled prediction records wait for the next report. Records are sampled at
``record_rate`` and capped at ``record_max_per_second``, so what they cost a busy service is
bounded while a quiet one keeps every prediction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftgate.gateway.dataplane.record import LATENCY_BUCKETS, VersionRecord

__all__ = [
    "LATENCY_BOUNDS",
    "PredictionRecord",
    "VersionCollector",
    "VersionCounts",
]

log = logging.getLogger(__name__)

# Upper bounds (seconds, inclusive) of the latency histogram sent to the monitor: the
# buckets of the version's record, which Prometheus exports too.
LATENCY_BOUNDS = LATENCY_BUCKETS


@dataclass(frozen=True, slots=True)
class _RecordMark:
    """The record's figures at the last take, so that each take sends the difference."""

    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    latency_sum: float = 0.0

    def advance(self, record: VersionRecord, counts: VersionCounts) -> _RecordMark:
        """Put the difference since this mark into ``counts``; the new mark."""
        now = _RecordMark(
            record.success.count + record.fail.count,
            record.fail.count,
            tuple(record.request_seconds.counts),
            record.request_seconds.total,
        )
        counts.requests += now.requests - self.requests
        counts.errors += now.errors - self.errors
        counts.latency += np.subtract(now.latency, self.latency)
        counts.latency_sum += now.latency_sum - self.latency_sum
        return now


@dataclass
class VersionCounts:
    """A mergeable delta of counts for one version (sizes fixed by its reference profile)."""

    features: list[np.ndarray]
    nan: np.ndarray
    inf: np.ndarray
    out_of_range: np.ndarray
    predictions: np.ndarray
    latency: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BOUNDS) + 1, "i8"))
    latency_sum: float = 0.0
    requests: int = 0
    errors: int = 0
    rows: int = 0

    @classmethod
    def empty(cls, feature_bins: Sequence[int], prediction_bins: int) -> VersionCounts:
        n = len(feature_bins)
        return cls(
            features=[np.zeros(b, dtype=np.int64) for b in feature_bins],
            nan=np.zeros(n, dtype=np.int64),
            inf=np.zeros(n, dtype=np.int64),
            out_of_range=np.zeros(n, dtype=np.int64),
            predictions=np.zeros(prediction_bins, dtype=np.int64),
        )

    def merge(self, other: VersionCounts) -> None:
        for mine, theirs in zip(self.features, other.features, strict=True):
            mine += theirs
        self.nan += other.nan
        self.inf += other.inf
        self.out_of_range += other.out_of_range
        self.predictions += other.predictions
        self.latency += other.latency
        self.latency_sum += other.latency_sum
        self.requests += other.requests
        self.errors += other.errors
        self.rows += other.rows

    @property
    def is_empty(self) -> bool:
        return self.requests == 0 and self.errors == 0


@dataclass(frozen=True)
class PredictionRecord:
    """One predicted row that may later receive a label."""

    request_id: str
    time: float
    numeric: Sequence[float]
    categorical: Sequence[str]
    label: str | int | float | None
    probabilities: Sequence[float]


class _Lookup:
    """Vectorised string -> bin index; unknown values go to the last ("other") bin."""

    def __init__(self, categories: Sequence[Any]) -> None:
        values = np.array([str(c) for c in categories], dtype=str)
        self._order = np.argsort(values, kind="stable")
        self._sorted = values[self._order]
        self.other = len(values)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.other == 0:
            return np.zeros(len(values), dtype=np.intp)
        text = values.astype(str)
        position = np.searchsorted(self._sorted, text)
        clipped = np.minimum(position, self.other - 1)
        found = self._sorted[clipped] == text
        return np.where(found, self._order[clipped], self.other)


@dataclass(frozen=True)
class _Feature:
    name: str
    input: str
    column: int
    numeric: bool
    edges: np.ndarray | None
    lookup: _Lookup | None

    @property
    def bins(self) -> int:
        if self.numeric:
            assert self.edges is not None
            return len(self.edges) + 1
        assert self.lookup is not None
        return self.lookup.other + 1


def _features(reference: Mapping[str, Any], inputs: Mapping[str, int]) -> list[_Feature]:
    """The profile's features that the model's inputs carry (by input name and column)."""
    features = []
    for entry in reference.get("features", []):
        if entry.get("input") not in inputs or entry.get("column", 0) >= inputs[entry["input"]]:
            continue
        numeric = entry.get("kind") != "categorical"
        features.append(
            _Feature(
                name=str(entry["name"]),
                input=str(entry["input"]),
                column=int(entry.get("column", 0)),
                numeric=numeric,
                edges=np.asarray(entry.get("edges", []), dtype=np.float64) if numeric else None,
                lookup=None if numeric else _Lookup(entry.get("categories", [])),
            )
        )
    return features


class VersionCollector:
    """Counts one version's traffic; ``observe`` is cheap, ``drain`` does the work."""

    def __init__(
        self,
        reference: Mapping[str, Any] | None,
        input_columns: Mapping[str, int],
        output_names: Sequence[str],
        record_rate: float = 1.0,
        record_max_per_second: float = 0.0,
        max_pending: int = 512,
        max_records: int = 20000,
        record: VersionRecord | None = None,
    ) -> None:
        reference = reference or {}
        self.features = _features(reference, input_columns)
        prediction = reference.get("prediction") or {}
        self._prediction_numeric = prediction.get("kind") == "numeric"
        self._prediction_edges = np.asarray(prediction.get("edges", []), dtype=np.float64)
        self._prediction_lookup = _Lookup(prediction.get("categories", []))
        self.prediction_bins = (
            len(self._prediction_edges) + 1
            if self._prediction_numeric
            else (self._prediction_lookup.other + 1 if prediction else 0)
        )
        self._label_output = 0
        self._probability_output = (
            output_names.index("probabilities") if "probabilities" in output_names else None
        )
        self._record_rate = record_rate
        self._record_cap = record_max_per_second
        self._record_second = 0
        self._recorded_this_second = 0
        self._max_pending = max_pending
        self._max_records = max_records
        # Pending requests, column by column: no per-request container outlives its request
        # (thousands of small live dicts and tuples would make every GC pass slower).
        self._inputs: dict[str, list[np.ndarray]] = {f.input: [] for f in self.features}
        self._labels: list[np.ndarray] = []
        self._probabilities: list[np.ndarray] = []
        self._ids: list[str] = []
        self._times: list[float] = []
        self._sampled: list[bool] = []
        self.records: list[PredictionRecord] = []
        self.dropped_records = 0
        self.counts = self._empty()
        # Requests, errors and latency are not counted here: each take reads their deltas
        # from the version's record, the one place a request is counted.
        self.record = record if record is not None else VersionRecord()
        self._reported = _RecordMark()
        self._count_scheduled = False
        #: bulk counts that failed (logged; never raised into a request)
        self.errors = 0

    def _empty(self) -> VersionCounts:
        return VersionCounts.empty([f.bins for f in self.features], self.prediction_bins)

    # -- the request path -------------------------------------------------------------

    def observe(
        self,
        feed: Mapping[str, np.ndarray],
        outputs: list[np.ndarray],
        request_id: str,
    ) -> None:
        for name, parts in self._inputs.items():
            parts.append(feed[name])
        self._labels.append(outputs[self._label_output])
        if self._record_rate > 0:
            if self._probability_output is not None:
                self._probabilities.append(outputs[self._probability_output])
            now = time.time()
            self._ids.append(request_id)
            self._times.append(now)
            self._sampled.append(self._keep_record(now))
        if len(self._labels) >= self._max_pending and not self._count_scheduled:
            self._schedule_count()

    def _schedule_count(self) -> None:
        """Count the pending requests soon, on the loop, outside any request's handler."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (offline use): count now
            self._count_safely()
            return
        self._count_scheduled = True
        loop.call_soon(self._count_safely)

    def _count_safely(self) -> None:
        self._count_scheduled = False
        try:
            self.count_pending()
        except Exception:
            self.errors += 1
            log.exception("counting pending statistics failed; the pending requests are dropped")
            self._drop_pending()

    def _drop_pending(self) -> None:
        for arrays in self._inputs.values():
            arrays.clear()
        for pending in (self._labels, self._probabilities, self._ids, self._times):
            pending.clear()
        self._sampled.clear()

    def _keep_record(self, now: float) -> bool:
        """Sampled at ``record_rate``, and at most ``record_max_per_second`` a second."""
        if self._record_rate < 1.0 and random.random() >= self._record_rate:
            return False
        if self._record_cap <= 0:
            return True
        second = int(now)
        if second != self._record_second:
            self._record_second, self._recorded_this_second = second, 0
        if self._recorded_this_second >= self._record_cap:
            return False
        self._recorded_this_second += 1
        return True

    # -- bulk counting ----------------------------------------------------------------

    def count_pending(self) -> None:
        counts = self.counts
        parts, self._labels = self._labels, []
        if not parts:
            return
        sizes = [len(p) for p in parts]
        columns = {name: np.concatenate(arrays) for name, arrays in self._inputs.items()}
        for arrays in self._inputs.values():
            arrays.clear()
        labels = np.concatenate([np.asarray(p) for p in parts])
        counts.rows += len(labels)
        for index, feature in enumerate(self.features):
            self._count_feature(index, feature, columns[feature.input])
        self._count_predictions(labels)
        self._keep_records(sizes, columns, labels)

    def _count_feature(self, index: int, feature: _Feature, matrix: np.ndarray) -> None:
        values = matrix[:, feature.column] if matrix.ndim == 2 else matrix
        counts = self.counts
        if feature.numeric:
            assert feature.edges is not None
            x = values.astype(np.float64, copy=False)
            finite = np.isfinite(x)
            nan = int(np.isnan(x).sum())
            counts.nan[index] += nan
            counts.inf[index] += len(x) - int(finite.sum()) - nan
            bins = np.searchsorted(feature.edges, x[finite], side="right")
            hist = np.bincount(bins, minlength=feature.bins)
            counts.features[index] += hist
            counts.out_of_range[index] += int(hist[0] + hist[-1])
        else:
            assert feature.lookup is not None
            text = values.astype(str)
            missing = (text == "") | (text == "None") | (text == "nan")
            counts.nan[index] += int(missing.sum())
            bins = feature.lookup(text[~missing])
            hist = np.bincount(bins, minlength=feature.bins)
            counts.features[index] += hist
            counts.out_of_range[index] += int(hist[-1])

    def _count_predictions(self, labels: np.ndarray) -> None:
        if self.prediction_bins == 0:
            return
        flat = labels.reshape(len(labels), -1)[:, 0] if labels.ndim > 1 else labels
        if self._prediction_numeric:
            x = flat.astype(np.float64)
            bins = np.searchsorted(self._prediction_edges, x[np.isfinite(x)], side="right")
        else:
            bins = self._prediction_lookup(flat)
        self.counts.predictions += np.bincount(bins, minlength=self.prediction_bins)

    def _keep_records(
        self, sizes: list[int], columns: Mapping[str, np.ndarray], labels: np.ndarray
    ) -> None:
        """Turn the sampled requests' rows into records, in bulk (one ``tolist`` per array)."""
        ids, self._ids = self._ids, []
        times, self._times = self._times, []
        sampled, self._sampled = self._sampled, []
        probability_parts, self._probabilities = self._probabilities, []
        rows, row_ids, row_times = self._sampled_rows(sizes, ids, times, sampled)
        if not rows:
            return
        index = np.asarray(rows)
        numeric = self._matrix(columns, index, numeric=True)
        categorical = self._matrix(columns, index, numeric=False)
        probabilities: list[list[float]] = [[] for _ in rows]
        if probability_parts:
            probs = np.concatenate(probability_parts)
            probabilities = probs[index].reshape(len(rows), -1).tolist()
        flat = labels.reshape(len(labels), -1)[:, 0] if labels.ndim > 1 else labels
        for values in zip(
            row_ids, row_times, numeric, categorical, flat[index].tolist(), probabilities,
            strict=True,
        ):  # fmt: skip
            self.records.append(PredictionRecord(*values))

    def _sampled_rows(
        self, sizes: list[int], ids: list[str], times: list[float], sampled: list[bool]
    ) -> tuple[list[int], list[str], list[float]]:
        rows: list[int] = []
        row_ids: list[str] = []
        row_times: list[float] = []
        offset = 0
        room = self._max_records - len(self.records)
        for n, request_id, when, keep in zip(sizes, ids, times, sampled, strict=False):
            if keep and n > room:
                self.dropped_records += n
            elif keep:
                room -= n
                rows.extend(range(offset, offset + n))
                row_ids.extend([request_id] if n == 1 else [f"{request_id}:{r}" for r in range(n)])
                row_times.extend([when] * n)
            offset += n
        return rows, row_ids, row_times

    def _matrix(
        self, columns: Mapping[str, np.ndarray], index: np.ndarray, numeric: bool
    ) -> list[Any]:
        """Rows (as lists) of the numeric or the categorical features, in profile order."""
        chosen = [f for f in self.features if f.numeric == numeric]
        if not chosen:
            return [() for _ in index]
        parts = []
        for feature in chosen:
            matrix = columns[feature.input]
            part = matrix[index, feature.column] if matrix.ndim == 2 else matrix[index]
            parts.append(part.astype(np.float64) if numeric else part.astype(str))
        rows: list[Any] = np.stack(parts, axis=1).tolist()
        return rows

    def take(self) -> tuple[VersionCounts, list[PredictionRecord]]:
        """Count what is pending and hand over the delta and records since the last take."""
        self.count_pending()
        counts, self.counts = self.counts, self._empty()
        self._reported = self._reported.advance(self.record, counts)
        records, self.records = self.records, []
        return counts, records

"""What the monitor ingests: the checks a report or a label batch passes before the store.

A report is refused whole with ``InvalidInput`` (INVALID_ARGUMENT) when any part of it is
malformed, so nothing of it reaches the store; the message names the field
(``versions[0].features[2].counts``) and what was expected, and quotes client strings cut to
a short prefix. Sizes are checked before any per-element work, and the converter in
``monitor.servicer`` bounds the number of objects it builds (``bounded``) before building them.

A report:
- ``instance_id`` of 1 to ``INSTANCE_ID_LENGTH`` bytes without NUL, ``sequence`` >= 1, times
  (window start, send time, record times) between 2000-01-01 and a day past the monitor's clock;
- each version entry: a model name by the repository's rules and a version >= 1 that is in the
  monitor's repository, once per report; requests, errors, rows and every count in [0, 2**53),
  errors <= requests; a latency histogram of positive, finite, increasing bounds (at most
  ``MAX_LATENCY_BOUNDS``, none above ``MAX_LATENCY_BOUND``) with one count more than bounds, or
  none; features either none or exactly those of the version's reference profile, each once,
  each with as many counts as its profile entry has bins; prediction counts none or the profile's
  prediction bins;
- each record: a request id of 1 to ``REQUEST_ID_LENGTH`` bytes without NUL, a known model
  version, as many numeric and categorical values as its profile has numeric and categorical
  features (or none at all: a gateway counts no feature its model's inputs do not carry),
  strings of at most ``MAX_STRING_BYTES``, at most ``MAX_BINS`` probabilities;
- all counts of the report together below 2**53, so that neither one report nor a sum of a
  thousand of them overflows a BIGINT column or loses precision as a float.

A report's window may start hours or days ago: a gateway holds its counts by the bucket they
were observed in while the monitor is away (a day of buckets by default) and then sends each
with its own ``window_start``, which the store files them under. Counts older than the
counts retention (``--counts-retention``) are taken too rather than refused (a refusal would
set aside the records riding with them): the next prune deletes them, with the report's id,
like any counts of that age; until then a window reaching that far back (or the total)
includes them.

A label batch: at most ``MAX_LABELS`` labels, each with a request id as above, a model name
by the repository's rules or none, a value (a string of at most ``MAX_STRING_BYTES``, an
integer, or a finite double) and a sane time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from driftgate.core.errors import InvalidInput, ModelNotFound, quote
from driftgate.core.profile import Bins, NumericBins, ReferenceProfile
from driftgate.core.repository import MODEL_NAME_PATTERN, validate_model_name
from driftgate.monitor.store import (
    INSTANCE_ID_LENGTH,
    NAME_LENGTH,
    REQUEST_ID_LENGTH,
    Distribution,
    LabelIn,
    PredictionIn,
    Report,
    VersionCounts,
)

__all__ = [
    "MAX_BINS",
    "MAX_COUNT",
    "MAX_DISTRIBUTIONS",
    "MAX_LABELS",
    "MAX_LATENCY_BOUND",
    "MAX_LATENCY_BOUNDS",
    "MAX_RECORDS",
    "MAX_STRING_BYTES",
    "MAX_VERSIONS",
    "Profiles",
    "bounded",
    "check_labels",
    "check_model_name",
    "check_report",
]

MAX_COUNT = 2**53
"""Every count, and the sum of all counts of one report, is below this."""
MAX_VERSIONS = 1024
"""Version entries in one report."""
MAX_DISTRIBUTIONS = 100_000
"""Feature and prediction distributions in one report, over all its versions."""
MAX_BINS = 100_000
"""Counts of one distribution, and probabilities of one prediction."""
MAX_LATENCY_BOUNDS = 256
"""Upper bounds of one latency histogram."""
MAX_LATENCY_BOUND = 1e6
"""Largest latency bucket bound, seconds (the store keeps the overflow bucket at 1e300)."""
MAX_RECORDS = 10_000
"""Prediction records in one report (a gateway sends 250 by default)."""
MAX_STRING_BYTES = 4096
"""A categorical value, a string prediction or a string label, UTF-8 bytes."""
MAX_LABELS = 10_000
"""Labels in one SendLabels call (a gateway forwards 5000 at a time)."""
EARLIEST = 946_684_800.0
"""2000-01-01T00:00:00Z: no driftgate timestamp is older."""
CLOCK_SKEW = 86_400.0
"""How far past the monitor's clock a gateway's timestamps may be."""

Profiles = Callable[[str, int], ReferenceProfile | None]
"""The reference profile of a model version, None when it has none; raises ModelNotFound
when the version is not in the repository."""


def bounded(where: str, size: int, limit: int) -> None:
    """Refuse a repeated field of more than ``limit`` entries, before reading them."""
    if size > limit:
        raise InvalidInput(f"{where}: {size} entries, expected at most {limit}")


def check_model_name(where: str, model: str) -> None:
    """Refuse a model name the repository would refuse (quoting it short)."""
    try:
        validate_model_name(model)
    except InvalidInput:
        raise InvalidInput(
            f"{where}: invalid model name {quote(model)}: expected {MODEL_NAME_PATTERN}"
        ) from None


def check_report(report: Report, sent_time: float | None, profiles: Profiles, now: float) -> None:
    """Raise InvalidInput naming the first thing in ``report`` the monitor must not store."""
    _identifier("instance_id", report.instance_id, INSTANCE_ID_LENGTH)
    if report.sequence < 1:
        raise InvalidInput(f"sequence: {report.sequence}, expected a sequence >= 1")
    _time("window_start", report.time, now)
    if sent_time is not None:
        _time("sent_time", sent_time, now)
    bounded("versions", len(report.versions), MAX_VERSIONS)
    bounded("records", len(report.records), MAX_RECORDS)
    known = _Known(profiles)
    seen: set[tuple[str, int]] = set()
    total = 0
    for i, counts in enumerate(report.versions):
        where = f"versions[{i}]"
        profile = known.profile(where, counts.model, counts.version)
        if (counts.model, counts.version) in seen:
            raise InvalidInput(
                f"{where}: model {counts.model} version {counts.version} appears twice; "
                "expected one entry per version"
            )
        seen.add((counts.model, counts.version))
        total += _version_counts(where, counts, profile)
    if total >= MAX_COUNT:
        raise InvalidInput(f"versions: the counts add up to {total}, expected less than 2**53")
    for j, record in enumerate(report.records):
        _record(f"records[{j}]", record, known, now)


def check_labels(labels: Sequence[LabelIn], now: float) -> None:
    """Raise InvalidInput naming the first label of a batch the monitor must not store."""
    bounded("labels", len(labels), MAX_LABELS)
    for i, label in enumerate(labels):
        where = f"labels[{i}]"
        _identifier(f"{where}.request_id", label.request_id, REQUEST_ID_LENGTH)
        if label.model:  # optional; without it the request id must name one model's record
            check_model_name(f"{where}.model", label.model)
        value = label.value
        if isinstance(value, str):
            _text(f"{where}.string_value", value, MAX_STRING_BYTES)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{where}.double_value: {value}, expected a finite number")
        _time(f"{where}.time", label.time, now)


@dataclass
class _Known:
    """Profiles looked up once per report (a report may hold thousands of records)."""

    lookup: Profiles
    found: dict[tuple[str, int], ReferenceProfile | None] = field(default_factory=dict)

    def profile(self, where: str, model: str, version: int) -> ReferenceProfile | None:
        check_model_name(f"{where}.model", model)
        if version < 1:
            raise InvalidInput(f"{where}.version: {version}, expected a version >= 1")
        key = (model, version)
        if key not in self.found:
            try:
                self.found[key] = self.lookup(model, version)
            except ModelNotFound:
                raise InvalidInput(
                    f"{where}: model {model} has no version {version} in the monitor's repository"
                ) from None
        return self.found[key]


def _version_counts(where: str, v: VersionCounts, profile: ReferenceProfile | None) -> int:
    """Check one version entry; the sum of its counts."""
    total = _count(f"{where}.requests", v.requests) + _count(f"{where}.rows", v.rows)
    total += _count(f"{where}.errors", v.errors)
    if v.errors > v.requests:
        raise InvalidInput(
            f"{where}.errors: {v.errors}, expected at most the {v.requests} requests"
        )
    total += _latency(f"{where}.latency", v)
    total += _features(where, [d for d in v.distributions if not d.prediction], v, profile)
    for d in (d for d in v.distributions if d.prediction):
        _text(f"{where}.predictions.name", d.name, NAME_LENGTH, nul=False)
        bins = 0 if profile is None or profile.prediction is None else _bins(profile.prediction)
        if len(d.counts) not in (0, bins):
            raise InvalidInput(
                f"{where}.predictions.counts: {len(d.counts)} counts, expected none or the "
                f"{bins} prediction bins of {_of(v)}"
            )
        total += _distribution(f"{where}.predictions", d)
    return total


def _features(
    where: str, features: list[Distribution], v: VersionCounts, profile: ReferenceProfile | None
) -> int:
    """Check the feature distributions: none, or each of the profile's once, on its bins."""
    if not features:
        return 0
    if profile is None:
        raise InvalidInput(
            f"{where}.features: {len(features)} features, expected none: model {v.model} "
            f"version {v.version} has no reference profile"
        )
    expected = {f.name: _bins(f.bins) for f in profile.features}
    if len(features) > len(expected):
        raise InvalidInput(
            f"{where}.features: {len(features)} features, expected none or the "
            f"{len(expected)} of {_of(v)}"
        )
    total = 0
    for j, d in enumerate(features):
        at = f"{where}.features[{j}]"
        bins = expected.pop(d.name, None)
        if bins is None:
            raise InvalidInput(
                f"{at}.name: {quote(d.name)} is not a feature of {_of(v)}, or appears twice"
            )
        if len(d.counts) != bins:
            raise InvalidInput(
                f"{at}.counts: {len(d.counts)} counts, expected {bins}: the bins of "
                f"{d.name!r} in {_of(v)}"
            )
        total += _distribution(at, d)
    if expected:  # fewer features than the profile: name the first ones missing
        missing = ", ".join(repr(name) for name in list(expected)[:3])
        raise InvalidInput(
            f"{where}.features: {len(features)} features, expected none or all "
            f"{len(features) + len(expected)} of {_of(v)}; missing {missing}"
        )
    return total


def _distribution(where: str, d: Distribution) -> int:
    """Check the counts of one distribution; their sum."""
    total = _counts(f"{where}.counts", d.counts)
    total += _count(f"{where}.nan_count", d.nan_count)
    total += _count(f"{where}.inf_count", d.inf_count)
    return total + _count(f"{where}.out_of_range_count", d.out_of_range_count)


def _latency(where: str, v: VersionCounts) -> int:
    bounds, counts = v.latency_bounds, v.latency_counts
    bounded(f"{where}.upper_bounds_seconds", len(bounds), MAX_LATENCY_BOUNDS)
    if (bounds or counts) and len(counts) != len(bounds) + 1:
        raise InvalidInput(
            f"{where}.counts: {len(counts)} counts for {len(bounds)} bounds, expected "
            f"{len(bounds) + 1} (one per bound and one above the largest)"
        )
    previous = 0.0
    for k, bound in enumerate(bounds):
        if not previous < bound <= MAX_LATENCY_BOUND:  # also refuses NaN
            raise InvalidInput(
                f"{where}.upper_bounds_seconds[{k}]: {bound}, expected bounds increasing "
                f"from above 0 to at most {MAX_LATENCY_BOUND:g} s"
            )
        previous = bound
    if not 0.0 <= v.latency_sum < math.inf:
        raise InvalidInput(f"{where}.sum_seconds: {v.latency_sum}, expected a finite sum >= 0")
    return _counts(f"{where}.counts", counts)


def _record(where: str, r: PredictionIn, known: _Known, now: float) -> None:
    _identifier(f"{where}.request_id", r.request_id, REQUEST_ID_LENGTH)
    profile = known.profile(where, r.model, r.version)
    # Measures derived from a text column are counted, never carried in a record.
    features = tuple(f for f in profile.features if f.derived is None) if profile else ()
    _texts(f"{where}.categorical_values", r.categorical, MAX_STRING_BYTES)
    if isinstance(r.value, str):
        _text(f"{where}.prediction.string_value", r.value, MAX_STRING_BYTES)
    bounded(f"{where}.prediction.probabilities", len(r.probabilities), MAX_BINS)
    _time(f"{where}.time", r.time, now)
    numeric = sum(isinstance(f.bins, NumericBins) for f in features)
    # A gateway whose model inputs carry none of the profile's features sends rows of none.
    if r.numeric or r.categorical:
        for name, values, expected in (
            ("numeric_values", r.numeric, numeric),
            ("categorical_values", r.categorical, len(features) - numeric),
        ):
            if len(values) != expected:
                raise InvalidInput(
                    f"{where}.{name}: {len(values)} values, expected {expected} (the "
                    f"{name.split('_')[0]} features of model {r.model} version {r.version})"
                )


def _counts(where: str, counts: Sequence[int]) -> int:
    """Check every count of ``counts`` (C loops, no per-element Python); their sum."""
    if not counts:
        return 0
    low, high = min(counts), max(counts)
    if low < 0 or high >= MAX_COUNT:
        bad = low if low < 0 else high
        raise InvalidInput(f"{where}: a count of {bad}, expected counts in [0, 2**53)")
    return sum(counts)


def _count(where: str, value: int) -> int:
    if not 0 <= value < MAX_COUNT:
        raise InvalidInput(f"{where}: {value}, expected a count in [0, 2**53)")
    return value


def _identifier(where: str, value: str, limit: int) -> None:
    """A request or instance id: not empty, at most ``limit`` UTF-8 bytes, no NUL."""
    if not value:
        raise InvalidInput(f"{where} is empty")
    _text(where, value, limit, nul=False)


def _texts(where: str, values: Sequence[str], limit: int) -> None:
    """``_text`` of each value; one C loop when none is long enough to matter."""
    if max(map(len, values), default=0) * 4 <= limit:  # UTF-8 takes at most 4 bytes a character
        return
    for k, value in enumerate(values):
        _text(f"{where}[{k}]", value, limit)


def _text(where: str, value: str, limit: int, *, nul: bool = True) -> None:
    """At most ``limit`` UTF-8 bytes; NUL (which PostgreSQL refuses in text) only if ``nul``."""
    # The character count first: encoding a huge string to measure it would cost its size.
    if len(value) > limit or len(value.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidInput(f"{where}: {quote(value)} is longer than {limit} bytes")
    if not nul and "\x00" in value:
        raise InvalidInput(f"{where}: {quote(value)} contains NUL")


def _time(where: str, seconds: float, now: float) -> None:
    if not EARLIEST <= seconds <= now + CLOCK_SKEW:
        raise InvalidInput(
            f"{where}: {seconds:.0f} s since the epoch, expected a time between 2000-01-01 "
            "and a day past the monitor's clock"
        )


def _bins(bins: Bins) -> int:
    """Bins a gateway counts into: numeric, one more than the edges; categorical, one per
    category and "other" (``gateway.statistics`` sizes its counts the same way)."""
    if isinstance(bins, NumericBins):
        return len(bins.edges) + 1
    return len(bins.categories) + 1


def _of(v: VersionCounts) -> str:
    return f"the reference profile of model {v.model} version {v.version}"

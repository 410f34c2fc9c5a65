"""The per-model policy file ``<repository>/<model>/policy.toml``: parsing, validation, defaults.

Every key is optional; a missing file means every default. Durations are seconds (a
number) or a string with a unit (``"30s"``, ``"15m"``, ``"1h"``, ``"7d"``). A bad value is
refused with ``PolicyError`` naming the file, the key and what was expected, for example
``models/churn/policy.toml: canary.steps: expected percentages in increasing order, each
above 0 and below 100, got [10, 200]``. Unknown keys are refused too (a typo would otherwise
silently keep a default).

```toml
[drift]
interval = "60s"          # how often the policy looks for a window that has ended
window = "1h"             # consecutive, non-overlapping windows of this length are tested
min_rows = 100            # fewer rows: insufficient data, never an alarm
false_alarms = 0.5        # expected false alarm events per 30 days of undrifted traffic
dataset_share = 0.0       # dataset drift when the share of drifted features is above this

[canary]
enabled = true            # analyse canaries automatically (false: operators promote by hand)
interval = "60s"          # time between looks; the canary moves at most one step per look
steps = [10, 25, 50]      # canary weights; every required check passed at the last one promotes
deadline = "30m"          # longest analysis; undecided by then: rollback, "insufficient evidence"
# required = ["errors", "latency", "accuracy"]  # checks that must pass (any of errors,
                          # latency, accuracy, predictions); unset: errors and latency, plus
                          # accuracy when the stable version received labels in the day before
                          # the canary began. The others can only roll back.
false_promotion = 0.01    # chance a canary worse than a required check's margin is promoted
false_rollback = 0.0025   # chance per check that a canary no worse than the stable fails it
min_requests = 100        # canary and stable requests before errors and latency are tested
# failure_threshold       # no longer read (the sequential tests replace failed rounds);
                          # accepted so that older policy files load

[canary.checks]
max_error_rate_increase = 0.01   # margin: canary error rate minus the stable's
max_latency_p99_ratio = 1.5      # margin: canary latency / stable latency ...
latency_p99_slack_ms = 5.0       # ... plus this slack, so tiny latencies do not flap
max_accuracy_drop = 0.05         # margin: stable accuracy minus canary accuracy (classifiers)
max_mae_ratio = 1.1              # margin: canary MAE / stable MAE (regressors)
min_labels = 50                  # joined labels per version before accuracy is tested
max_prediction_drift = 0.2       # floor: JS distance of the predictions on the stable's bins
min_prediction_rows = 100        # rows per version before the predictions are tested

[retrain]
enabled = true            # retrain on the triggers below
schedule = ""             # cron expression (minute hour day month day_of_week); "" none
drift_evaluations = 2     # consecutive drifted windows that trigger a retrain
accuracy_drop = 0.1       # holdout accuracy (model.json) minus production accuracy
min_labels = 100          # labels in the drift window for the accuracy trigger
window = "7d"             # labelled production rows of this window join the training data
min_rows = 50             # labelled production rows needed to retrain at all
holdout_fraction = 0.25   # newest share of them, kept out: both versions predict these rows
reference_min_rows = 1000 # the new version's drift reference is the production rows it was
                          # trained on (the rest, before the holdout) when at least this many,
                          # so a shift that persists does not alarm again; fewer: the whole
                          # training table (see monitor.retrain)
tolerance = 0.02          # non-inferiority margin: accuracy points (classifiers), or a share
                          # of the stable's MAE (regressors), the candidate may be worse by
false_accept = 0.05       # chance a candidate worse by the tolerance is accepted (test level)
power = 0.8               # chance an equally good candidate is accepted, given the holdout
                          # rows the power calculation asks for (fewer: "insufficient evidence")
trainer = ""              # "module:function(table) -> fitted estimator"; "" clones the stable
timeout = "10m"           # the training subprocess is killed after this
cooldown = "1h"           # no automatic retrain this soon after the last one
```

The canary judge (``monitor.canary``): at every look the figures of both versions since the
analysis began are tested, each check by a one-sided non-inferiority test with its margin
above (pass) and a one-sided test of the canary being worse than the stable (fail); each
test's level is spread evenly over the ``deadline / interval`` planned looks. A failed check
rolls back at once; promotion needs every required check passed, at the last step. At the
defaults (benchmarks/canary_judge.py): an identical canary is rolled back in at most 2% of
analyses and promoted within 15 minutes at 20 requests/s; a canary 10 points less accurate is
promoted in at most 1%.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from driftgate.core.errors import InvalidInput

__all__ = [
    "ALARM_PERIOD",
    "CHECK_NAMES",
    "POLICY_FILE",
    "CanaryChecks",
    "CanaryPolicy",
    "DriftPolicy",
    "Policy",
    "PolicyError",
    "RetrainPolicy",
    "load_policy",
    "parse_duration",
    "parse_policy",
]

POLICY_FILE = "policy.toml"

CHECK_NAMES: tuple[str, ...] = ("errors", "latency", "accuracy", "predictions")
"""The canary checks, as ``canary.required`` names them."""

ALARM_PERIOD = 30 * 86400.0
"""The period ``drift.false_alarms`` counts over: 30 days."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class PolicyError(InvalidInput):
    """A policy file that cannot be used; the message names the key and what was expected."""


def parse_duration(text: str) -> float:
    """``90``, ``"30s"``, ``"15m"``, ``"1h"``, ``"7d"`` -> seconds; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class DriftPolicy:
    """When and how the stable version's inputs are checked for drift."""

    interval: float = 60.0  # seconds between looks for a window that has ended
    window: float = 3600.0  # length of the consecutive windows that are tested
    min_rows: int = 100  # fewer rows is insufficient data
    false_alarms: float = 0.5  # expected false alarm events per 30 days, no drift
    dataset_share: float = 0.0  # dataset drift above this share of drifted features

    @property
    def alpha(self) -> float:
        """False-alarm rate of one window: ``false_alarms`` spread over the windows of 30
        days (a one-hour window: 0.5 / 720 = 6.9e-4). Windows do not overlap, so their
        tests are independent and alarms over 30 days number ``false_alarms`` on average."""
        return min(self.false_alarms * self.window / ALARM_PERIOD, 0.5)


@dataclass(frozen=True)
class CanaryChecks:
    """Margins (non-inferiority) and minimum sample sizes of the canary's checks."""

    max_error_rate_increase: float = 0.01  # canary error rate minus the stable's
    max_latency_p99_ratio: float = 1.5  # canary latency / stable latency ...
    latency_p99_slack_ms: float = 5.0  # ... plus this slack
    max_accuracy_drop: float = 0.05  # stable accuracy minus canary accuracy (classifiers)
    max_mae_ratio: float = 1.1  # canary MAE / stable MAE (regressors)
    min_labels: int = 50  # joined labels per version before accuracy is tested
    max_prediction_drift: float = 0.2  # JS distance floor of the predictions check
    min_prediction_rows: int = 100  # prediction rows per version before it is tested


@dataclass(frozen=True)
class CanaryPolicy:
    """Automated canary analysis: Flagger's shape (interval, steps, deadline), a sequential
    statistical judge inside (``monitor.canary``)."""

    enabled: bool = True
    interval: float = 60.0  # seconds between looks
    steps: tuple[float, ...] = (10.0, 25.0, 50.0)  # canary weights, then promote
    deadline: float = 1800.0  # seconds an analysis may run before it is rolled back
    required: tuple[str, ...] | None = None  # None: errors, latency (+ accuracy with labels)
    false_promotion: float = 0.01  # per required check, a canary worse than its margin
    false_rollback: float = 0.0025  # per check, a canary no worse than the stable
    min_requests: int = 100  # requests per version before errors and latency are tested
    failure_threshold: int = 2  # no longer read; accepted so that older files load
    checks: CanaryChecks = field(default_factory=CanaryChecks)


@dataclass(frozen=True)
class RetrainPolicy:
    """Triggers, data and acceptance of retraining."""

    enabled: bool = True
    schedule: str = ""  # cron expression; "" for none
    drift_evaluations: int = 2  # consecutive drifted windows that trigger
    accuracy_drop: float = 0.1  # drop below the holdout accuracy that triggers
    min_labels: int = 100  # labels needed for the accuracy trigger
    window: float = 7 * 86400.0  # labelled production rows of this window are used
    min_rows: int = 50  # labelled production rows needed to retrain
    holdout_fraction: float = 0.25  # newest share of them kept for the comparison
    reference_min_rows: int = 1000  # production training rows for a reference of their own
    tolerance: float = 0.02  # non-inferiority margin (see monitor.retrain_judge)
    false_accept: float = 0.05  # level of the judge's test
    power: float = 0.8  # power the holdout's size is calculated for
    trainer: str = ""  # "module:function"; "" clones the stable's estimator
    timeout: float = 600.0  # seconds before the training subprocess is killed
    cooldown: float = 3600.0  # seconds between automatic retrains


@dataclass(frozen=True)
class Policy:
    """The whole policy of one model."""

    drift: DriftPolicy = field(default_factory=DriftPolicy)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    retrain: RetrainPolicy = field(default_factory=RetrainPolicy)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for event figures and ``--json``)."""
        from dataclasses import asdict

        return asdict(self)


def load_policy(repository: Path, model: str) -> Policy:
    """The policy of ``model`` in ``repository``: its policy.toml, or every default."""
    path = Path(repository) / model / POLICY_FILE
    if not path.is_file():
        return Policy()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    return parse_policy(data, str(path))


def parse_policy(data: dict[str, Any], source: str = POLICY_FILE) -> Policy:
    """Validate the parsed TOML ``data``; ``source`` prefixes the error messages."""
    reader = _Reader(source)
    reader.only(data, "", {"drift", "canary", "retrain"})
    drift = reader.table(data, "drift")
    canary = reader.table(data, "canary")
    retrain = reader.table(data, "retrain")
    checks = reader.table(canary, "checks", "canary.")
    return Policy(
        drift=reader.build(DriftPolicy, drift, "drift."),
        canary=reader.build(
            CanaryPolicy,
            canary,
            "canary.",
            {"checks": reader.build(CanaryChecks, checks, "canary.checks.")},
        ),  # fmt: skip
        retrain=reader.build(RetrainPolicy, retrain, "retrain."),
    )


# What each key must be: (kind, lower bound, upper bound, inclusive lower).
_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "drift.interval": ("duration", 0.0, float("inf"), False),
    "drift.window": ("duration", 0.0, float("inf"), False),
    "drift.min_rows": ("int", 1, float("inf"), True),
    "drift.false_alarms": ("float", 0.0, 1000.0, False),
    "drift.dataset_share": ("float", 0.0, 1.0, True),
    "canary.enabled": ("bool", 0, 0, True),
    "canary.interval": ("duration", 0.0, float("inf"), False),
    "canary.steps": ("steps", 0, 0, True),
    "canary.failure_threshold": ("int", 1, float("inf"), True),
    "canary.deadline": ("duration", 0.0, float("inf"), False),
    "canary.min_requests": ("int", 1, float("inf"), True),
    "canary.required": ("checks", 0, 0, True),
    "canary.false_promotion": ("float", 0.0, 0.5, False),
    "canary.false_rollback": ("float", 0.0, 0.5, False),
    "canary.checks.max_error_rate_increase": ("float", 0.0, 1.0, True),
    "canary.checks.max_latency_p99_ratio": ("float", 1.0, float("inf"), True),
    "canary.checks.latency_p99_slack_ms": ("float", 0.0, float("inf"), True),
    "canary.checks.max_accuracy_drop": ("float", 0.0, 1.0, True),
    "canary.checks.max_mae_ratio": ("float", 1.0, float("inf"), True),
    "canary.checks.min_labels": ("int", 1, float("inf"), True),
    "canary.checks.max_prediction_drift": ("float", 0.0, 1.0, True),
    "canary.checks.min_prediction_rows": ("int", 1, float("inf"), True),
    "retrain.enabled": ("bool", 0, 0, True),
    "retrain.schedule": ("cron", 0, 0, True),
    "retrain.drift_evaluations": ("int", 1, float("inf"), True),
    "retrain.accuracy_drop": ("float", 0.0, 1.0, False),
    "retrain.min_labels": ("int", 1, float("inf"), True),
    "retrain.window": ("duration", 0.0, float("inf"), False),
    "retrain.min_rows": ("int", 1, float("inf"), True),
    "retrain.holdout_fraction": ("float", 0.0, 1.0, False),
    "retrain.reference_min_rows": ("int", 1, float("inf"), True),
    "retrain.tolerance": ("float", 0.0, 1.0, True),
    "retrain.false_accept": ("float", 0.0, 0.5, False),
    "retrain.power": ("float", 0.5, 0.999, True),
    "retrain.trainer": ("entry", 0, 0, True),
    "retrain.timeout": ("duration", 0.0, float("inf"), False),
    "retrain.cooldown": ("duration", 0.0, float("inf"), True),
}

_REPLACED = {
    "drift.alpha": "set drift.false_alarms instead, the expected false alarm events per 30 "
    "days (each window's level follows from it and drift.window)",
}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: Any) -> PolicyError:
        return PolicyError(f"{self.source}: {key}: expected {expected}, got {got!r}")

    def only(self, data: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in data:
            if prefix + key in _REPLACED:
                raise PolicyError(
                    f"{self.source}: {prefix}{key} is no longer read; {_REPLACED[prefix + key]}"
                )
            if key not in allowed:
                raise PolicyError(
                    f"{self.source}: unknown key {prefix}{key}; "
                    f"known keys here: {', '.join(sorted(allowed))}"
                )

    def table(self, data: dict[str, Any], name: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(prefix + name, "a table", value)
        return value

    def build(
        self, cls: Any, data: dict[str, Any], prefix: str, extra: dict[str, Any] | None = None
    ) -> Any:
        extra = extra or {}
        names = {f.name for f in fields(cls)}
        self.only(data, prefix, names)
        values = {
            name: self.value(prefix + name, raw) for name, raw in data.items() if name not in extra
        }
        return cls(**values, **extra)

    def value(self, key: str, raw: Any) -> Any:
        kind, low, high, inclusive = _RANGES[key]
        if kind == "bool":
            if not isinstance(raw, bool):
                raise self.fail(key, "true or false", raw)
            return raw
        if kind == "steps":
            return self.steps(key, raw)
        if kind == "checks":
            return self.checks(key, raw)
        if kind == "cron":
            return self.cron(key, raw)
        if kind == "entry":
            if not isinstance(raw, str) or (raw and not _ENTRY_POINT.match(raw)):
                raise self.fail(key, '"module:function" (or "" for a clone of the stable)', raw)
            return raw
        if kind == "duration":
            number = self.duration(key, raw)
        elif kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise self.fail(key, "an integer", raw)
            number = raw
        else:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise self.fail(key, "a number", raw)
            number = float(raw)
        above = number >= low if inclusive else number > low
        if not above or number > high:
            bound = f"{'>=' if inclusive else '>'} {low:g}"
            if high != float("inf"):
                bound += f" and <= {high:g}"
            raise self.fail(key, f"a value {bound}", raw)
        return number

    def duration(self, key: str, raw: Any) -> float:
        if isinstance(raw, bool):
            raise self.fail(key, 'a duration such as 30, "30s", "15m", "1h" or "7d"', raw)
        if isinstance(raw, int | float):
            return float(raw)
        if isinstance(raw, str):
            try:
                return parse_duration(raw)
            except ValueError:
                pass
        raise self.fail(key, 'a duration such as 30, "30s", "15m", "1h" or "7d"', raw)

    def steps(self, key: str, raw: Any) -> tuple[float, ...]:
        expected = "a non-empty list of percentages in increasing order, each above 0 and below 100"
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, expected, raw)
        if any(isinstance(s, bool) or not isinstance(s, int | float) for s in raw):
            raise self.fail(key, expected, raw)
        steps = tuple(float(s) for s in raw)
        increasing = all(a < b for a, b in zip(steps, steps[1:], strict=False))
        if not increasing or steps[0] <= 0 or steps[-1] >= 100:
            raise self.fail(key, expected, raw)
        return steps

    def checks(self, key: str, raw: Any) -> tuple[str, ...]:
        expected = f"a list of distinct check names among {', '.join(CHECK_NAMES)}"
        if not isinstance(raw, list) or any(c not in CHECK_NAMES for c in raw):
            raise self.fail(key, expected, raw)
        if len(set(raw)) != len(raw):
            raise self.fail(key, expected, raw)
        return tuple(str(c) for c in raw)

    def cron(self, key: str, raw: Any) -> str:
        expected = 'a cron expression of 5 fields such as "0 3 * * *", or ""'
        if not isinstance(raw, str):
            raise self.fail(key, expected, raw)
        if not raw.strip():
            return ""
        try:
            cron_trigger(raw)
        except ValueError as exc:
            raise self.fail(key, f"{expected} ({exc})", raw) from None
        return raw.strip()


def cron_trigger(expression: str) -> Any:
    """The APScheduler CronTrigger of a 5-field cron expression (UTC)."""
    from apscheduler.triggers.cron import CronTrigger

    parts = expression.split()
    if len(parts) != len(_CRON_FIELDS):
        raise ValueError(f"{len(parts)} fields instead of 5")
    return CronTrigger(**dict(zip(_CRON_FIELDS, parts, strict=True)), timezone="UTC")

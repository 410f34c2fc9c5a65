"""Canary analysis: the decision of one round as a pure function of figures.

An analysis begins when a canary appears (``begin``: its weight goes to the first step) and
then, every ``interval`` seconds, ``analyse`` compares the canary with the stable version on
the figures of the round (requests, errors, latency p99, labelled accuracy, prediction
distributions) and decides:

- ``wait``: the round is not over yet;
- ``hold``: not enough canary requests yet; the round goes on collecting data, and when it
  has waited longer than ``deadline`` the decision is ``rollback`` with that reason;
- a failed check counts one failure; at ``failure_threshold`` failures ``rollback``, before
  that ``retry`` (a new round at the same step);
- every check passed: ``step`` to the next weight, or ``promote`` after the last step.

A check that lacks data (fewer labels than ``min_labels``, fewer prediction rows than
``min_prediction_rows``, no latency observations) is skipped and says so; it neither passes
nor fails the round. The state is a plain dataclass the caller stores after every decision,
so an analysis survives a restart of the monitor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from driftgate.monitor.policy import CanaryPolicy

__all__ = [
    "AnalysisState",
    "CanaryFigures",
    "CheckResult",
    "Decision",
    "VersionFigures",
    "analyse",
    "begin",
]

Action = Literal["start", "wait", "hold", "retry", "step", "promote", "rollback"]


@dataclass(frozen=True)
class VersionFigures:
    """One version's figures over the round."""

    requests: int = 0
    errors: int = 0
    latency_p99: float | None = None  # seconds; None without observations
    labels: int = 0
    accuracy: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class CanaryFigures:
    """Canary and stable over the same round, plus the distance of their predictions."""

    canary: VersionFigures
    stable: VersionFigures
    prediction_drift: float | None = None  # Jensen-Shannon distance, None if not measured
    prediction_rows: int = 0  # rows of the smaller of the two prediction distributions


@dataclass(frozen=True)
class AnalysisState:
    """Where an analysis stands; stored after every decision."""

    model: str
    canary: int
    stable: int
    step: int  # index into the policy's steps
    failures: int
    started_at: float
    round_started_at: float
    rounds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class CheckResult:
    """One check: passed True/False, or None when skipped for lack of data."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float
    detail: str


@dataclass(frozen=True)
class Decision:
    """What to do now, the state to store, and why."""

    action: Action
    state: AnalysisState
    reason: str
    weight: float | None = None  # the canary weight to set (start, step)
    checks: tuple[CheckResult, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


def begin(policy: CanaryPolicy, model: str, canary: int, stable: int, now: float) -> Decision:
    """A new analysis at the first step."""
    state = AnalysisState(model, canary, stable, 0, 0, now, now)
    weight = policy.steps[0]
    return Decision(
        "start",
        state,
        f"canary analysis of version {canary} against stable {stable} begins at {weight:g}%",
        weight=weight,
        figures={"steps": list(policy.steps), "interval": policy.interval},
    )


def analyse(
    policy: CanaryPolicy, state: AnalysisState, figures: CanaryFigures, now: float
) -> Decision:
    """Decide one round (see the module docstring)."""
    elapsed = now - state.round_started_at
    if elapsed < policy.interval:
        return Decision("wait", state, f"round {state.rounds + 1} runs for {policy.interval:g} s")
    numbers = _figures(figures) | {"step": state.step, "weight": policy.steps[state.step]}
    if figures.canary.requests < policy.min_requests:
        why = (
            f"{figures.canary.requests} canary requests in {elapsed:.0f} s, "
            f"fewer than the {policy.min_requests} a round needs"
        )
        if elapsed > policy.deadline:
            return Decision(
                "rollback",
                state,
                f"not enough data by the deadline ({policy.deadline:g} s): {why}",
                figures=numbers,
            )
        return Decision("hold", state, why, figures=numbers)
    checks = run_checks(policy, figures)
    numbers["checks"] = [asdict(c) for c in checks]
    failed = [c for c in checks if c.passed is False]
    rounds = state.rounds + 1
    if failed:
        failures = state.failures + 1
        reasons = "; ".join(c.detail for c in failed)
        new = replace(state, failures=failures, round_started_at=now, rounds=rounds)
        if failures >= policy.failure_threshold:
            return Decision(
                "rollback",
                new,
                f"{failures} failed rounds (threshold {policy.failure_threshold}): {reasons}",
                checks=checks,
                figures=numbers,
            )
        return Decision(
            "retry",
            new,
            f"round failed ({failures} of {policy.failure_threshold}): {reasons}",
            checks=checks,
            figures=numbers,
        )
    passed = "; ".join(c.detail for c in checks)
    if state.step + 1 >= len(policy.steps):
        new = replace(state, round_started_at=now, rounds=rounds)
        return Decision(
            "promote",
            new,
            f"all checks passed at the last step ({policy.steps[-1]:g}%): {passed}",
            checks=checks,
            figures=numbers,
        )
    weight = policy.steps[state.step + 1]
    new = replace(state, step=state.step + 1, round_started_at=now, rounds=rounds)
    return Decision(
        "step",
        new,
        f"all checks passed at {policy.steps[state.step]:g}%, canary to {weight:g}%: {passed}",
        weight=weight,
        checks=checks,
        figures=numbers,
    )


def run_checks(policy: CanaryPolicy, figures: CanaryFigures) -> tuple[CheckResult, ...]:
    """The four checks of one round."""
    t, c, s = policy.checks, figures.canary, figures.stable
    results = []
    increase = c.error_rate - s.error_rate
    results.append(
        CheckResult(
            "error_rate",
            increase <= t.max_error_rate_increase,
            increase,
            t.max_error_rate_increase,
            f"error rate {c.error_rate:.2%} vs stable {s.error_rate:.2%} "
            f"(at most +{t.max_error_rate_increase:.2%})",
        )
    )
    if c.latency_p99 is None or s.latency_p99 is None:
        results.append(CheckResult("latency_p99", None, None, 0.0, "latency p99: no data"))
    else:
        limit = s.latency_p99 * t.max_latency_p99_ratio + t.latency_p99_slack_ms / 1000
        results.append(
            CheckResult(
                "latency_p99",
                c.latency_p99 <= limit,
                c.latency_p99,
                limit,
                f"latency p99 {c.latency_p99 * 1000:.1f} ms vs stable "
                f"{s.latency_p99 * 1000:.1f} ms (at most {limit * 1000:.1f} ms)",
            )
        )
    if c.accuracy is None or s.accuracy is None or min(c.labels, s.labels) < t.min_labels:
        results.append(
            CheckResult(
                "accuracy",
                None,
                None,
                t.max_accuracy_drop,
                f"accuracy: {c.labels} canary and {s.labels} stable labels, "
                f"{t.min_labels} each needed",
            )
        )
    else:
        drop = s.accuracy - c.accuracy
        results.append(
            CheckResult(
                "accuracy",
                drop <= t.max_accuracy_drop,
                drop,
                t.max_accuracy_drop,
                f"accuracy {c.accuracy:.3f} vs stable {s.accuracy:.3f} "
                f"(at most {t.max_accuracy_drop:g} lower; {c.labels} canary labels)",
            )
        )
    if figures.prediction_drift is None or figures.prediction_rows < t.min_prediction_rows:
        results.append(
            CheckResult(
                "prediction_drift",
                None,
                None,
                t.max_prediction_drift,
                f"prediction drift: {figures.prediction_rows} rows, {t.min_prediction_rows} needed",
            )
        )
    else:
        d = figures.prediction_drift
        results.append(
            CheckResult(
                "prediction_drift",
                d <= t.max_prediction_drift,
                d,
                t.max_prediction_drift,
                f"prediction drift (JS distance) {d:.3f} (at most {t.max_prediction_drift:g})",
            )
        )
    return tuple(results)


def _figures(f: CanaryFigures) -> dict[str, Any]:
    return {
        "canary": asdict(f.canary) | {"error_rate": f.canary.error_rate},
        "stable": asdict(f.stable) | {"error_rate": f.stable.error_rate},
        "prediction_drift": f.prediction_drift,
        "prediction_rows": f.prediction_rows,
    }

"""Canary analysis: a sequential statistical judge, a pure function of accumulated figures.

An analysis begins when a canary appears (``begin``: its weight goes to the first step). Then,
once per ``interval`` (a *look*), ``analyse`` receives the figures of both versions summed
from the analysis start to now, over the same buckets for both (evidence accumulates over the
whole analysis; it is never reset), and decides:

- ``wait``: less than ``interval`` since the last look;
- ``rollback``: a check *failed* (the canary is worse than the stable, below);
- ``promote``: at the last step, every required check has *passed*;
- ``step``: to the next weight, when every required check has enough data and none failed;
- ``hold``: otherwise; the canary stays at its step (the state still changes: the look is
  counted and passed checks are remembered);
- at the deadline (``deadline`` after the start, or the last planned look), an analysis that
  cannot promote is rolled back with the reason "insufficient evidence".

Each check (``monitor.canary_checks``) runs two one-sided tests on the accumulated figures,
the policy's tolerance being the non-inferiority margin ``m`` of the canary's excess ``d``
(how much worse the canary is than the stable):

- *pass* (non-inferiority), H0: ``d >= m``; rejecting it shows the canary is within tolerance;
- *fail* (inferiority), H0: ``d <= 0``; rejecting it shows the canary is worse than the stable.

The checks:

- ``errors``: pass, the Farrington-Manning score test of the difference of error rates
  against ``max_error_rate_increase``; fail, Fisher's exact test, one-sided.
- ``latency``: pass, Mann-Whitney U of (canary - slack) / ratio against the stable, one-sided,
  with the canary p99 at most ratio x stable p99 + slack; fail, Mann-Whitney U, one-sided, with
  the canary p99 above that limit (the practical floor: a slower but acceptable canary stays).
- ``accuracy``, classifiers: the error-rate pair on the misclassification rates of the joined
  labels, margin ``max_accuracy_drop``; regressors: z-tests of mean absolute errors, pass when
  the canary MAE is below ``max_mae_ratio`` x the stable's, fail when above the stable's.
- ``predictions``: fail, chi-square homogeneity on the stable version's bins with the
  Jensen-Shannon distance above ``max_prediction_drift`` (floor); there is no pass test, the
  check passes on that distance alone (with no stated error rate: not required by default).

Mann-Whitney is computed from the two latency histograms (midranks over bucket bounds, the
tie-corrected variance; the same figures as ``scipy.stats.mannwhitneyu`` on the expanded
values without continuity correction). A check with fewer observations than its minimum
(``min_requests``, ``min_labels`` per version, ``min_prediction_rows``) is *insufficient* at
that look: neither test runs.

Sequential design and error rates. The analysis plans ``K = ceil(deadline / interval)``
looks (30 at the defaults) and spends each test's level evenly over them: the pass test runs
at ``false_promotion / K`` per look, the fail test at ``false_rollback / K``. By the union
bound over looks (Bonferroni alpha spending, valid however the cumulative statistics are
correlated and however many looks actually happen, at most K):

- a canary worse than the margin on a required check (``d >= m``) is promoted with
  probability at most ``false_promotion`` (0.01): promotion needs that check's pass test to
  reject at some look;
- a canary no worse than the stable on every check (``d <= 0``) is rolled back by the tests
  with probability at most ``false_rollback`` (0.0025) per check that runs: at most 1% over
  the four checks; a rollback for insufficient evidence at the deadline comes on top (the
  benchmark measures the whole rate).

The error-rate pass test is asymptotic (score test with the restricted maximum likelihood
variance, the usual non-inferiority test, also where few errors are seen); every other bound
is as stated, conservatively (the union bound ignores the correlation between looks).
``benchmarks/canary_judge.py`` measures the rates through this code. A check passed at one
look stays passed (its error was spent when it passed); a later failure still rolls back.

A check whose pass test and fail test both reject (a canary worse than the stable but within
the margin, seen on much data) fails: production is protected first.

Which checks must pass is ``AnalysisState.required`` (from ``canary.required``, decided at
``begin``); the others can only fail. The state is a plain dataclass stored (``to_dict``)
after every look, so an analysis survives a restart of the monitor at the look it reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from driftgate.monitor.canary_checks import (
    CanaryFigures,
    CheckResult,
    Outcome,
    TestResult,
    VersionFigures,
    checks,
    farrington_manning,
    mann_whitney,
    quantile,
)
from driftgate.monitor.policy import CHECK_NAMES, CanaryPolicy

__all__ = [
    "CHECK_NAMES",
    "AnalysisState",
    "CanaryFigures",
    "CheckResult",
    "Decision",
    "TestResult",
    "VersionFigures",
    "analyse",
    "begin",
    "farrington_manning",
    "mann_whitney",
    "planned_looks",
    "quantile",
    "required_checks",
    "run_checks",
]

# "retry" is no longer decided (the sequential judge holds instead); kept for callers' matches.
Action = Literal["start", "wait", "hold", "retry", "step", "promote", "rollback"]


@dataclass(frozen=True)
class AnalysisState:
    """Where an analysis stands; stored after every look."""

    model: str
    canary: int
    stable: int
    step: int  # index into the policy's steps
    started_at: float
    last_look_at: float
    looks: int = 0
    required: tuple[str, ...] = ("errors", "latency")
    passed: tuple[str, ...] = ()  # checks whose pass test rejected at some look

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"required": list(self.required), "passed": list(self.passed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisState:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name in ("required", "passed"):
            if name in values:
                values[name] = tuple(str(c) for c in values[name])
        if "last_look_at" not in values:  # a state stored by the per-round analysis
            values["last_look_at"] = float(data.get("round_started_at", data["started_at"]))
        return cls(**values)


@dataclass(frozen=True)
class Decision:
    """What to do now, the state to store, and why."""

    action: Action
    state: AnalysisState
    reason: str
    weight: float | None = None  # the canary weight to set (start, step)
    checks: tuple[CheckResult, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


def planned_looks(policy: CanaryPolicy) -> int:
    """K, the looks the alpha of each test is spread over."""
    return max(1, math.ceil(policy.deadline / policy.interval - 1e-9))


def required_checks(policy: CanaryPolicy, labels_expected: bool) -> tuple[str, ...]:
    """The policy's ``required``, or by default errors and latency, plus accuracy when labels
    are expected (the caller says whether the stable version has been receiving them)."""
    if policy.required is not None:
        return policy.required
    return ("errors", "latency", "accuracy") if labels_expected else ("errors", "latency")


def begin(
    policy: CanaryPolicy,
    model: str,
    canary: int,
    stable: int,
    now: float,
    labels_expected: bool = False,
) -> Decision:
    """A new analysis at the first step."""
    required = required_checks(policy, labels_expected)
    state = AnalysisState(model, canary, stable, 0, now, now, required=required)
    weight = policy.steps[0]
    return Decision(
        "start",
        state,
        f"canary analysis of version {canary} against stable {stable} begins at {weight:g}%; "
        f"required checks: {', '.join(required) or 'none'}",
        weight=weight,
        figures={
            "steps": list(policy.steps),
            "interval": policy.interval,
            "deadline": policy.deadline,
            "planned_looks": planned_looks(policy),
            "required": list(required),
            "false_promotion": policy.false_promotion,
            "false_rollback": policy.false_rollback,
        },
    )


def analyse(
    policy: CanaryPolicy, state: AnalysisState, figures: CanaryFigures, now: float
) -> Decision:
    """Decide one look (see the module docstring)."""
    if now - state.last_look_at < policy.interval:
        return Decision("wait", state, f"next look {policy.interval:g} s after the last")
    planned = planned_looks(policy)
    look = state.looks + 1
    checks = run_checks(policy, figures, state.required, planned)
    passed = tuple(c for c in CHECK_NAMES if c in state.passed or _outcome(checks, c) == "pass")
    new = replace(state, looks=look, last_look_at=now, passed=passed)
    numbers = _numbers(policy, new, checks, figures, planned)
    last_step = state.step + 1 >= len(policy.steps)
    failed = [c for c in checks if c.outcome == "fail"]
    if failed:
        why = "; ".join(c.detail for c in failed)
        return Decision("rollback", new, f"canary worse than stable: {why}", None, checks, numbers)
    missing = [c for c in state.required if c not in passed]
    if last_step and not missing:
        return Decision(
            "promote",
            new,
            f"every required check passed ({', '.join(state.required) or 'none'}) at "
            f"{policy.steps[-1]:g}% after {look} looks: {_details(checks, state.required)}",
            None,
            checks,
            numbers,
        )
    lacking = [c for c in checks if c.required and c.outcome == "insufficient"]
    if look >= planned or now - state.started_at >= policy.deadline:
        undecided = [c for c in checks if c.name in missing]
        return Decision(
            "rollback",
            new,
            f"insufficient evidence by the deadline ({policy.deadline:g} s, {look} looks): "
            + ("; ".join(c.detail for c in undecided) or "the last step was not reached"),
            None,
            checks,
            numbers,
        )
    if not last_step and not lacking:
        weight = policy.steps[state.step + 1]
        stepped = replace(new, step=state.step + 1)
        numbers["step"] = stepped.step
        return Decision(
            "step",
            stepped,
            f"no check failed at {policy.steps[state.step]:g}%, canary to {weight:g}%: "
            f"{_details(checks, CHECK_NAMES)}",
            weight,
            checks,
            numbers,
        )
    waiting = lacking or [c for c in checks if c.name in missing]
    return Decision(
        "hold",
        new,
        f"held at {policy.steps[state.step]:g}% (look {look} of {planned}): "
        + "; ".join(c.detail for c in waiting),
        None,
        checks,
        numbers,
    )


def run_checks(
    policy: CanaryPolicy,
    figures: CanaryFigures,
    required: Sequence[str] = (),
    planned: int | None = None,
) -> tuple[CheckResult, ...]:
    """Every check at one look, its tests at this look's levels."""
    looks = planned or planned_looks(policy)
    levels = (policy.false_promotion / looks, policy.false_rollback / looks)
    return checks(policy, figures, required, levels)


def _outcome(checks: Sequence[CheckResult], name: str) -> Outcome | None:
    return next((c.outcome for c in checks if c.name == name), None)


def _details(checks: Sequence[CheckResult], names: Sequence[str]) -> str:
    return "; ".join(c.detail for c in checks if c.name in names) or "-"


def _numbers(
    policy: CanaryPolicy,
    state: AnalysisState,
    checks: Sequence[CheckResult],
    figures: CanaryFigures,
    planned: int,
) -> dict[str, Any]:
    """An event's figures: each check with its tests, statistics, p-values and sample sizes."""
    return {
        "look": state.looks,
        "planned_looks": planned,
        "step": state.step,
        "weight": policy.steps[state.step],
        "elapsed_seconds": state.last_look_at - state.started_at,
        "required": list(state.required),
        "passed": list(state.passed),
        "task": figures.task,
        "checks": {c.name: c.figures() for c in checks},
    }

"""Calibration of the canary judge: its error rates at the policy defaults, by simulation.

Every simulated analysis goes through the project's own judge (``monitor.canary.begin`` and
``analyse`` with ``Policy().canary``): traffic arrives second by second at ``--rate`` requests
per second, split by the canary's current weight; every request is labelled ``--label-delay``
seconds after it was served; at every look the judge gets both versions' figures summed from
the analysis start (requests, errors, the latency histogram on the gateway's buckets, joined
labels, predictions on the stable's bins), as ``Autopilot.canary_figures`` reads them from the
store, and its decision (step, hold, promote, rollback) sets the next weight. Labels flow, so
accuracy is a required check (errors, latency, accuracy).

Scenarios (stable: error rate 0.5%, accuracy 0.85, latency log-normal around 4 ms):

- ``identical``: the canary is the stable; target: rolled back in at most 2% of analyses, and
  promoted within 15 minutes (in at least 95% of analyses);
- ``accuracy_10_points``: canary accuracy 0.75; target: promoted in at most 1%;
- ``errors_2_points``: canary error rate 2.5%; target: rolled back in at least 95%;
- ``accuracy_at_margin``, ``errors_at_margin`` (no target, the stated rate): a canary exactly
  at the tolerance (accuracy 0.80, error rate 1.5%) is promoted in at most
  ``false_promotion`` (1%) of analyses.

    python benchmarks/canary_judge.py                 # 2,000 analyses per scenario
    python benchmarks/canary_judge.py --quick         # 200, a smoke run
    python benchmarks/canary_judge.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftgate.gateway.dataplane.record import LATENCY_BUCKETS  # noqa: E402
from driftgate.monitor.canary import (  # noqa: E402
    CanaryFigures,
    VersionFigures,
    analyse,
    begin,
)
from driftgate.monitor.policy import CanaryPolicy, Policy  # noqa: E402

BOUNDS = (*LATENCY_BUCKETS, math.inf)


@dataclass(frozen=True)
class Version:
    """How one version behaves."""

    error_rate: float = 0.005
    accuracy: float = 0.85
    latency_median: float = 0.004  # seconds, log-normal
    latency_sigma: float = 0.5
    predictions: tuple[float, ...] = (0.6, 0.4, 0.0)  # class 0, class 1, other

    def latency_probabilities(self) -> np.ndarray:
        from scipy import stats

        edges = np.log(np.array(LATENCY_BUCKETS)) - math.log(self.latency_median)
        cdf = stats.norm.cdf(edges / self.latency_sigma)
        return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


STABLE = Version()
SCENARIOS: dict[str, Version] = {
    "identical": STABLE,
    "accuracy_10_points": Version(accuracy=0.75),
    "errors_2_points": Version(error_rate=0.025),
    "accuracy_at_margin": Version(accuracy=0.80),
    "errors_at_margin": Version(error_rate=0.015),
}


@dataclass
class Totals:
    """One version's running sums; labels per second, joined after the label delay."""

    requests: int = 0
    errors: int = 0
    latency: np.ndarray | None = None
    predictions: np.ndarray | None = None
    served: list[int] | None = None  # requests per second
    right: list[int] | None = None  # of them predicted right

    def add(self, rng: np.random.Generator, v: Version, per_second: np.ndarray) -> None:
        n = int(per_second.sum())
        self.requests += n
        self.errors += int(rng.binomial(n, v.error_rate))
        self.latency = _plus(self.latency, rng.multinomial(n, v.latency_probabilities()))
        self.predictions = _plus(self.predictions, rng.multinomial(n, v.predictions))
        self.served = (self.served or []) + per_second.tolist()
        self.right = (self.right or []) + rng.binomial(per_second, v.accuracy).tolist()

    def figures(self, labelled_seconds: int) -> VersionFigures:
        served, right = self.served or [], self.right or []
        k = max(0, min(labelled_seconds, len(served)))
        return VersionFigures(
            requests=self.requests,
            errors=self.errors,
            latency=tuple(zip(BOUNDS, (int(c) for c in _or_zeros(self.latency)), strict=True)),
            labels=int(sum(served[:k])),
            correct=int(sum(right[:k])),
            predictions=tuple(int(c) for c in _or_zeros(self.predictions, 3)),
        )


def _plus(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a + b


def _or_zeros(a: np.ndarray | None, size: int = len(BOUNDS)) -> np.ndarray:
    return np.zeros(size, dtype=np.int64) if a is None else a


def simulate(
    policy: CanaryPolicy,
    canary: Version,
    rng: np.random.Generator,
    rate: float,
    label_delay: float,
) -> tuple[str, float, str]:
    """One analysis: (promote or rollback, seconds from start, the deciding reason)."""
    decision = begin(policy, "m", 2, 1, 0.0, labels_expected=True)
    state, weight = decision.state, float(decision.weight or policy.steps[0])
    totals = {"canary": Totals(), "stable": Totals()}
    now, step = 0.0, int(policy.interval)
    while True:
        arrivals = rng.poisson(rate, size=step)
        to_canary = rng.binomial(arrivals, weight / 100.0)
        totals["canary"].add(rng, canary, to_canary)
        totals["stable"].add(rng, STABLE, arrivals - to_canary)
        now += step
        labelled = int(now - label_delay)
        figures = CanaryFigures(
            totals["canary"].figures(labelled), totals["stable"].figures(labelled)
        )
        decision = analyse(policy, state, figures, now)
        state = decision.state
        if decision.action in ("promote", "rollback"):
            return decision.action, now, decision.reason
        if decision.weight is not None:
            weight = decision.weight


def run(analyses: int, rate: float, label_delay: float, seed: int) -> dict[str, Any]:
    policy = Policy().canary
    report: dict[str, Any] = {
        "analyses": analyses,
        "rate": rate,
        "label_delay": label_delay,
        "policy": {
            "interval": policy.interval,
            "steps": list(policy.steps),
            "deadline": policy.deadline,
            "false_promotion": policy.false_promotion,
            "false_rollback": policy.false_rollback,
            "min_requests": policy.min_requests,
            "min_labels": policy.checks.min_labels,
        },
        "scenarios": {},
    }
    for index, (name, canary) in enumerate(SCENARIOS.items()):
        rng = np.random.default_rng([seed, index])
        started = time.perf_counter()
        outcomes = [simulate(policy, canary, rng, rate, label_delay) for _ in range(analyses)]
        promoted = [t for action, t, _ in outcomes if action == "promote"]
        rolled = [r for action, _, r in outcomes if action == "rollback"]
        rolled_at = [t for action, t, _ in outcomes if action == "rollback"]
        report["scenarios"][name] = {
            "promoted": len(promoted) / analyses,
            "rolled_back": len(rolled) / analyses,
            "insufficient_evidence": sum("insufficient evidence" in r for r in rolled) / analyses,
            "promoted_within_15_min": sum(t <= 900 for t in promoted) / analyses,
            "median_minutes_to_promotion": float(np.median(promoted)) / 60 if promoted else None,
            "p95_minutes_to_promotion": (
                float(np.percentile(promoted, 95)) / 60 if promoted else None
            ),
            "median_minutes_to_rollback": float(np.median(rolled_at)) / 60 if rolled else None,
            "seconds": time.perf_counter() - started,
        }
    return report


TARGETS = (
    ("identical canary rolled back", "identical", "rolled_back", "<=", 0.02),
    ("identical canary promoted within 15 min", "identical", "promoted_within_15_min", ">=", 0.95),
    ("canary 10 points less accurate promoted", "accuracy_10_points", "promoted", "<=", 0.01),
    ("canary with 2 points more errors rolled back", "errors_2_points", "rolled_back", ">=", 0.95),
    ("canary at the accuracy margin promoted", "accuracy_at_margin", "promoted", "<=", 0.01),
    ("canary at the error-rate margin promoted", "errors_at_margin", "promoted", "<=", 0.01),
)


def verdicts(report: dict[str, Any]) -> list[tuple[str, float, str, float, bool]]:
    out = []
    for text, scenario, key, sense, bound in TARGETS:
        value = report["scenarios"][scenario][key]
        ok = value <= bound if sense == "<=" else value >= bound
        out.append((text, value, sense, bound, ok))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyses", type=int, default=2000, help="per scenario (2000)")
    parser.add_argument("--quick", action="store_true", help="200 analyses per scenario")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (20)")
    parser.add_argument("--label-delay", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    analyses = 200 if args.quick else args.analyses
    report = run(analyses, args.rate, args.label_delay, args.seed)
    print(
        f"canary judge at the policy defaults: {analyses} analyses per scenario, "
        f"{args.rate:g} requests/s, labels {args.label_delay:g} s late"
    )
    for name, figures in report["scenarios"].items():
        median = figures["median_minutes_to_promotion"]
        back = figures["median_minutes_to_rollback"]
        print(
            f"  {name:<20} promoted {figures['promoted']:6.1%}  rolled back "
            f"{figures['rolled_back']:6.1%} (insufficient evidence "
            f"{figures['insufficient_evidence']:.1%})  median to promotion "
            f"{'-' if median is None else f'{median:.1f} min'}, to rollback "
            f"{'-' if back is None else f'{back:.1f} min'}  ({figures['seconds']:.0f} s)"
        )
    failed = 0
    for text, value, sense, bound, ok in verdicts(report):
        print(f"{'PASS' if ok else 'FAIL'}  {text}: {value:.2%} (target {sense} {bound:.0%})")
        failed += not ok
    report["verdicts"] = [
        {"target": t, "value": v, "bound": f"{s} {b}", "pass": ok}
        for t, v, s, b, ok in verdicts(report)
    ]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 1 if failed and not args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())

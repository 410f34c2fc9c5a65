"""Calibration of the retraining judge: its error rates at the policy defaults, by simulation.

Every simulated judgement goes through the project's own judge (``monitor.retrain_judge.judge``
with ``Policy().retrain``'s tolerance, false_accept and power), on a holdout of the size the
policy defaults give: ``holdout_fraction`` (25%) of ``--production-rows`` (16,000) labelled
production rows, 4,000 rows (2,982 are needed at 15% discordance and the 2-point margin).
Each holdout row is drawn with both versions' outcomes paired.

Classifiers (stable accuracy 0.85; the two versions disagree on ``--discordance``, 15%, of the
rows, the usual share for two fits of one model family on overlapping data):

- ``equal``: the candidate is as accurate as the stable; its rejections (worse, or
  insufficient evidence) are false rejections; stated rate: at most ``1 - power`` (20%);
- ``worse_5_points``: accuracy 0.80; its acceptances are false acceptances (target: at most
  ``false_accept``, 5%; in practice none);
- ``at_margin``: accuracy lower by exactly the tolerance (2 points); accepted in at most
  ``false_accept`` of judgements: the test's level, checked.

Regressors (errors of two correlated fits, correlation 0.64 of the errors):
``regression_equal`` (same MAE), ``regression_worse_10_percent`` (MAE 10% higher) and
``regression_at_margin`` (MAE higher by the tolerance, 2%: the test's level), on a
holdout of ``--regression-rows`` (15,000): a margin of 2% of the MAE needs about 11,300 rows
here, so the 4,000 of the classifier scenarios would all be insufficient evidence.

"Rejected" counts insufficient evidence too; the power calculation promises ``power`` only for
the judgements it lets through, so the false-reject targets are on those (``judged``).

    python benchmarks/retrain_judge.py                 # 2,000 judgements per scenario
    python benchmarks/retrain_judge.py --quick         # 200, a smoke run
    python benchmarks/retrain_judge.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftgate.monitor.policy import Policy, RetrainPolicy  # noqa: E402
from driftgate.monitor.retrain_judge import judge, rows_needed_classifier  # noqa: E402

STABLE_ACCURACY = 0.85


def _classifier_holdout(
    rng: np.random.Generator, rows: int, difference: float, discordance: float
) -> tuple[Any, Any, Any]:
    """Labels and predictions: the candidate alone right on ``(discordance + difference) / 2``
    of the rows, the stable alone right on ``(discordance - difference) / 2``."""
    only_candidate = (discordance + difference) / 2
    only_stable = (discordance - difference) / 2
    both = STABLE_ACCURACY - only_stable
    kind = np.searchsorted(np.cumsum([both, only_candidate, only_stable]), rng.random(rows))
    truth = rng.integers(0, 2, rows)
    stable = np.where((kind == 0) | (kind == 2), truth, 1 - truth)
    candidate = np.where((kind == 0) | (kind == 1), truth, 1 - truth)
    return truth, stable, candidate


def _regressor_holdout(rng: np.random.Generator, rows: int, scale: float) -> tuple[Any, Any, Any]:
    shared, own_stable, own_candidate = rng.standard_normal((3, rows))
    truth = np.zeros(rows)  # only the errors matter
    stable = 0.8 * shared + 0.6 * own_stable
    candidate = scale * (0.8 * shared + 0.6 * own_candidate)
    return truth, stable, candidate


def _simulate(judgements: int, draw: Any, task: str, p: RetrainPolicy) -> dict[str, Any]:
    started = time.perf_counter()
    accepted = insufficient = 0
    p_values: list[float] = []
    for _ in range(judgements):
        truth, stable, candidate = draw()
        verdict = judge(task, truth, stable, candidate, p.tolerance, p.false_accept, p.power)
        accepted += verdict.accepted
        insufficient += verdict.insufficient
        if verdict.p_value is not None:
            p_values.append(verdict.p_value)
    judged = judgements - insufficient
    return {
        "judgements": judgements,
        "accepted": accepted / judgements,
        "rejected": 1 - accepted / judgements,
        "rejected_when_judged": (judged - accepted) / judged if judged else None,
        "insufficient_evidence": insufficient / judgements,
        "median_p_value": float(np.median(p_values)) if p_values else None,
        "seconds": time.perf_counter() - started,
    }


def run(
    judgements: int, production_rows: int, discordance: float, regression_rows: int, seed: int
) -> dict[str, Any]:
    p = Policy().retrain
    rows = round(production_rows * p.holdout_fraction)
    rng = np.random.default_rng(seed)
    scenarios = {
        "equal": ("classification", lambda: _classifier_holdout(rng, rows, 0.0, discordance)),
        "worse_5_points": (
            "classification", lambda: _classifier_holdout(rng, rows, -0.05, discordance),
        ),
        "at_margin": (
            "classification", lambda: _classifier_holdout(rng, rows, -p.tolerance, discordance),
        ),
        "regression_equal": (
            "regression", lambda: _regressor_holdout(rng, regression_rows, 1.0),
        ),
        "regression_worse_10_percent": (
            "regression", lambda: _regressor_holdout(rng, regression_rows, 1.1),
        ),
        "regression_at_margin": (
            "regression", lambda: _regressor_holdout(rng, regression_rows, 1 + p.tolerance),
        ),
    }  # fmt: skip
    return {
        "policy": {
            "tolerance": p.tolerance,
            "false_accept": p.false_accept,
            "power": p.power,
            "holdout_fraction": p.holdout_fraction,
        },
        "holdout_rows": rows,
        "regression_holdout_rows": regression_rows,
        "discordance": discordance,
        "rows_needed_at_discordance": rows_needed_classifier(
            discordance, p.tolerance, p.false_accept, p.power
        ),
        "scenarios": {
            name: _simulate(judgements, draw, task, p) for name, (task, draw) in scenarios.items()
        },
    }


def verdicts(report: dict[str, Any]) -> list[tuple[str, float, str, float, bool]]:
    policy, scenarios = report["policy"], report["scenarios"]
    targets = [
        ("equal", "rejected_when_judged", "equal candidate rejected when judged (false reject)",
         "<=", 1 - policy["power"]),
        ("worse_5_points", "accepted", "candidate 5 points worse accepted (false accept)", "<=",
         policy["false_accept"]),
        ("at_margin", "accepted", "candidate worse by the tolerance accepted (the level)", "<=",
         policy["false_accept"]),
        ("regression_equal", "rejected_when_judged", "equal regressor rejected when judged",
         "<=", 1 - policy["power"]),
        ("regression_worse_10_percent", "accepted", "regressor 10% worse accepted", "<=",
         policy["false_accept"]),
        ("regression_at_margin", "accepted", "regressor worse by the tolerance accepted", "<=",
         policy["false_accept"]),
    ]  # fmt: skip
    out = []
    for scenario, key, text, sense, bound in targets:
        value = scenarios[scenario][key]
        value = 1.0 if value is None else value  # never judged: all rejected
        out.append((text, value, sense, bound, value <= bound))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--judgements", type=int, default=2000, help="per scenario (2000)")
    parser.add_argument("--quick", action="store_true", help="200 judgements per scenario")
    parser.add_argument("--production-rows", type=int, default=16_000, help="labelled (16000)")
    parser.add_argument("--discordance", type=float, default=0.15, help="share of rows (0.15)")
    parser.add_argument("--regression-rows", type=int, default=15_000, help="holdout (15000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    judgements = 200 if args.quick else args.judgements
    report = run(
        judgements, args.production_rows, args.discordance, args.regression_rows, args.seed
    )
    print(
        f"retraining judge at the policy defaults: {judgements} judgements per scenario, "
        f"{report['holdout_rows']} holdout rows (rows needed at discordance "
        f"{args.discordance:g}: {report['rows_needed_at_discordance']})"
    )
    for name, figures in report["scenarios"].items():
        print(
            f"  {name:<28} accepted {figures['accepted']:6.1%}  rejected "
            f"{figures['rejected']:6.1%} (insufficient evidence "
            f"{figures['insufficient_evidence']:.1%})  ({figures['seconds']:.1f} s)"
        )
    failed = 0
    report["verdicts"] = []
    for text, value, sense, bound, ok in verdicts(report):
        print(f"{'PASS' if ok else 'FAIL'}  {text}: {value:.2%} (target {sense} {bound:.0%})")
        failed += not ok
        report["verdicts"].append({"target": text, "value": value, "bound": f"{sense} {bound}",
                                   "pass": ok})  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 1 if failed and not args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())

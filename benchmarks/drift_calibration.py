"""Calibration of the drift verdicts: false-alarm rate under no drift, detection under a shift.

    python benchmarks/drift_calibration.py [--references 10] [--windows 100] [--json]

Each evaluation is one model with 20 independent standard-normal features, a reference
profile of ``--n-ref`` training rows on decile bins (``driftgate.core.profile.numeric_bins``, as
the converter makes it), and one production window. References are redrawn ``--references``
times (the training sample is itself random), each with ``--windows`` windows. A window's
counts are drawn from the true bin probabilities (normal CDF at the frozen edges), which is
exactly the distribution of counting that many fresh rows, without materialising 10^6 rows.

False alarm: an evaluation whose dataset verdict is DRIFT when nothing drifted (target: at
most 1% of evaluations). Detection: a 0.25-SD mean shift in one of the 20 features at 2,000
rows, detected when that feature's verdict is DRIFT (target: at least 95%).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.special import ndtr

from driftgate.core.profile import numeric_bins
from driftgate.monitor.drift import DriftTester, DriftThresholds, Verdict

FEATURES = 20
SIZES = (500, 5_000, 50_000, 1_000_000)
SHIFT = 0.25
DETECT_ROWS = 2_000


def _reference(rng: np.random.Generator, n_ref: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(edges, counts) of each feature of one freshly drawn training sample."""
    profile = []
    for _ in range(FEATURES):
        bins = numeric_bins(rng.standard_normal(n_ref), bins=10)
        profile.append((np.asarray(bins.edges), np.asarray(bins.counts)))
    return profile


def _window(rng: np.random.Generator, edges: np.ndarray, rows: int, shift: float) -> np.ndarray:
    cdf = np.concatenate([[0.0], ndtr(edges - shift), [1.0]])
    return rng.multinomial(rows, np.diff(cdf))


def run(references: int, windows: int, n_ref: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    tester = DriftTester(DriftThresholds())
    false_alarms = dict.fromkeys(SIZES, 0)
    feature_alarms = dict.fromkeys(SIZES, 0)
    detected = 0
    seconds = dict.fromkeys([*SIZES, DETECT_ROWS], 0.0)
    for _ in range(references):
        profile = _reference(rng, n_ref)
        for size in SIZES:
            for _ in range(windows):
                started = time.perf_counter()
                result = tester.evaluate(
                    [
                        (f"f{i}", False, counts, _window(rng, edges, size, 0.0))
                        for i, (edges, counts) in enumerate(profile)
                    ]
                )
                seconds[size] += time.perf_counter() - started
                false_alarms[size] += result.verdict == Verdict.DRIFT
                feature_alarms[size] += sum(f.verdict == Verdict.DRIFT for f in result.features)
        for _ in range(windows):
            started = time.perf_counter()
            result = tester.evaluate(
                [
                    (
                        f"f{i}",
                        False,
                        counts,
                        _window(rng, edges, DETECT_ROWS, SHIFT if i == 0 else 0),
                    )
                    for i, (edges, counts) in enumerate(profile)
                ]
            )
            seconds[DETECT_ROWS] += time.perf_counter() - started
            detected += result.features[0].verdict == Verdict.DRIFT
    total = references * windows
    rows: list[dict[str, object]] = [
        {
            "case": "no drift",
            "rows": size,
            "evaluations": total,
            "rate": false_alarms[size] / total,
            "feature_rate": feature_alarms[size] / (total * FEATURES),
            "target": "<= 0.01",
            "ms_per_evaluation": 1000 * seconds[size] / total,
        }
        for size in SIZES
    ]
    rows.append(
        {
            "case": f"{SHIFT}-SD shift in 1 of {FEATURES}",
            "rows": DETECT_ROWS,
            "evaluations": total,
            "rate": detected / total,
            "feature_rate": None,
            "target": ">= 0.95",
            "ms_per_evaluation": 1000 * seconds[DETECT_ROWS] / total,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=10, help="training samples drawn")
    parser.add_argument("--windows", type=int, default=100, help="windows per reference")
    parser.add_argument("--n-ref", type=int, default=10_000, help="training rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = run(args.references, args.windows, args.n_ref, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    alpha = DriftThresholds().alpha
    print(f"{FEATURES} features, n_ref={args.n_ref}, decile bins, alpha={alpha} per evaluation")
    print(
        f"{'case':<26} {'rows':>9} {'evals':>6} {'rate':>7} {'per-feat':>9} {'target':>8} {'ms':>7}"
    )
    for r in rows:
        feature_rate = "" if r["feature_rate"] is None else f"{r['feature_rate']:.5f}"
        print(
            f"{r['case']:<26} {r['rows']:>9} {r['evaluations']:>6} {r['rate']:>7.4f} "
            f"{feature_rate:>9} {r['target']:>8} {r['ms_per_evaluation']:>7.2f}"
        )


if __name__ == "__main__":
    main()

"""The label-free accuracy estimate against labelled accuracy, under the demo's covariate shift.

The demo's data (``monitor.demo``: ``make_classification`` 8,000 rows, 6 features, seed 7;
3,000 training rows, 5,000 live rows) and its model (a random forest of 40 trees, depth 10),
fitted on the training rows of the converter's seeded split and converted by
``driftgate.converter.convert``, which fits the calibration on cross-fitted probabilities of
all 3,000 training rows (5 folds; ``--holdout-calibration``: on the split's 20% holdout, 600
rows, as before cross-fitting) and writes it in model.json. Each simulated window draws 2,000
live rows (without replacement), shifts the first two features by ``shift`` (the demo shifts
them by +4.0) and computes, with the monitor's own ``accuracy_of`` (whose figures the store's
histograms give exactly, see tests/integration/test_label_free_store.py), the calibrated
estimate of every row and the accuracy measured with every row labelled. It reports per shift
the error estimate - accuracy (bias, mean absolute error, 95th percentile of the absolute
error, share within 3 points), the same for the uncalibrated mean top-class probability (the
estimate before), and the expected confusion matrix's largest cell error as a share of the
window's rows (``cell``: the mean over windows of max |expected - measured| / rows).

The demo also flips the concept (label = 1 - label) with its shift: no label-free estimate
can see that (CBPE assumes P(label | inputs) is unchanged), and the ``concept flip`` line
shows the gap that DriftgateAccuracyBelowEstimate then alerts on.

Windows are drawn for each of several models (``--models``: split and forest seeds 0, 1, ...),
as the calibration's own sampling error is part of the estimate's error.

Usage: ``python benchmarks/label_free_estimate.py [--windows 100] [--models 5] [--quick]
[--holdout-calibration] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHIFTS = (0.0, 1.0, 2.0, 4.0)
WINDOW_ROWS = 2000
TARGET = 0.03


def _model(
    workdir: Path, seed: int, folds: int
) -> tuple[Any, dict[str, Any], np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from driftgate import converter

    x, y = make_classification(
        8000, 6, n_informative=4, n_redundant=0, class_sep=1.2, random_state=7
    )
    x = x.astype(np.float32)
    x_train, y_train = x[:3000], y[:3000]
    settings = converter.ConverterSettings(seed=seed, calibration_folds=folds)
    fit_rows, _ = converter.holdout_split(len(x_train), settings.holdout_fraction, seed)
    forest = RandomForestClassifier(40, max_depth=10, random_state=seed)
    forest.fit(x_train[fit_rows], y_train[fit_rows])
    result = converter.convert(forest, x_train, "demo", workdir, labels=y_train, settings=settings)
    return forest, result.metadata, x[3000:], y[3000:]


def _window_figures(
    probabilities: np.ndarray, predicted: np.ndarray, labels: np.ndarray, calibration: Any
) -> tuple[float, float, float, float]:
    """(calibrated estimate, raw mean top-class probability, labelled accuracy, largest
    expected confusion cell error as a share of the rows)."""
    from driftgate.monitor.accuracy import JoinedPrediction, accuracy_of

    records = [
        JoinedPrediction(str(p), row.tolist(), str(label), 60.0)
        for p, row, label in zip(predicted, probabilities, labels, strict=True)
    ]
    calibrated = accuracy_of(records, "classification", ["0", "1"], calibration)
    raw = accuracy_of(records, "classification", ["0", "1"])
    assert calibrated.accuracy is not None and calibrated.estimated_accuracy is not None
    assert raw.estimated_accuracy is not None
    cells = set(calibrated.expected_confusion) | set(calibrated.confusion)
    cell = max(
        abs(calibrated.expected_confusion.get(c, 0.0) - calibrated.confusion.get(c, 0))
        for c in cells
    )
    estimate, accuracy = calibrated.estimated_accuracy, calibrated.accuracy
    return estimate, raw.estimated_accuracy, accuracy, cell / len(records)


def _summary(errors: list[float]) -> dict[str, float]:
    e = np.asarray(errors)
    return {
        "bias": float(e.mean()),
        "mae": float(np.abs(e).mean()),
        "p95_abs": float(np.quantile(np.abs(e), 0.95)),
        "within_3_points": float(np.mean(np.abs(e) <= TARGET)),
    }


CASES = [(f"shift {s:+.1f}", s, False) for s in SHIFTS] + [("concept flip +4.0", 4.0, True)]


def run(windows: int, models: int, seed: int, folds: int = 5) -> dict[str, Any]:
    """``windows`` windows per case for each of ``models`` models (split and forest seeds
    0, 1, ...: the calibration's own sampling error is part of the estimate's)."""
    from driftgate.monitor.accuracy import Calibration

    rng = np.random.default_rng(seed)
    figures: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n, _, _ in CASES}
    biases: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    calibrations = []
    for model_seed in range(models):
        with tempfile.TemporaryDirectory() as workdir:
            forest, meta, x_live, y_live = _model(Path(workdir), model_seed, folds)
        calibration = Calibration.from_model_json(meta)
        block = meta["calibration"]
        calibrations.append(
            {"rows": block["rows"], "source": block["source"], "breakpoints": len(block["x"])}
        )
        for name, shift, flip in CASES:
            x = x_live.copy()
            x[:, :2] += shift
            probabilities = forest.predict_proba(x)
            predicted = forest.classes_[probabilities.argmax(axis=1)]
            labels = 1 - y_live if flip else y_live
            mine = []
            for _ in range(windows):
                rows = rng.choice(len(x_live), WINDOW_ROWS, replace=False)
                mine.append(
                    _window_figures(probabilities[rows], predicted[rows], labels[rows], calibration)
                )
            figures[name] += mine
            biases[name].append(float(np.mean([e - a for e, _, a, _ in mine])))
    report: dict[str, Any] = {
        "window_rows": WINDOW_ROWS,
        "windows_per_case_and_model": windows,
        "models": models,
        "calibrations": calibrations,
        "cases": {},
    }
    for name, rows in figures.items():
        report["cases"][name] = {
            "accuracy_mean": float(np.mean([a for _, _, a, _ in rows])),
            "estimate_mean": float(np.mean([e for e, _, _, _ in rows])),
            "calibrated": _summary([e - a for e, _, a, _ in rows]),
            "uncalibrated": _summary([r - a for _, r, a, _ in rows]),
            "confusion_cell_error": float(np.mean([c for _, _, _, c in rows])),
            "bias_per_model": biases[name],
        }
    return report


def _print(report: dict[str, Any], seconds: float) -> None:
    c = report["calibrations"][0]
    print(
        f"label-free estimate: {report['models']} models x {report['windows_per_case_and_model']}"
        f" windows of {report['window_rows']} rows per case; each calibrated on {c['rows']} "
        f"rows ({c['source']}); {seconds:.0f} s"
    )
    print(
        f"{'case':<18} {'accuracy':>8} {'estimate':>8} {'bias':>7} {'MAE':>6} {'p95|e|':>7} "
        f"{'<=3pt':>6} {'cell':>6}   {'raw bias':>8} {'raw MAE':>7}   bias per model"
    )
    for name, case in report["cases"].items():
        k, u = case["calibrated"], case["uncalibrated"]
        print(
            f"{name:<18} {case['accuracy_mean']:>8.3f} {case['estimate_mean']:>8.3f} "
            f"{k['bias']:>+7.3f} {k['mae']:>6.3f} {k['p95_abs']:>7.3f} "
            f"{k['within_3_points']:>6.1%} {case['confusion_cell_error']:>6.3f}   "
            f"{u['bias']:>+8.3f} {u['mae']:>7.3f}   "
            + " ".join(f"{b:+.3f}" for b in case["bias_per_model"])
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--windows", type=int, default=100, help="simulated windows per case and model"
    )
    parser.add_argument("--models", type=int, default=5, help="models (split seeds) to fit")
    parser.add_argument("--seed", type=int, default=1, help="seed of the windows' draws")
    parser.add_argument(
        "--quick", action="store_true", help="one model, 5 windows per case (smoke run)"
    )
    parser.add_argument(
        "--holdout-calibration",
        action="store_true",
        help="calibrate on the 20%% holdout (600 rows) instead of cross-fitting all rows",
    )
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    windows, models = (5, 1) if args.quick else (args.windows, args.models)
    started = time.perf_counter()
    report = run(windows, models, args.seed, 0 if args.holdout_calibration else 5)
    _print(report, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

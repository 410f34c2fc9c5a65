"""``driftgate convert``: the command-line front end of ``converter.convert``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Convert a fitted scikit-learn estimator to ONNX and write it as the next version of
MODEL_NAME in the model repository, with model.json (metadata), reference.json (the
reference profile for drift monitoring), estimator.joblib and a training_sample.npz.

The estimator file is unpickled with joblib: it is TRUSTED INPUT, loading it runs code.

Parity check: ONNX Runtime and scikit-learn run on the held-out rows (or sampled rows when
--holdout-fraction is 0), both fed the same float32-rounded values. Labels must agree on at
least 99.9%% of the rows; probabilities and regression values must satisfy
|onnx - sklearn| <= atol + rtol * |sklearn| (defaults atol=1e-4, rtol=1e-3). A failing check
writes nothing, prints a report (max error per output, worst rows) and exits 2.

Exit status: 0 on success; 2 for a parity failure, an unsupported estimator or bad input.
"""


def register(subparsers: Any) -> None:
    """Add the ``convert`` subcommand to the ``driftgate`` parser."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a scikit-learn estimator into the next version of a model",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_name", metavar="MODEL_NAME", help="model name in the repository")
    parser.add_argument(
        "--estimator", required=True, type=Path, help="fitted estimator, a joblib file (trusted)"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="training data: .csv with header, .parquet, .npz"
    )
    parser.add_argument("--target", help="label column of the data (enables holdout metrics)")
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("DRIFTGATE_REPOSITORY", "./models")),
        help="model repository directory (env DRIFTGATE_REPOSITORY; default ./models)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=10,
        help="bins per numeric feature: quantiles, or one per value if it has at most this many",
    )
    parser.add_argument(
        "--sample-rows", type=int, default=10_000, help="training rows stored for retraining"
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="share of rows (seeded split) for the parity check and holdout metrics; 0 = none",
    )
    parser.add_argument("--parity-rows", type=int, default=2_000, help="max rows checked")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity absolute tolerance")
    parser.add_argument("--rtol", type=float, default=1e-3, help="parity relative tolerance")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default domain)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the samples")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from driftgate.converter.convert import ConverterSettings, convert
    from driftgate.converter.parity import ParityError, Tolerance
    from driftgate.core.errors import DriftgateError

    settings = ConverterSettings(
        bins=args.bins,
        sample_rows=args.sample_rows,
        holdout_fraction=args.holdout_fraction,
        parity_rows=args.parity_rows,
        opset=args.opset,
        seed=args.seed,
        tolerance=Tolerance(atol=args.atol, rtol=args.rtol),
    )
    try:
        result = convert(
            args.estimator,
            args.data,
            args.model_name,
            args.repository,
            target=args.target,
            settings=settings,
        )
    except ParityError as exc:
        print(f"driftgate convert: parity check failed, nothing written\n{exc}", file=sys.stderr)
        return 2
    except DriftgateError as exc:
        print(f"driftgate convert: error: {exc.message}", file=sys.stderr)
        return 2
    print(f"wrote {result.model} version {result.version} to {result.path}")
    print(result.parity.format())
    metrics = result.metadata.get("holdout_metrics")
    if metrics:
        shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "source_description")
        print(f"holdout metrics: {shown} ({metrics.get('source_description')})")
    return 0

"""``driftgate convert``: the command-line front end of ``converter.convert``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from driftgate.core.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, add_command
from driftgate.core.objectstore import open_repository, repository_location

__all__ = ["register"]

_DESCRIPTION = """\
Convert a fitted scikit-learn estimator to ONNX and write it as the next version of
MODEL_NAME in the model repository, with model.json (metadata), reference.json (the
reference profile for drift monitoring), estimator.joblib and a training_sample.npz.

The estimator file is unpickled with joblib: it is TRUSTED INPUT, loading it runs code.

Parity check: ONNX Runtime and scikit-learn run on the held-out rows (or sampled rows when
--holdout-fraction is 0), both fed the same float32-rounded values. Labels must agree on at
least 99.9% of the rows; probabilities and regression values must satisfy
|onnx - sklearn| <= atol + rtol * |sklearn| (defaults atol=1e-4, rtol=1e-3). A failing check
writes nothing, prints a report (max error per output, worst rows) on stderr and exits 1.

exit codes:
  0  written
  1  refused: the parity check failed (nothing written)
  2  usage: bad arguments, an unsupported estimator, unreadable data or estimator

--json prints {"model", "version", "path", "parity": {"rows", "passed", "label_agreement",
"label_mismatches", "atol", "rtol", "min_label_agreement", "max_abs_error": {output: error},
...}, "holdout_metrics": {...} or null} on stdout; a failed parity check prints its
"parity" object the same way, with "written": false.
"""


def register(subparsers: Any) -> None:
    """Add the ``convert`` subcommand to the ``driftgate`` parser."""
    parser = add_command(
        subparsers,
        "convert",
        "convert a scikit-learn estimator into the next version of a model",
        description=_DESCRIPTION,
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
        type=repository_location,
        default=repository_location(os.environ.get("DRIFTGATE_REPOSITORY", "./models")),
        help="model repository: a directory or s3://BUCKET/PREFIX "
        "(DRIFTGATE_REPOSITORY; default ./models)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
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
    parser.add_argument("--parity-rows", type=int, default=2_000, help="most rows checked")
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
            open_repository(args.repository),
            target=args.target,
            settings=settings,
        )
    except ParityError as exc:
        if args.json:
            print_json({"written": False, "parity": exc.report.to_dict()})
        print(f"driftgate convert: parity check failed, nothing written\n{exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DriftgateError as exc:
        print(f"driftgate convert: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    metrics = result.metadata.get("holdout_metrics")
    if args.json:
        print_json(
            {"written": True, "model": result.model, "version": result.version,
             "path": str(result.path), "parity": result.parity.to_dict(),
             "holdout_metrics": metrics or None}
        )  # fmt: skip
        return EXIT_OK
    print(f"wrote {result.model} version {result.version} to {result.path}")
    print(result.parity.format())
    if metrics:
        shown = ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "source_description")
        print(f"holdout metrics: {shown} ({metrics.get('source_description')})")
    return EXIT_OK


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))

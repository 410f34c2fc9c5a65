"""The parity check: ONNX Runtime against scikit-learn on the same float32 rows.

Both sides see the same rows, with numeric values rounded to float32 (what a FP32 request
carries), so the check measures the converted graph, not input rounding.

Pass criteria (defaults, all configurable through ``Tolerance``):

* labels agree on at least 99.9% of the rows (``min_label_agreement=0.999``);
* every probability of every row whose label agrees, and every regression value, is within
  ``|onnx - sklearn| <= atol + rtol * |sklearn|`` with ``atol=1e-4``, ``rtol=1e-3``: float32
  arithmetic in the graph, not float64 as in scikit-learn, accounts for errors of about 1e-6.

A failing check raises ``ParityError`` whose ``report`` names each output with its maximum
absolute and relative error and lists the worst rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.core.errors import FailedPrecondition

__all__ = ["OutputError", "ParityError", "ParityReport", "Tolerance", "compare"]


@dataclass(frozen=True)
class Tolerance:
    """How close ONNX Runtime must come to scikit-learn."""

    atol: float = 1e-4  # absolute tolerance on probabilities and values
    rtol: float = 1e-3  # relative tolerance, times |sklearn value|
    min_label_agreement: float = 0.999  # share of rows whose labels must agree


@dataclass(frozen=True)
class OutputError:
    """Error figures of one output."""

    max_abs_error: float
    max_rel_error: float
    rows_out_of_tolerance: int


@dataclass(frozen=True)
class ParityReport:
    """What the check measured; ``passed`` says whether it met the tolerance."""

    rows: int
    tolerance: Tolerance
    outputs: dict[str, OutputError]
    label_agreement: float | None
    worst_rows: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "passed": self.passed,
            "label_agreement": self.label_agreement,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "min_label_agreement": self.tolerance.min_label_agreement,
            "max_abs_error": {k: v.max_abs_error for k, v in self.outputs.items()},
            "max_rel_error": {k: v.max_rel_error for k, v in self.outputs.items()},
            "rows_out_of_tolerance": {k: v.rows_out_of_tolerance for k, v in self.outputs.items()},
            "worst_rows": self.worst_rows,
        }

    def format(self) -> str:
        """A human-readable report, one line per output and per worst row."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"parity {verdict} on {self.rows} rows (atol={self.tolerance.atol:g}, "
                 f"rtol={self.tolerance.rtol:g})"]  # fmt: skip
        if self.label_agreement is not None:
            lines.append(
                f"  label: agreement {self.label_agreement:.4%} "
                f"(required {self.tolerance.min_label_agreement:.1%})"
            )
        for name, err in self.outputs.items():
            lines.append(
                f"  {name}: max abs error {err.max_abs_error:.3g}, max rel error "
                f"{err.max_rel_error:.3g}, {err.rows_out_of_tolerance} rows out of tolerance"
            )
        for row in [] if self.passed else self.worst_rows:
            lines.append(
                f"  worst row {row['row']} ({row['output']}): sklearn={row['sklearn']} "
                f"onnx={row['onnx']} error={row['error']:.3g}"
            )
        return "\n".join(lines)


class ParityError(FailedPrecondition):
    """ONNX Runtime disagrees with scikit-learn beyond the tolerance; nothing was written."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.format())
        self.report = report


def _errors(
    onnx_values: npt.NDArray[Any], sk_values: npt.NDArray[Any], tol: Tolerance
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Per-row max absolute error, max relative error, and whether the row is in tolerance."""
    onnx_2d = np.asarray(onnx_values, dtype=np.float64).reshape(len(sk_values), -1)
    sk_2d = np.asarray(sk_values, dtype=np.float64).reshape(len(sk_values), -1)
    diff = np.abs(onnx_2d - sk_2d)
    rel = diff / np.maximum(np.abs(sk_2d), np.finfo(np.float32).tiny)
    within = np.all(diff <= tol.atol + tol.rtol * np.abs(sk_2d), axis=1)
    return diff.max(axis=1), rel.max(axis=1), within


def _jsonable(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64).round(6).tolist()
    return str(value)


def _worst(
    name: str,
    per_row: npt.NDArray[np.float64],
    onnx_values: npt.NDArray[Any],
    sk_values: npt.NDArray[Any],
    count: int,
) -> list[dict[str, Any]]:
    order = np.argsort(-per_row, kind="stable")[:count]
    return [
        {
            "row": int(i),
            "output": name,
            "sklearn": _jsonable(sk_values[i]),
            "onnx": _jsonable(onnx_values[i]),
            "error": float(per_row[i]),
        }
        for i in order
        if per_row[i] > 0
    ]


def _output_error(
    per_row_abs: npt.NDArray[np.float64],
    per_row_rel: npt.NDArray[np.float64],
    within: npt.NDArray[np.bool_],
) -> OutputError:
    return OutputError(
        max_abs_error=float(per_row_abs.max(initial=0.0)),
        max_rel_error=float(per_row_rel.max(initial=0.0)),
        rows_out_of_tolerance=int((~within).sum()),
    )


def compare(
    onnx_outputs: dict[str, npt.NDArray[Any]],
    sklearn_outputs: dict[str, npt.NDArray[Any]],
    tol: Tolerance,
    worst: int = 5,
) -> ParityReport:
    """Compare outputs by name: ``label`` exactly, anything else numerically."""
    rows = len(next(iter(sklearn_outputs.values())))
    agree: npt.NDArray[np.bool_] = np.ones(rows, dtype=bool)
    label_agreement = None
    outputs: dict[str, OutputError] = {}
    worst_rows: list[dict[str, Any]] = []
    if "label" in sklearn_outputs:
        onnx_labels = np.asarray(onnx_outputs["label"]).ravel()
        sk_labels = np.asarray(sklearn_outputs["label"]).ravel()
        agree = np.array([str(a) == str(b) for a, b in zip(onnx_labels, sk_labels, strict=True)])
        label_agreement = float(agree.mean()) if rows else 1.0
        mismatch = (~agree).astype(np.float64)
        worst_rows += _worst("label", mismatch, onnx_labels, sk_labels, worst)
    passed = label_agreement is None or label_agreement >= tol.min_label_agreement
    for name, sk_values in sklearn_outputs.items():
        if name == "label":
            continue
        per_abs, per_rel, within = _errors(onnx_outputs[name], sk_values, tol)
        # Rows whose label flipped are already charged to the label-agreement budget.
        within = within | ~agree
        outputs[name] = _output_error(per_abs, per_rel, within)
        passed = passed and bool(within.all())
        worst_rows += _worst(name, per_abs, onnx_outputs[name], sk_values, worst)
    return ParityReport(rows, tol, outputs, label_agreement, worst_rows, passed)

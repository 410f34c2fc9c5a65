"""The parity check: ONNX Runtime against scikit-learn on the same float32 rows.

Both sides see the same rows, with numeric values rounded to float32 (what a FP32 request
carries), so the check measures the converted graph, not input rounding.

Pass criteria (defaults, all configurable through ``Tolerance``):

* labels agree on at least 99.9% of the rows (``min_label_agreement=0.999``), counted in
  rows: of 1,000 rows at most 1 may disagree;
* every value of every other output (probabilities, scores, regression values) of every row
  whose label agrees is within ``|onnx - sklearn| <= atol + rtol * |sklearn|`` (the rule of
  ``numpy.isclose``) with ``atol=1e-4``, ``rtol=1e-3``: float32 arithmetic in the graph, not
  float64 as in scikit-learn, accounts for errors of about 1e-6.

Figures per output (``OutputError``): the largest absolute error; the largest relative error
*where the reference is not near zero* (``|sklearn| > atol``: below it the absolute term of
the tolerance decides, and a relative error divided by a reference of 1e-38 says nothing);
and ``tolerance_used``, the largest ``|onnx - sklearn| / (atol + rtol * |sklearn|)``, the one
figure that says how close to failing the output came (at most 1 passes). A report names the
worst rows of each output with their inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from driftgate.converter.data import Table
from driftgate.converter.export import Layout
from driftgate.converter.support import CLASSIFICATION, REGRESSION, has_probabilities
from driftgate.core.errors import FailedPrecondition

__all__ = [
    "OutputError",
    "ParityError",
    "ParityReport",
    "Tolerance",
    "check_parity",
    "compare",
    "float32_rows",
    "sklearn_outputs",
]


@dataclass(frozen=True)
class Tolerance:
    """How close ONNX Runtime must come to scikit-learn."""

    atol: float = 1e-4  # absolute tolerance on probabilities, scores and values
    rtol: float = 1e-3  # relative tolerance, times |sklearn value|
    min_label_agreement: float = 0.999  # share of rows whose labels must agree

    def allowed_mismatches(self, rows: int) -> int:
        """Rows whose labels may disagree among ``rows`` (counted, so that 999 of 1,000
        meets 99.9% however the share rounds)."""
        return math.floor(rows * (1.0 - self.min_label_agreement) + 1e-9)


@dataclass(frozen=True)
class OutputError:
    """Error figures of one output (see the module docstring)."""

    max_abs_error: float
    max_rel_error: float  # where |sklearn| > atol; 0 if no value is
    tolerance_used: float  # max |error| / (atol + rtol |sklearn|); <= 1 is within
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
    label_mismatches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "passed": self.passed,
            "label_agreement": self.label_agreement,
            "label_mismatches": self.label_mismatches,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "min_label_agreement": self.tolerance.min_label_agreement,
            "max_abs_error": {k: v.max_abs_error for k, v in self.outputs.items()},
            "max_rel_error": {k: v.max_rel_error for k, v in self.outputs.items()},
            "tolerance_used": {k: v.tolerance_used for k, v in self.outputs.items()},
            "rows_out_of_tolerance": {k: v.rows_out_of_tolerance for k, v in self.outputs.items()},
            "worst_rows": self.worst_rows,
        }

    def format(self) -> str:
        """A human-readable report, one line per output and, when failed, per worst row."""
        t = self.tolerance
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"parity {verdict} on {self.rows} rows (|onnx - sklearn| <= {t.atol:g} + "
                 f"{t.rtol:g} * |sklearn|)"]  # fmt: skip
        if self.label_agreement is not None:
            lines.append(
                f"  label: agreement {self.label_agreement:.4%}, {self.label_mismatches} of "
                f"{self.rows} rows differ (required {t.min_label_agreement:.1%}: at most "
                f"{t.allowed_mismatches(self.rows)})"
            )
        for name, err in self.outputs.items():
            lines.append(
                f"  {name}: max abs error {err.max_abs_error:.3g}, max rel error "
                f"{err.max_rel_error:.3g} (where |sklearn| > {t.atol:g}), "
                f"{err.tolerance_used:.1%} of the tolerance used, "
                f"{err.rows_out_of_tolerance} rows out of tolerance"
            )
        for row in [] if self.passed else self.worst_rows:
            lines.append(
                f"  worst row {row['row']} ({row['output']}): sklearn={row['sklearn']} "
                f"onnx={row['onnx']} error={row['error']:.3g} input={row.get('input')}"
            )
        return "\n".join(lines)


class ParityError(FailedPrecondition):
    """ONNX Runtime disagrees with scikit-learn beyond the tolerance; nothing was written."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.format())
        self.report = report


@dataclass(frozen=True)
class _RowErrors:
    abs: npt.NDArray[np.float64]  # per row, max over the row's values
    rel: npt.NDArray[np.float64]  # per row, over values with |sklearn| > atol (else 0)
    used: npt.NDArray[np.float64]  # per row, max error / allowed error
    within: npt.NDArray[np.bool_]


def _errors(
    onnx_values: npt.NDArray[Any], sk_values: npt.NDArray[Any], tol: Tolerance
) -> _RowErrors:
    onnx_2d = np.asarray(onnx_values, dtype=np.float64).reshape(len(sk_values), -1)
    sk_2d = np.asarray(sk_values, dtype=np.float64).reshape(len(sk_values), -1)
    if onnx_2d.shape != sk_2d.shape:
        raise FailedPrecondition(
            f"ONNX output of shape {onnx_2d.shape} for scikit-learn's {sk_2d.shape}"
        )
    # NaN on both sides (a score scikit-learn leaves undefined) agrees; on one side it does not.
    both_nan = np.isnan(onnx_2d) & np.isnan(sk_2d)
    diff = np.where(both_nan, 0.0, np.abs(onnx_2d - sk_2d))
    diff = np.where(np.isnan(diff), np.inf, diff)
    magnitude = np.abs(np.nan_to_num(sk_2d))
    allowed = tol.atol + tol.rtol * magnitude
    away_from_zero = magnitude > tol.atol
    rel = np.where(away_from_zero, diff / np.where(away_from_zero, magnitude, 1.0), 0.0)
    used = diff / np.where(allowed > 0, allowed, np.finfo(np.float64).tiny)
    empty = sk_2d.shape[1] == 0
    return _RowErrors(
        diff.max(axis=1, initial=0.0),
        rel.max(axis=1, initial=0.0),
        used.max(axis=1, initial=0.0),
        np.ones(len(sk_2d), dtype=bool) if empty else np.all(diff <= allowed, axis=1),
    )


def _jsonable(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        return [
            None if not math.isfinite(v) else v
            for v in array.astype(np.float64).round(7).ravel().tolist()
        ]
    return str(value)


def _input_row(inputs: dict[str, npt.NDArray[Any]] | None, i: int) -> dict[str, Any] | None:
    if inputs is None:
        return None
    row: dict[str, Any] = {}
    for name, column in inputs.items():
        value = column[i]
        if isinstance(value, float | np.floating):
            row[name] = None if math.isnan(value) else float(value)
        else:
            row[name] = str(value)
    return row


def _worst(
    name: str,
    per_row: npt.NDArray[np.float64],
    error: npt.NDArray[np.float64],
    onnx_values: npt.NDArray[Any],
    sk_values: npt.NDArray[Any],
    count: int,
    inputs: dict[str, npt.NDArray[Any]] | None,
) -> list[dict[str, Any]]:
    order = np.argsort(-per_row, kind="stable")[:count]
    return [
        {
            "row": int(i),
            "output": name,
            "sklearn": _jsonable(sk_values[i]),
            "onnx": _jsonable(onnx_values[i]),
            "error": float(error[i]),
            "input": _input_row(inputs, int(i)),
        }
        for i in order
        if per_row[i] > 0
    ]


def _labels_agree(onnx: npt.NDArray[Any], sk: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    onnx_labels = np.asarray(onnx).ravel()
    sk_labels = np.asarray(sk).ravel()
    return np.array([str(a) == str(b) for a, b in zip(onnx_labels, sk_labels, strict=True)])


def compare(
    onnx_outputs: dict[str, npt.NDArray[Any]],
    sklearn_outputs: dict[str, npt.NDArray[Any]],
    tol: Tolerance,
    worst: int = 5,
    inputs: dict[str, npt.NDArray[Any]] | None = None,
) -> ParityReport:
    """Compare outputs by name: ``label`` exactly, anything else numerically. ``inputs``
    (feature name -> column, same rows) puts each worst row's input in the report."""
    rows = len(next(iter(sklearn_outputs.values())))
    agree: npt.NDArray[np.bool_] = np.ones(rows, dtype=bool)
    label_agreement = None
    outputs: dict[str, OutputError] = {}
    worst_rows: list[dict[str, Any]] = []
    if "label" in sklearn_outputs:
        agree = _labels_agree(onnx_outputs["label"], sklearn_outputs["label"])
        label_agreement = float(agree.mean()) if rows else 1.0
        mismatch = (~agree).astype(np.float64)
        worst_rows += _worst(
            "label", mismatch, mismatch, np.asarray(onnx_outputs["label"]).ravel(),
            np.asarray(sklearn_outputs["label"]).ravel(), worst, inputs,
        )  # fmt: skip
    mismatches = int((~agree).sum())
    passed = mismatches <= tol.allowed_mismatches(rows)
    for name, sk_values in sklearn_outputs.items():
        if name == "label":
            continue
        errors = _errors(onnx_outputs[name], sk_values, tol)
        # Rows whose label flipped are already charged to the label-agreement budget.
        within = errors.within | ~agree
        outputs[name] = OutputError(
            max_abs_error=float(errors.abs.max(initial=0.0)),
            max_rel_error=float(errors.rel.max(initial=0.0)),
            tolerance_used=float(np.where(agree, errors.used, 0.0).max(initial=0.0)),
            rows_out_of_tolerance=int((~within).sum()),
        )
        passed = passed and bool(within.all())
        worst_rows += _worst(
            name, errors.used, errors.abs, onnx_outputs[name], sk_values, worst, inputs
        )
    return ParityReport(rows, tol, outputs, label_agreement, worst_rows, passed, mismatches)


def float32_rows(table: Table) -> Table:
    """``table`` with its numeric values rounded to float32 (what a FP32 request carries)."""
    columns = tuple(
        c.astype(np.float32).astype(np.float64) if c.dtype.kind == "f" else c for c in table.columns
    )
    return Table(table.names, columns, table.target, table.target_name)


def sklearn_outputs(estimator: Any, inputs: Any, task: str) -> dict[str, npt.NDArray[Any]]:
    """scikit-learn's answers under the served output names (``support.output_names``)."""
    predicted = np.asarray(estimator.predict(inputs))
    if task == REGRESSION:
        return {"variable": predicted.astype(np.float64)}
    second = "probabilities" if has_probabilities(estimator) and task == CLASSIFICATION else None
    if second:
        return {"label": predicted, "probabilities": np.asarray(estimator.predict_proba(inputs))}
    scores = np.asarray(estimator.decision_function(inputs), dtype=np.float64)
    return {"label": predicted, "scores": scores.reshape(len(predicted), -1)}


_EXACT = Tolerance(atol=0.0, rtol=0.0, min_label_agreement=1.0)


def check_parity(
    session: Any, fitted: Any, served: Any, layout: Layout, rows: Table, task: str, s: Tolerance
) -> tuple[ParityReport, dict[str, npt.NDArray[Any]]]:
    """The graph against ``served`` (the copy it was made from) on the float32 ``rows``, and
    the graph's outputs; first, ``served`` against ``fitted`` exactly (ParityError if they
    differ at all)."""
    rows32 = float32_rows(rows)
    inputs = layout.sklearn_input(rows32)
    shown = dict(zip(rows32.names, rows32.columns, strict=True))
    expected = sklearn_outputs(served, inputs, task)
    adjusted = compare(expected, sklearn_outputs(fitted, inputs, task), _EXACT, inputs=shown)
    if not adjusted.passed:
        raise ParityError(adjusted)
    names = [o.name for o in session.get_outputs()]
    onnx_outputs = dict(zip(names, session.run(None, layout.feeds(rows32)), strict=True))
    return compare(onnx_outputs, expected, s, inputs=shown), onnx_outputs

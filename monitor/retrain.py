"""Retraining: the data, the trainer, the comparison with the stable version, the new version.

Data: the training sample stored with the stable version (``training_sample.npz``) plus the
labelled production rows of the policy's window, deduplicated by request id. A seeded random
``holdout_fraction`` of the production rows is kept out of training: the candidate and the
stable version are both scored on it (accuracy for classifiers, mean absolute error for
regressors), and the candidate is rejected when it is worse than the stable by more than
``tolerance``.

Trainer: a clone (``sklearn.base.clone``) of the stable version's ``estimator.joblib``,
fitted on the training split of ``converter.holdout_split`` so that the holdout metrics
``convert`` writes stay honest; or a user entry point ``module:function`` called with a
``converter.Table`` (names, columns, target) that returns a fitted estimator.

The fitting, scoring and conversion run in a subprocess (``python -m
driftgate.monitor.retrain_worker JOB.json RESULT.json``, see ``run_worker``) with a timeout, so
a slow or crashing trainer cannot take the monitor down; only an accepted candidate is
converted (``converter.convert``, parity-checked) and written as the next version.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftgate import converter
from driftgate.converter import Table
from driftgate.monitor.store import StoredPrediction

__all__ = [
    "RetrainJob",
    "RetrainResult",
    "assemble",
    "execute",
    "judge",
    "production_table",
    "run_worker",
]


@dataclass(frozen=True)
class RetrainJob:
    """Everything the worker needs, as JSON."""

    model: str
    repository: str
    stable: int
    train: str  # .npz of the training table
    holdout: str  # .npz of the holdout table
    trainer: str  # "module:function" or "" for a clone of the stable's estimator
    tolerance: float
    task: str  # classification or regression
    seed: int = 0


@dataclass(frozen=True)
class RetrainResult:
    """What the worker decided: succeeded (with the new version), rejected or failed."""

    outcome: str
    reason: str
    version: int = 0
    figures: dict[str, Any] | None = None


def production_table(
    records: list[StoredPrediction], features: list[tuple[str, bool]], target_kind: str
) -> Table:
    """Labelled records as a Table with the profile's columns; ``features`` is (name, numeric)
    in profile order, ``target_kind`` the numpy kind of the training target ("i", "f", "U")."""
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.label is None or record.request_id in seen:
            continue
        seen.add(record.request_id)
        unique.append(record)
    columns: list[Any] = []
    numeric_index = categorical_index = 0
    for _name, numeric in features:
        if numeric:
            i = numeric_index
            columns.append(np.array([r.numeric[i] for r in unique], dtype=np.float64))
            numeric_index += 1
        else:
            j = categorical_index
            columns.append(np.array([r.categorical[j] for r in unique], dtype=object))
            categorical_index += 1
    labels = [r.label for r in unique]
    if target_kind in "iub":
        target = np.array([int(v) for v in labels], dtype=np.int64)
    elif target_kind == "f":
        target = np.array([float(v) for v in labels], dtype=np.float64)
    else:
        target = np.array([str(v) for v in labels], dtype=object)
    return Table(tuple(n for n, _ in features), tuple(columns), target, "y")


def _concat(a: Table, b: Table) -> Table:
    b = b.select(a.names)
    columns = tuple(
        np.concatenate([x, y.astype(x.dtype)]) for x, y in zip(a.columns, b.columns, strict=True)
    )
    assert a.target is not None and b.target is not None
    target = np.concatenate([a.target, b.target.astype(a.target.dtype)])
    return Table(a.names, columns, target, a.target_name)


def assemble(
    sample: Table, production: Table, holdout_fraction: float, seed: int = 0
) -> tuple[Table, Table]:
    """(training table, holdout table): the holdout is a seeded random ``holdout_fraction``
    of the recent labelled ``production`` rows, the training table the sample plus the rest
    (a random rather than a newest-first split, so that a change that began recently is in
    both the training data and the holdout)."""
    train_rows, holdout_rows = converter.holdout_split(production.rows, holdout_fraction, seed)
    return _concat(sample, production.take(train_rows)), production.take(holdout_rows)


def score(task: str, y_true: Any, y_pred: Any) -> float:
    """Accuracy (classification) or mean absolute error (regression)."""
    if task == "classification":
        return float(np.mean(np.asarray(y_true).astype(str) == np.asarray(y_pred).astype(str)))
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def judge(task: str, candidate: float, stable: float, tolerance: float) -> tuple[bool, str]:
    """Is the candidate not worse than the stable beyond ``tolerance``?"""
    if task == "classification":
        ok = candidate >= stable - tolerance
        what = f"holdout accuracy {candidate:.3f} vs stable {stable:.3f}"
    else:
        ok = candidate <= stable + tolerance
        what = f"holdout MAE {candidate:.4g} vs stable {stable:.4g}"
    return (
        ok,
        f"{what} (tolerance {tolerance:g})" if ok else f"worse: {what} (tolerance {tolerance:g})",
    )


def _load(path: str) -> Table:
    return converter.load_table(path)


def _fit(job: RetrainJob, stable_estimator: Any, table: Table) -> Any:
    if job.trainer:
        module_name, _, function_name = job.trainer.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        return function(table)
    from sklearn.base import clone

    layout = converter.make_layout(stable_estimator, table)
    train_rows, _ = converter.holdout_split(table.rows, 0.2, job.seed)
    part = table.take(train_rows)
    return clone(stable_estimator).fit(layout.sklearn_input(part), part.target)


def _predict(estimator: Any, table: Table) -> Any:
    return estimator.predict(converter.make_layout(estimator, table).sklearn_input(table))


def execute(job: RetrainJob) -> RetrainResult:
    """Fit, compare on the holdout, and convert when accepted (runs in the worker)."""
    from driftgate.core.repository import Repository

    repository = Repository(Path(job.repository))
    stable_dir = repository.version_dir(job.model, job.stable)
    stable_estimator = converter.load_estimator(stable_dir / "estimator.joblib")
    train, holdout = _load(job.train), _load(job.holdout)
    candidate = _fit(job, stable_estimator, train)
    candidate_score = score(job.task, holdout.target, _predict(candidate, holdout))
    stable_score = score(job.task, holdout.target, _predict(stable_estimator, holdout))
    ok, reason = judge(job.task, candidate_score, stable_score, job.tolerance)
    figures = {
        "training_rows": train.rows,
        "holdout_rows": holdout.rows,
        "candidate_score": candidate_score,
        "stable_score": stable_score,
        "metric": "accuracy" if job.task == "classification" else "mae",
        "tolerance": job.tolerance,
        "trainer": job.trainer or f"clone of {type(stable_estimator).__name__}",
    }
    if not ok:
        return RetrainResult("rejected", reason, 0, figures)
    result = converter.convert(candidate, train, job.model, repository)
    figures["parity"] = result.parity.format()
    return RetrainResult("succeeded", reason, result.version, figures)


def run_worker(job: RetrainJob, workdir: Path, timeout: float) -> RetrainResult:
    """Run ``execute`` in the retraining worker process, killed after ``timeout`` s."""
    job_path, result_path = workdir / "job.json", workdir / "result.json"
    job_path.write_text(json.dumps(asdict(job)), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "driftgate.monitor.retrain_worker",
        str(job_path),
        str(result_path),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return RetrainResult("failed", f"the training subprocess timed out after {timeout:g} s")
    if result_path.is_file():
        data = json.loads(result_path.read_text(encoding="utf-8"))
        return RetrainResult(**data)
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return RetrainResult(
        "failed", f"the training subprocess exited {done.returncode}: {' | '.join(tail)}"
    )

"""Retraining: the data, the trainer, the judgement against the stable version, the new version.

Data: the training sample stored with the stable version (``training_sample.npz``) plus the
labelled production rows of the policy's window, deduplicated by request id, in time order.
The newest ``holdout_fraction`` of the production rows is the holdout: the candidate never
sees it, both versions predict it, and ``monitor.retrain_judge`` compares them row by row
(McNemar exact for classifiers, a paired t-test on absolute errors for regressors, the policy's
``tolerance`` as the non-inferiority margin, a holdout of the size a power calculation asks
for, or the candidate is refused as "insufficient evidence"). A time-ordered holdout judges
the candidate on the traffic it is about to serve, not on a mixture of old and new.

Trainer: a clone (``sklearn.base.clone``) of the stable version's ``estimator.joblib``, or a
user entry point ``module:function`` called with a ``converter.Table`` (names, columns,
target) that returns a fitted estimator; either is fitted on the whole training table (sample
plus the older production rows). ``convert`` then gets the holdout as ``holdout``, so the
``holdout_metrics`` of the new version (the monitor's accuracy baseline) are measured on rows
it was not trained on.

Reference: the new version's ``reference.json`` (what its traffic is tested for drift against)
is built from the labelled production rows it was trained on (the window's rows before the
holdout) when there are at least ``retrain.reference_min_rows`` of them (``reference_rows``),
else from the whole training table. The training table is mostly the stored sample of the old
training data (up to 10,000 rows) with a few hundred production rows: traffic whose shift
persists differs from that mixture almost as much as from the old data, and the drift test's
large windows would alarm on the new version too and retrain it again after every cooldown.
Production rows are today's traffic, so a persistent shift is no longer drift; the minimum
keeps the reference large enough for the test to stay sensitive (the reference's own noise
sets the smallest shift it can see: at 1,000 rows a KS critical value of about 0.07 on hour
windows, under the 0.10 of a 0.25-standard-deviation shift). The event and ``model.json``
say which (``reference_source``: ``"production"`` or ``"training"`` in the event,
``"reference"`` or ``"data"`` in ``model.json``'s ``training_data``, with the rows).

The fitting, scoring and conversion run in a subprocess (``python -m
driftgate.monitor.retrain_worker JOB.json RESULT.json``, see ``run_worker``) with a timeout, so
a slow or crashing trainer cannot take the monitor down; only an accepted candidate is
converted (``converter.convert``, parity-checked) and written as the next version.

The worker is contained (``RetrainLimits``): it leads a session and process group of its own,
which is killed as a whole (SIGTERM, then SIGKILL) on a timeout and after every run, so
joblib/loky or other grandchildren cannot outlive it and write a version late; it gets an
allow-listed environment (no ``DRIFTGATE_*`` variable, so no token), a lower CPU priority,
address-space and CPU-time limits, and its output goes to a file of which only the tail is
read.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftgate import converter
from driftgate.converter import Table
from driftgate.monitor.retrain_judge import (
    RetrainVerdict,
    insufficient_reason,
    rows_needed_classifier,
)
from driftgate.monitor.retrain_judge import judge as judge_paired
from driftgate.monitor.store import StoredPrediction

__all__ = [
    "RetrainJob",
    "RetrainLimits",
    "RetrainResult",
    "assemble",
    "execute",
    "production_table",
    "reference_rows",
    "run_worker",
    "worker_environment",
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
    tolerance: float  # the non-inferiority margin (retrain.tolerance)
    task: str  # classification or regression
    seed: int = 0
    alpha: float = 0.05  # level of the judge's test (retrain.alpha)
    power: float = 0.8  # power the holdout's size is calculated for (retrain.power)
    # The newest rows of the training table (its production rows, see ``assemble``) that the
    # new version's reference profile is built from; 0: the whole training table.
    reference_rows: int = 0


@dataclass(frozen=True)
class RetrainResult:
    """What the worker decided: succeeded (with the new version), rejected or failed."""

    outcome: str
    reason: str
    version: int = 0
    figures: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetrainLimits:
    """How the retraining worker is contained; every process of its group gets the limits.

    ``RetrainLimits(memory_bytes=16 * 2**30)`` for a trainer that needs more memory.
    """

    nice: int = 10
    """Added to the worker's CPU niceness (0 keeps the monitor's), so serving comes first."""
    memory_bytes: int | None = 8 * 2**30
    """Address-space limit (RLIMIT_AS) of each worker process; None for none."""
    cpu_seconds: float | None = None
    """CPU-time limit (RLIMIT_CPU) of each worker process; None: the timeout times the CPUs."""
    term_grace: float = 5.0
    """Seconds from SIGTERM to SIGKILL of the worker's process group on a timeout."""
    output_tail_bytes: int = 8192
    """Bytes read from the end of the worker's output file for a failure message."""
    pass_env: tuple[str, ...] = ()
    """Environment variables passed to the worker beyond the allow-list (none ``DRIFTGATE_``)."""

    def __post_init__(self) -> None:
        if self.nice < 0 or self.term_grace < 0 or self.output_tail_bytes < 0:
            raise ValueError("nice, term_grace and output_tail_bytes must not be negative")
        if (self.memory_bytes is not None and self.memory_bytes <= 0) or (
            self.cpu_seconds is not None and self.cpu_seconds <= 0
        ):
            raise ValueError("memory_bytes and cpu_seconds must be positive (or None)")
        secret = [name for name in self.pass_env if name.upper().startswith("DRIFTGATE_")]
        if secret:
            raise ValueError(f"the retraining worker never gets DRIFTGATE_ variables: {secret}")


def production_table(
    records: list[StoredPrediction], features: list[tuple[str, bool]], target_kind: str
) -> Table:
    """Labelled records as a Table with the profile's columns, oldest first; ``features`` is
    (name, numeric) in profile order, ``target_kind`` the numpy kind of the training target
    ("i", "f", "U")."""
    seen: set[str] = set()
    unique = []
    for record in sorted(records, key=lambda r: r.time):
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


def assemble(sample: Table, production: Table, holdout_fraction: float) -> tuple[Table, Table]:
    """(training table, holdout table): the holdout is the newest ``holdout_fraction`` of the
    labelled ``production`` rows (given oldest first, as ``production_table`` makes them), the
    training table the sample plus the older production rows."""
    count = min(max(round(production.rows * holdout_fraction), 1), production.rows)
    cut = production.rows - count if production.rows and holdout_fraction > 0 else production.rows
    rows = np.arange(production.rows)
    return _concat(sample, production.take(rows[:cut])), production.take(rows[cut:])


def reference_rows(production_training_rows: int, min_rows: int) -> int:
    """How many of the newest training rows (the production rows before the holdout) the new
    version's reference is built from: all of them when there are at least ``min_rows``
    (``retrain.reference_min_rows``), else 0 (the whole training table; see the module
    docstring)."""
    return production_training_rows if production_training_rows >= min_rows else 0


def _reference(train: Table, rows: int) -> Table | None:
    if not rows:
        return None
    if not 0 < rows <= train.rows:
        raise ValueError(f"reference_rows {rows} is not within the {train.rows} training rows")
    return train.take(np.arange(train.rows - rows, train.rows))


def _load(path: str) -> Table:
    return converter.load_table(path)


def _fit(job: RetrainJob, stable_estimator: Any, table: Table) -> Any:
    if job.trainer:
        module_name, _, function_name = job.trainer.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        return function(table)
    from sklearn.base import clone

    layout = converter.make_layout(stable_estimator, table)
    return clone(stable_estimator).fit(layout.sklearn_input(table), table.target)


def _predict(estimator: Any, table: Table) -> Any:
    return estimator.predict(converter.make_layout(estimator, table).sklearn_input(table))


def _result(outcome: str, verdict: RetrainVerdict, figures: dict[str, Any]) -> RetrainResult:
    return RetrainResult(outcome, verdict.reason, 0, figures | verdict.figures())


def execute(job: RetrainJob) -> RetrainResult:
    """Fit, judge on the holdout, and convert when accepted (runs in the worker)."""
    from driftgate.core.objectstore import open_repository

    repository = open_repository(job.repository)
    stable_dir = repository.version_dir(job.model, job.stable)
    stable_estimator = converter.load_estimator(stable_dir / "estimator.joblib")
    train, holdout = _load(job.train), _load(job.holdout)
    reference = _reference(train, job.reference_rows)
    figures: dict[str, Any] = {
        "training_rows": train.rows,
        "trainer": job.trainer or f"clone of {type(stable_estimator).__name__}",
    }
    fewest = rows_needed_classifier(0.0, job.tolerance, job.alpha, job.power)
    if job.task == "classification" and (fewest is None or holdout.rows < fewest):
        # Too few rows even for a candidate that rarely disagrees with the stable: no fit.
        figures |= {"insufficient": True, "holdout_rows": holdout.rows, "rows_needed": fewest,
                    "margin": job.tolerance, "alpha": job.alpha, "power": job.power}  # fmt: skip
        return RetrainResult("rejected", insufficient_reason(fewest, holdout.rows), 0, figures)
    stable_predictions = _predict(stable_estimator, holdout)
    candidate = _fit(job, stable_estimator, train)
    verdict = judge_paired(
        job.task, holdout.target, stable_predictions, _predict(candidate, holdout),
        job.tolerance, job.alpha, job.power,
    )  # fmt: skip
    if not verdict.accepted:
        return _result("rejected", verdict, figures)
    result = converter.convert(
        candidate, train, job.model, repository, holdout=holdout, reference=reference
    )
    figures = figures | verdict.figures() | {"parity": result.parity.format()}
    figures |= {
        "reference_source": "training" if reference is None else "production",
        "reference_rows": train.rows if reference is None else reference.rows,
    }
    return RetrainResult("succeeded", verdict.reason, result.version, figures)


# What the worker inherits: enough to find Python, its packages and the thread settings of
# the numeric libraries. Anything else (tokens, cloud credentials, *_FILE secrets) stays out.
_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE",
        "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
        "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONHASHSEED", "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS",
        "BLIS_NUM_THREADS", "LOKY_MAX_CPU_COUNT",
    }
)  # fmt: skip
_ENV_PREFIXES = ("LC_", "OMP_", "MKL_", "KMP_")


def worker_environment(environ: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """The retraining worker's environment: the allow-listed part of ``environ`` plus the
    ``pass_env`` names; never a ``DRIFTGATE_`` variable (the control and ingest tokens)."""
    extra = set(pass_env)
    return {
        name: value
        for name, value in environ.items()
        if not name.upper().startswith("DRIFTGATE_")
        and (name in _ENV_NAMES or name.startswith(_ENV_PREFIXES) or name in extra)
    }


def run_worker(
    job: RetrainJob, workdir: Path, timeout: float, limits: RetrainLimits | None = None
) -> RetrainResult:
    """Run ``execute`` in the contained retraining worker (see ``RetrainLimits``), killed with
    its whole process group after ``timeout`` s; its output is ``workdir/worker.log``."""
    limits = limits or RetrainLimits()
    job_path, result_path = workdir / "job.json", workdir / "result.json"
    job_path.write_text(json.dumps(asdict(job)), encoding="utf-8")
    log_path = workdir / "worker.log"
    command = [
        sys.executable, "-m", "driftgate.monitor.retrain_worker", str(job_path), str(result_path),
        *_limit_arguments(limits, timeout),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        # A session of its own: the group is killed as one, and a terminal's ^C is not its.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=worker_environment(os.environ, limits.pass_env), start_new_session=True,
        )  # fmt: skip
    try:
        finished = _exited(process.pid, timeout)
        if not finished:
            _signal_group(process.pid, signal.SIGTERM)
            _exited(process.pid, limits.term_grace)
    finally:
        # The exited leader is not reaped yet, so its pid still names the group: whatever the
        # worker left running (loky workers, a trainer's children) is killed, then reaped.
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    if not finished:
        return RetrainResult("failed", f"the training subprocess timed out after {timeout:g} s")
    return _outcome(process.returncode, result_path, log_path, limits)


def _limit_arguments(limits: RetrainLimits, timeout: float) -> list[str]:
    cpu_seconds = limits.cpu_seconds
    if cpu_seconds is None:  # never reached before the timeout; caps an orphaned worker
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cpu_seconds = max(timeout, 1.0) * (cpus or 1)
    arguments = ["--parent", str(os.getpid()), "--nice", str(limits.nice)]
    arguments += ["--cpu-seconds", str(math.ceil(cpu_seconds))]
    if limits.memory_bytes is not None:
        arguments += ["--memory-bytes", str(limits.memory_bytes)]
    return arguments


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit, leaving it unreaped (WNOWAIT)."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped by someone else: gone all the same
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.25)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, signum)


def _outcome(
    returncode: int, result_path: Path, log_path: Path, limits: RetrainLimits
) -> RetrainResult:
    if result_path.is_file():
        try:
            return RetrainResult(**json.loads(result_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            return RetrainResult("failed", f"the training subprocess wrote a bad result: {exc}")
    if returncode == -signal.SIGXCPU:
        how = "was stopped by its CPU-time limit (SIGXCPU)"
    elif returncode < 0:
        how = f"was killed by signal {-returncode}"
    else:
        how = f"exited {returncode}"
    tail = _tail(log_path, limits.output_tail_bytes)
    return RetrainResult("failed", f"the training subprocess {how}" + (f": {tail}" if tail else ""))


def _tail(path: Path, size: int) -> str:
    """The last lines of the at most ``size`` last bytes of ``path``, on one line."""
    with path.open("rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - size))
        text = file.read(size).decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(line[:300] for line in lines[-3:])

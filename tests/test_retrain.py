"""Retraining: the data it assembles, how it judges a candidate, and the worker's outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.converter.data import Table, save_table_npz, table_from_object
from driftgate.monitor.retrain import RetrainJob, assemble, judge, production_table, run_worker
from driftgate.monitor.store import StoredPrediction


def _record(request_id: str, x: float, colour: str, label: object) -> StoredPrediction:
    return StoredPrediction(request_id, "m", 1, 0.0, [x], [colour], 0, [], label=label)


def test_production_rows_are_labelled_deduplicated_and_in_profile_order() -> None:
    records = [
        _record("a", 1.0, "red", 1),
        _record("a", 1.0, "red", 1),  # the same request twice
        _record("b", 2.0, "blue", None),  # no label yet
        _record("c", 3.0, "green", 0),
    ]
    table = production_table(records, [("size", True), ("colour", False)], "i")
    assert table.names == ("size", "colour")
    assert table.columns[0].tolist() == [1.0, 3.0]
    assert table.columns[1].tolist() == ["red", "green"]
    assert table.target is not None and table.target.tolist() == [1, 0]


def test_assemble_keeps_a_holdout_of_production_rows_out_of_training() -> None:
    sample = Table(("x",), (np.arange(10.0),), np.zeros(10, np.int64), "y")
    production = Table(("x",), (np.arange(100.0, 200.0),), np.ones(100, np.int64), "y")
    train, holdout = assemble(sample, production, holdout_fraction=0.25, seed=3)
    assert holdout.rows == 25 and train.rows == 10 + 75
    held = set(holdout.columns[0].tolist())
    assert held <= set(production.columns[0].tolist())
    assert not held & set(train.columns[0].tolist())
    assert set(range(10)) <= set(train.columns[0].tolist())  # the stored sample is kept


@pytest.mark.parametrize(
    ("task", "candidate", "stable", "accepted"),
    [
        ("classification", 0.90, 0.90, True),
        ("classification", 0.895, 0.90, True),  # within the tolerance of 0.01
        ("classification", 0.88, 0.90, False),
        ("regression", 1.005, 1.0, True),  # MAE: lower is better
        ("regression", 1.05, 1.0, False),
    ],
)
def test_judge(task: str, candidate: float, stable: float, accepted: bool) -> None:
    ok, reason = judge(task, candidate, stable, tolerance=0.01)
    assert ok is accepted
    assert reason.startswith("worse: ") is not accepted
    assert "tolerance 0.01" in reason


@pytest.fixture
def job(tmp_path: Path) -> RetrainJob:
    x, y = make_classification(600, 4, n_informative=3, n_redundant=0, random_state=2)
    x = x.astype(np.float32).round(2)
    repository = tmp_path / "models"
    convert(LogisticRegression(max_iter=500).fit(x, y), x, "m", repository, labels=y)
    table = table_from_object(x, y)
    save_table_npz(table.take(np.arange(450)), tmp_path / "train.npz")
    save_table_npz(table.take(np.arange(450, 600)), tmp_path / "holdout.npz")
    (tmp_path / "trainers.py").write_text(
        "import time\n"
        "import numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "def slow(table):\n    time.sleep(60)\n"
        "def shuffled(table):  # learns noise: labels in a random order\n"
        "    y = np.random.default_rng(0).permutation(table.target)\n"
        "    return LogisticRegression().fit(np.column_stack(table.columns), y)\n"
    )
    return RetrainJob(
        "m", str(repository), 1, str(tmp_path / "train.npz"), str(tmp_path / "holdout.npz"),
        trainer="", tolerance=0.02, task="classification",
    )  # fmt: skip


def _with_trainer(job: RetrainJob, trainer: str) -> RetrainJob:
    return RetrainJob(**{**job.__dict__, "trainer": trainer})


@pytest.mark.integration  # a training subprocess
def test_worker_outcomes(job: RetrainJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).resolve().parent.parent}")
    accepted = run_worker(job, _workdir(tmp_path, "clone"), timeout=120)
    assert accepted.outcome == "succeeded" and accepted.version == 2, accepted.reason
    assert (Path(job.repository) / "m" / "2" / "model.onnx").is_file()
    assert accepted.figures is not None and accepted.figures["holdout_rows"] == 150

    rejected = run_worker(_with_trainer(job, "trainers:shuffled"), _workdir(tmp_path, "c"), 120)
    assert rejected.outcome == "rejected" and rejected.reason.startswith("worse: ")
    assert not (Path(job.repository) / "m" / "3").exists()  # nothing written

    slow = run_worker(_with_trainer(job, "trainers:slow"), _workdir(tmp_path, "slow"), 3)
    assert slow.outcome == "failed" and "timed out after 3 s" in slow.reason

    broken = run_worker(_with_trainer(job, "trainers:missing"), _workdir(tmp_path, "b"), 120)
    assert broken.outcome == "failed" and "missing" in broken.reason


def _workdir(root: Path, name: str) -> Path:
    path = root / f"work-{name}"
    path.mkdir()
    return path

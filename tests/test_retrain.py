"""Retraining: the data it assembles, how it judges a candidate, and the worker's outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate import converter
from driftgate.converter import bin_index, convert
from driftgate.converter.data import Table, save_table_npz, table_from_object
from driftgate.monitor.retrain import (
    RetrainJob,
    RetrainLimits,
    assemble,
    execute,
    production_table,
    run_worker,
    worker_environment,
)
from driftgate.monitor.retrain_judge import judge, rows_needed_classifier
from driftgate.monitor.store import StoredPrediction


def _record(
    request_id: str, x: float, colour: str, label: object, time: float = 0.0
) -> StoredPrediction:
    return StoredPrediction(request_id, "m", 1, time, [x], [colour], 0, [], label=label)


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


def test_production_rows_are_oldest_first() -> None:
    records = [_record("late", 2.0, "red", 1, time=20.0), _record("early", 1.0, "red", 0, 10.0)]
    table = production_table(records, [("size", True), ("colour", False)], "i")
    assert table.columns[0].tolist() == [1.0, 2.0]


def test_assemble_holds_out_the_newest_production_rows() -> None:
    sample = Table(("x",), (np.arange(10.0),), np.zeros(10, np.int64), "y")
    production = Table(("x",), (np.arange(100.0, 200.0),), np.ones(100, np.int64), "y")
    train, holdout = assemble(sample, production, holdout_fraction=0.25)
    assert holdout.columns[0].tolist() == list(np.arange(175.0, 200.0))  # the newest 25
    assert train.columns[0].tolist() == list(np.arange(10.0)) + list(np.arange(100.0, 175.0))


def _paired_outcomes(rows: int, both: float, candidate_only: float, stable_only: float, seed=0):
    """Labels and two versions' predictions with the given shares of rows each gets right."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, rows, p=[both, candidate_only, stable_only,
                                  1 - both - candidate_only - stable_only])  # fmt: skip
    truth = rng.integers(0, 2, rows)
    stable = np.where((kind == 0) | (kind == 2), truth, 1 - truth)
    candidate = np.where((kind == 0) | (kind == 1), truth, 1 - truth)
    return truth, stable, candidate


def test_a_worse_classifier_is_rejected_with_the_paired_test_figures() -> None:
    # 5 points less accurate on the same 5,000 rows: candidate alone right on 5%, stable on 10%.
    truth, stable, candidate = _paired_outcomes(5000, 0.75, 0.05, 0.10)
    verdict = judge("classification", truth, stable, candidate, tolerance=0.02)
    assert not verdict.accepted and not verdict.insufficient
    assert verdict.reason.startswith("not shown to be no worse than the stable")
    figures = verdict.figures()
    assert figures["test"] == "McNemar exact, non-inferiority"
    assert figures["holdout_rows"] == 5000 and figures["rows_needed"] <= 5000
    assert figures["candidate_only_right"] + figures["stable_only_right"] == figures["discordant"]
    assert figures["stable_only_right"] > figures["candidate_only_right"]
    assert figures["p_value"] > 0.5 and figures["candidate_score"] < figures["stable_score"]


def test_an_equally_accurate_classifier_is_accepted() -> None:
    truth, stable, candidate = _paired_outcomes(5000, 0.80, 0.05, 0.05)
    verdict = judge("classification", truth, stable, candidate, tolerance=0.02)
    assert verdict.accepted and verdict.p_value is not None and verdict.p_value < 0.05


def test_too_few_rows_are_insufficient_evidence_whatever_the_candidate() -> None:
    truth, stable, candidate = _paired_outcomes(200, 0.70, 0.25, 0.0)  # far better
    verdict = judge("classification", truth, stable, candidate, tolerance=0.02)
    discordance = verdict.figures()["discordant"] / 200
    needed = rows_needed_classifier(discordance, 0.02, 0.05, 0.8)
    assert needed is not None and needed > 200
    assert not verdict.accepted and verdict.insufficient
    assert verdict.reason == f"insufficient evidence: {needed} holdout rows needed, 200 had"
    assert verdict.figures()["rows_needed"] == needed and verdict.p_value is None


def test_regressors_are_judged_on_paired_absolute_errors() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=4000)
    stable = truth + rng.normal(size=4000)
    equal = truth + rng.normal(size=4000)
    worse = truth + 1.2 * rng.normal(size=4000)  # MAE 20% higher
    ok = judge("regression", truth, stable, equal, tolerance=0.1)
    assert ok.accepted and ok.test == "paired t-test on absolute errors, non-inferiority"
    bad = judge("regression", truth, stable, worse, tolerance=0.1)
    assert not bad.accepted and bad.candidate_score > bad.stable_score
    assert bad.figures()["margin"] == pytest.approx(0.1 * bad.stable_score)
    few = judge("regression", truth[:30], stable[:30], equal[:30], tolerance=0.1)
    assert few.insufficient and few.reason.startswith("insufficient evidence: ")


@pytest.fixture
def job(tmp_path: Path) -> RetrainJob:
    x, y = make_classification(1000, 4, n_informative=3, n_redundant=0, random_state=2)
    x = x.astype(np.float32)
    repository = tmp_path / "models"
    convert(LogisticRegression(max_iter=500).fit(x, y), x, "m", repository, labels=y)
    table = table_from_object(x, y)
    save_table_npz(table.take(np.arange(600)), tmp_path / "train.npz")
    save_table_npz(table.take(np.arange(600, 1000)), tmp_path / "holdout.npz")
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
        trainer="", tolerance=0.1, task="classification",
    )  # fmt: skip


def _with_trainer(job: RetrainJob, trainer: str) -> RetrainJob:
    return RetrainJob(**{**job.__dict__, "trainer": trainer})


@pytest.mark.integration  # a training subprocess
def test_worker_outcomes(job: RetrainJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).resolve().parent.parent}")
    accepted = run_worker(job, _workdir(tmp_path, "clone"), timeout=120)
    assert accepted.outcome == "succeeded" and accepted.version == 2, accepted.reason
    assert (Path(job.repository) / "m" / "2" / "model.onnx").is_file()
    assert accepted.figures is not None and accepted.figures["holdout_rows"] == 400

    rejected = run_worker(_with_trainer(job, "trainers:shuffled"), _workdir(tmp_path, "c"), 120)
    # Half its predictions differ from the stable's: 400 rows are short of the ~410 needed at
    # that discordance, so it is refused either as worse or as insufficient evidence.
    assert rejected.outcome == "rejected"
    assert rejected.reason.startswith(("not shown to be no worse", "insufficient evidence"))
    assert rejected.figures is not None and rejected.figures["test"].startswith("McNemar")
    assert rejected.figures["candidate_score"] < rejected.figures["stable_score"]
    assert not (Path(job.repository) / "m" / "3").exists()  # nothing written

    slow = run_worker(_with_trainer(job, "trainers:slow"), _workdir(tmp_path, "slow"), 3)
    assert slow.outcome == "failed" and "timed out after 3 s" in slow.reason

    broken = run_worker(_with_trainer(job, "trainers:missing"), _workdir(tmp_path, "b"), 120)
    assert broken.outcome == "failed" and "missing" in broken.reason


def _workdir(root: Path, name: str) -> Path:
    path = root / f"work-{name}"
    path.mkdir()
    return path


# -- containment of the worker -------------------------------------------------------------

# Trainers for the containment tests; {out} is a directory the test reads afterwards (the
# worker's environment is scrubbed, so the path cannot come from a variable).
_CONTAINMENT_TRAINERS = """
import json, multiprocessing, os, resource, signal, subprocess, sys, time
from pathlib import Path

OUT = Path({out!r})
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _record(role):
    (OUT / f"{{role}}-{{os.getpid()}}").write_text(str(os.getpgid(0)))


def _stubborn_child():  # a multiprocessing child that ignores SIGTERM and has a child too
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _record("mp-child")
    subprocess.Popen([sys.executable, "-c", STUBBORN])
    time.sleep(600)


def spawning(table):  # grandchildren, then longer than any timeout
    _record("worker")
    multiprocessing.get_context("spawn").Process(target=_stubborn_child).start()
    child = subprocess.Popen([sys.executable, "-c", STUBBORN])
    (OUT / f"sub-child-{{child.pid}}").write_text(str(os.getpgid(0)))
    time.sleep(600)


def leaves_child(table):  # fails at once, leaving a child behind
    _record("worker")
    child = subprocess.Popen([sys.executable, "-c", STUBBORN])
    (OUT / f"sub-child-{{child.pid}}").write_text(str(os.getpgid(0)))
    raise RuntimeError("gave up")


def inspect(table):  # what the worker runs with
    tasks = Path("/proc/self/task").iterdir()
    nice = {{int(t.joinpath("stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}}
    (OUT / "inspect.json").write_text(json.dumps({{
        "environ": dict(os.environ), "thread_nice": sorted(nice), "pid": os.getpid(),
        "pgid": os.getpgid(0), "sid": os.getsid(0),
        "as": resource.getrlimit(resource.RLIMIT_AS),
        "cpu": resource.getrlimit(resource.RLIMIT_CPU),
        "core": resource.getrlimit(resource.RLIMIT_CORE),
    }}))
    raise RuntimeError("inspected")


def chatty(table):  # megabytes of output, then a hard exit with no result
    for i in range(20_000):
        print(f"line {{i}} " + "x" * 250, flush=(i % 1000 == 0))
        print(f"err {{i}} " + "y" * 250, file=sys.stderr)
    sys.stdout.flush()
    print("the last words", file=sys.stderr, flush=True)
    os._exit(3)


def hungry(table):  # more memory than the limit allows
    import numpy as np
    return np.ones(2 * 2**30 // 8)


def spinning(table):  # CPU until the CPU-time limit
    while True:
        pass
"""


@pytest.fixture
def contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Writes the containment trainers and puts them on the worker's path; returns the
    directory they record into."""
    out = tmp_path / "out"
    out.mkdir()
    source = _CONTAINMENT_TRAINERS.format(out=str(out))
    (tmp_path / "containment_trainers.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).resolve().parent.parent}")
    return out


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command: [state, ppid, pgrp, session, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (an orphan's zombie waits for an init
    that may never reap it, and is harmless)."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _group_dies(pgid: int, within: float = 5.0) -> bool:
    """Whether every process of ``pgid`` is gone within ``within`` s (a killed process takes
    a moment to release its memory and exit, longer on a loaded machine)."""
    deadline = time.monotonic() + within
    while _live_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _recorded(out: Path) -> dict[str, int]:
    """role-pid file name -> the process group the process recorded."""
    return {path.name: int(path.read_text()) for path in out.iterdir() if "-" in path.name}


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


@linux_only
@pytest.mark.integration  # a training subprocess with children
def test_a_timeout_kills_the_whole_process_group(job: RetrainJob, contained: Path) -> None:
    limits = RetrainLimits(term_grace=1.0)
    started = time.monotonic()
    # Long enough for the worker to start its trainer and the children on a loaded machine.
    spawning = _with_trainer(job, "containment_trainers:spawning")
    result = run_worker(spawning, _workdir(contained.parent, "t"), 15, limits)
    assert result.outcome == "failed" and "timed out after 15 s" in result.reason
    assert time.monotonic() - started < 15 + 1 + 5
    recorded = _recorded(contained)
    roles = {name.rsplit("-", 1)[0] for name in recorded}
    assert roles == {"worker", "mp-child", "sub-child"}, recorded  # the trainer got that far
    (pgid,) = set(recorded.values())  # all of them in the worker's group ...
    worker = next(int(n.rsplit("-", 1)[1]) for n in recorded if n.startswith("worker-"))
    assert pgid == worker and pgid != os.getpgid(0)  # ... which is the worker's own
    assert _group_dies(pgid)  # SIGTERM ignored, SIGKILL did it; grandchildren too


@linux_only
@pytest.mark.integration
def test_what_a_finished_worker_leaves_running_is_killed(job: RetrainJob, contained: Path) -> None:
    result = run_worker(
        _with_trainer(job, "containment_trainers:leaves_child"), _workdir(contained.parent, "l"), 60
    )
    assert result.outcome == "failed" and result.reason == "RuntimeError: gave up"
    (pgid,) = set(_recorded(contained).values())
    assert _group_dies(pgid)


@linux_only
@pytest.mark.integration
def test_the_worker_gets_no_token_a_lower_priority_and_limits(
    job: RetrainJob, contained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "DRIFTGATE_CONTROL_TOKEN": "operator-secret",
        "DRIFTGATE_INGEST_TOKEN": "ingest-secret",
        "DRIFTGATE_CONTROL_TOKEN_FILE": "/run/secrets/control",
        "DRIFTGATE_INGEST_TOKEN_FILE": "/run/secrets/ingest",
        "AWS_SECRET_ACCESS_KEY": "cloud-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TRAINER_SETTING", "passed on request")
    limits = RetrainLimits(memory_bytes=6 * 2**30, cpu_seconds=500, pass_env=("TRAINER_SETTING",))
    inspect = _with_trainer(job, "containment_trainers:inspect")
    result = run_worker(inspect, _workdir(contained.parent, "i"), 60, limits)
    assert result.reason == "RuntimeError: inspected"
    seen = json.loads((contained / "inspect.json").read_text())
    environ = seen["environ"]
    assert not set(secrets) & set(environ)
    assert not [v for v in environ.values() if "secret" in v]
    assert environ["OMP_NUM_THREADS"] == "1" and environ["TRAINER_SETTING"] == "passed on request"
    assert environ["PATH"] == os.environ["PATH"] and "PYTHONPATH" in environ
    assert seen["thread_nice"] == [min(os.nice(0) + 10, 19)]  # every thread, numpy's too
    assert seen["pgid"] == seen["sid"] == seen["pid"]  # a session and group of its own
    assert seen["as"] == [6 * 2**30, 6 * 2**30]
    assert seen["cpu"] == [500, 510] and seen["core"] == [0, 0]


@pytest.mark.integration
def test_captured_output_is_bounded(job: RetrainJob, contained: Path) -> None:
    workdir = _workdir(contained.parent, "c")
    result = run_worker(_with_trainer(job, "containment_trainers:chatty"), workdir, 60)
    assert (workdir / "worker.log").stat().st_size > 10_000_000  # went to a file ...
    assert result.outcome == "failed"
    assert result.reason.startswith("the training subprocess exited 3: ")
    assert result.reason.endswith("the last words")
    assert len(result.reason) < 1200  # ... of which only the tail was read


@pytest.mark.integration
def test_memory_and_cpu_limits_stop_the_trainer(job: RetrainJob, contained: Path) -> None:
    hungry = run_worker(
        _with_trainer(job, "containment_trainers:hungry"), _workdir(contained.parent, "h"), 60,
        RetrainLimits(memory_bytes=2 * 2**30),
    )  # fmt: skip
    assert hungry.outcome == "failed" and "MemoryError" in hungry.reason, hungry.reason
    spinning = run_worker(
        _with_trainer(job, "containment_trainers:spinning"), _workdir(contained.parent, "s"), 60,
        RetrainLimits(cpu_seconds=4),
    )  # fmt: skip
    assert spinning.outcome == "failed"
    assert "CPU-time limit" in spinning.reason, spinning.reason


_ORPHANED_MONITOR = """
import json, sys
from pathlib import Path
from driftgate.monitor.retrain import RetrainJob, run_worker
job = RetrainJob(**json.loads(sys.argv[1]))
run_worker(job, Path(sys.argv[2]), 600)
"""


@linux_only
@pytest.mark.integration
def test_a_worker_whose_monitor_dies_kills_its_group(job: RetrainJob, contained: Path) -> None:
    spawning = _with_trainer(job, "containment_trainers:spawning")
    monitor = subprocess.Popen(
        [sys.executable, "-c", _ORPHANED_MONITOR, json.dumps(asdict(spawning)),
         str(_workdir(contained.parent, "o"))],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_recorded(contained)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        recorded = _recorded(contained)
        assert len(recorded) == 3, recorded
    finally:
        monitor.kill()  # the monitor crashes: no timeout, no group kill from it
        monitor.wait()
    (pgid,) = set(recorded.values())
    assert _group_dies(pgid, within=10)  # the worker saw its parent go: 1 s polls


def test_the_worker_environment_is_an_allow_list() -> None:
    environ = {
        "PATH": "/usr/bin", "HOME": "/home/m", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/opt/trainers", "TMPDIR": "/scratch", "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2", "DRIFTGATE_CONTROL_TOKEN": "t", "DRIFTGATE_INGEST_TOKEN": "t",
        "DRIFTGATE_CONTROL_TOKEN_FILE": "/s", "DRIFTGATE_REPOSITORY": "/models",
        "GITHUB_TOKEN": "t", "PGPASSWORD": "p", "SSH_AUTH_SOCK": "/tmp/agent",
        "KUBERNETES_SERVICE_HOST": "10.0.0.1", "EXTRA": "x",
    }  # fmt: skip
    assert worker_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/home/m", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/opt/trainers", "TMPDIR": "/scratch", "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
    }  # fmt: skip
    assert worker_environment(environ, ["EXTRA", "DRIFTGATE_CONTROL_TOKEN"])["EXTRA"] == "x"
    assert "DRIFTGATE_CONTROL_TOKEN" not in worker_environment(environ, ["DRIFTGATE_CONTROL_TOKEN"])
    with pytest.raises(ValueError, match="DRIFTGATE_"):
        RetrainLimits(pass_env=("DRIFTGATE_INGEST_TOKEN",))


# -- retraining in process (``execute``, what the worker runs) ---------------------------

TREE_ENSEMBLES = {
    "random-forest": ("RandomForestClassifier", "RandomForestRegressor", {"n_estimators": 8}),
    "extra-trees": ("ExtraTreesClassifier", "ExtraTreesRegressor", {"n_estimators": 8}),
    "gradient-boosting": (
        "GradientBoostingClassifier", "GradientBoostingRegressor", {"n_estimators": 10},
    ),
    "hist-gradient-boosting": (
        "HistGradientBoostingClassifier", "HistGradientBoostingRegressor", {"max_iter": 10},
    ),
}  # fmt: skip


def _unrounded(rows: int, seed: int, task: str) -> Table:
    """Unrounded float64 rows, one feature narrow on a large offset, so that neighbouring
    values are neighbouring float32 values (tree thresholds fall between them)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    x[:, 0] = 50_000 + x[:, 0] * 0.5
    signal = (x[:, 0] - 50_000) * 2 + x[:, 1]
    y = (signal > 0).astype(np.int64) if task == "classification" else signal * 3
    return table_from_object(x, y)


def _retrain_job(tmp_path: Path, estimator, task: str, production: Table, **overrides):
    """Version 1 of ``estimator`` fitted on 400 rows, then a job on ``production`` rows."""
    first = _unrounded(400, 0, task)
    repository = tmp_path / "models"
    fitted = estimator.fit(np.column_stack(first.columns), first.target)
    convert(fitted, first, "m", repository)
    sample = converter.load_table(repository / "m" / "1" / "training_sample.npz")
    train, holdout = assemble(sample, production, holdout_fraction=0.5)
    save_table_npz(train, tmp_path / "train.npz")
    save_table_npz(holdout, tmp_path / "holdout.npz")
    fields = {"trainer": "", "tolerance": 0.1, "task": task} | overrides
    job = RetrainJob("m", str(repository), 1, str(tmp_path / "train.npz"),
                     str(tmp_path / "holdout.npz"), **fields)  # fmt: skip
    return job, train, holdout


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", sorted(TREE_ENSEMBLES))
def test_each_tree_ensemble_retrains_on_unrounded_float64_data(tmp_path, family, task):
    from sklearn import ensemble

    classifier, regressor, params = TREE_ENSEMBLES[family]
    estimator = getattr(ensemble, classifier if task == "classification" else regressor)
    production = _unrounded(600, 1, task)
    # Wide margins (10 accuracy points, half the stable's MAE): this test is about parity on
    # unrounded data; the judge's power on few rows has tests of its own.
    tolerance = 0.1 if task == "classification" else 0.5
    job, train, holdout = _retrain_job(tmp_path, estimator(random_state=0, **params), task,
                                       production, tolerance=tolerance)  # fmt: skip
    result = execute(job)
    assert result.outcome == "succeeded" and result.version == 2, result.reason
    assert result.figures is not None and result.figures["holdout_rows"] == 300
    version = Path(job.repository) / "m" / "2"
    meta = json.loads((version / "model.json").read_text())
    assert meta["parity"]["passed"]
    if task == "classification":
        assert meta["parity"]["label_agreement"] == 1.0
    # The baseline is measured on the holdout, which the candidate never saw.
    assert meta["holdout_metrics"]["source"] == "holdout"
    assert meta["holdout_metrics"]["rows"] == holdout.rows
    # The reference is the rows the candidate was trained on: sample plus older production.
    reference = json.loads((version / "reference.json").read_text())
    assert reference["rows"] == train.rows == 400 + 300
    for feature in reference["features"]:
        served = train.column(feature["name"]).astype(np.float32).astype(np.float64)
        counts = np.bincount(bin_index(feature["edges"], served), minlength=len(feature["counts"]))
        assert counts.tolist() == feature["counts"]


def test_the_new_reference_holds_a_persistent_shift(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    production = _unrounded(800, 1, "classification")
    shifted = production.columns[1] + 3.0  # a feature that moved and stays moved
    production = Table(production.names, (production.columns[0], shifted, production.columns[2]),
                       production.target, production.target_name)  # fmt: skip
    job, train, _ = _retrain_job(tmp_path, RandomForestClassifier(8, random_state=0),
                                 "classification", production)  # fmt: skip
    result = execute(job)
    assert result.outcome == "succeeded", result.reason
    old, new = (
        json.loads((Path(job.repository) / "m" / v / "reference.json").read_text())
        for v in ("1", "2")
    )
    moved = {f["name"]: f for f in new["features"]}["x1"]
    before = {f["name"]: f for f in old["features"]}["x1"]
    # Shifted training rows (400 of 800) are in the new reference, none in the old one.
    assert moved["max"] > before["max"] + 2.0
    above = np.sum(np.asarray(moved["counts"])[np.searchsorted(moved["edges"], 2.0) :])
    assert above >= 0.4 * train.rows


def test_a_worse_candidate_is_rejected_and_nothing_is_written(tmp_path, monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    (tmp_path / "noisy_trainer.py").write_text(
        "import numpy as np\n"
        "from sklearn.ensemble import RandomForestClassifier\n"
        "def fit(table):  # a fifth of the labels flipped\n"
        "    y = table.target.copy()\n"
        "    flip = np.random.default_rng(0).random(len(y)) < 0.2\n"
        "    y[flip] = 1 - y[flip]\n"
        "    return RandomForestClassifier(8, max_depth=3, random_state=0).fit(\n"
        "        np.column_stack(table.columns), y)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    job, _, holdout = _retrain_job(
        tmp_path, RandomForestClassifier(8, random_state=0), "classification",
        _unrounded(3000, 1, "classification"), trainer="noisy_trainer:fit", tolerance=0.05,
    )  # fmt: skip
    result = execute(job)
    assert result.outcome == "rejected"
    assert result.reason.startswith("not shown to be no worse than the stable")
    figures = result.figures
    assert figures is not None and figures["test"] == "McNemar exact, non-inferiority"
    assert figures["holdout_rows"] == holdout.rows == 1500
    assert figures["p_value"] > 0.05 and figures["candidate_score"] < figures["stable_score"]
    assert not (Path(job.repository) / "m" / "2").exists()


def test_a_candidate_on_too_few_rows_is_insufficient_evidence(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    job, _, _ = _retrain_job(
        tmp_path, RandomForestClassifier(8, random_state=0), "classification",
        _unrounded(200, 1, "classification"), tolerance=0.02,
    )  # fmt: skip
    result = execute(job)
    assert result.outcome == "rejected"
    assert result.reason.startswith("insufficient evidence: ")
    assert result.reason.endswith(" holdout rows needed, 100 had")
    assert result.figures is not None and result.figures["rows_needed"] > 100
    assert not (Path(job.repository) / "m" / "2").exists()


def test_the_judges_settings_come_from_the_retrain_policy() -> None:
    from driftgate.monitor.policy import PolicyError, parse_policy

    defaults = parse_policy({}).retrain
    assert (defaults.tolerance, defaults.false_accept, defaults.power) == (0.02, 0.05, 0.8)
    custom = parse_policy({"retrain": {"false_accept": 0.01, "power": 0.9}}).retrain
    assert (custom.false_accept, custom.power) == (0.01, 0.9)
    with pytest.raises(PolicyError, match=r"retrain\.power: expected a value >= 0\.5"):
        parse_policy({"retrain": {"power": 1.0}})
    with pytest.raises(PolicyError, match=r"retrain\.false_accept"):
        parse_policy({"retrain": {"false_accept": 0}})

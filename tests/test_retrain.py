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

from driftgate.converter import convert
from driftgate.converter.data import Table, save_table_npz, table_from_object
from driftgate.monitor.retrain import (
    RetrainJob,
    RetrainLimits,
    assemble,
    judge,
    production_table,
    run_worker,
    worker_environment,
)
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

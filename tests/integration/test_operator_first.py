"""Retraining respects operators, through real processes (issue 13, point 6).

A gateway and a monitor on free ports over one repository and a real SQLite store; traffic
and labels through the gateway; `driftgate retrain` through the monitor, whose retraining
worker runs a trainer written by the test (``retrain.trainer = "gated_trainer:fit"``, found
through ``PYTHONPATH``, which the worker inherits). The trainer says it has started, then
waits for a file the test creates before it fits a clone of the stable estimator: the test
acts while the retrain is running, with no sleep in the product and no timing guess.

- An operator deploys version 2 as a canary while the retrain runs: the retrained version 3
  is written but not deployed; the deployment, the history and the served versions are the
  operator's, and the monitor says ``retrain_rejected`` naming the revision that moved.
- A monitor without ``--gateway`` and no ``deployment.json`` (the highest version serves):
  the stable is pinned in ``deployment.json`` before the worker writes version 2, and after
  the retrain the gateway still answers every request with version 1.
- A monitor without ``--gateway`` while an operator's canary runs: the retrain leaves the
  deployment (stable and canary) exactly as the operator left it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "churn"
TOKEN = "operator-token-for-the-test"
ROWS = 300  # labelled production rows; the newest 60% are the judge's holdout
# Only the test retrains (no drift trigger, no cooldown surprise) and only operators move
# canaries (no analysis stepping the operator's canary); the judge's margin of 10 points
# needs about 150 holdout rows for a candidate that rarely disagrees with the stable.
POLICY = """\
[drift]
interval = 3600
[canary]
enabled = false
[retrain]
enabled = false
holdout_fraction = 0.6
tolerance = 0.1
trainer = "gated_trainer:fit"
timeout = "2m"
"""

# The user's trainer: announces itself, waits (bounded) for the test's go-ahead, then fits a
# clone of the stable version's estimator on the training table, as the default trainer does.
TRAINER = """\
import time
from pathlib import Path

from sklearn.base import clone

from driftgate import converter

STARTED = Path({started!r})
RELEASE = Path({release!r})
STABLE = Path({stable!r})


def fit(table):
    STARTED.touch()
    deadline = time.monotonic() + 60
    while not RELEASE.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the trainer")
        time.sleep(0.05)
    stable = converter.load_estimator(STABLE)
    layout = converter.make_layout(stable, table)
    return clone(stable).fit(layout.sklearn_input(table), table.target)
"""


class Gate:
    """The trainer's two files: ``started`` (it is running) and ``release`` (go on)."""

    def __init__(self, directory: Path, stable_estimator: Path) -> None:
        self.modules = directory / "trainers"
        self.modules.mkdir()
        self.started = directory / "trainer.started"
        self.release = directory / "trainer.release"
        source = TRAINER.format(
            started=str(self.started), release=str(self.release), stable=str(stable_estimator)
        )
        (self.modules / "gated_trainer.py").write_text(source, encoding="utf-8")

    def environment(self) -> dict[str, str]:
        """The monitor's environment: the worker inherits PYTHONPATH and finds the trainer."""
        path = [str(self.modules), os.environ.get("PYTHONPATH", "")]
        return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}

    def wait_started(self, monitor: DriftgateProcess, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.started.exists():
            assert monitor.process.poll() is None, monitor.log
            assert time.monotonic() < deadline, f"the trainer did not start:\n{monitor.log}"
            time.sleep(0.05)


ENDED = {"retrain_rejected", "retrain_succeeded", "retrain_failed"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _driftgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftgate", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "DRIFTGATE_CONTROL_TOKEN": TOKEN},
    )  # fmt: skip


def _json(*args: str) -> Any:
    result = _driftgate(*args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _events(monitor: DriftgateProcess) -> list[mpb.Event]:
    """The model's events, newest first."""
    with grpc.insecure_channel(monitor.address) as channel:
        listed = mpb_grpc.MonitorStub(channel).ListEvents(
            mpb.ListEventsRequest(model=MODEL, limit=100), timeout=10
        )
    return list(listed.events)


def _wait_for_event(monitor: DriftgateProcess, kinds: set[str], timeout: float = 60) -> mpb.Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(monitor) if e.kind in kinds]
        if found:
            return found[0]
        assert monitor.process.poll() is None, monitor.log
        time.sleep(0.2)
    raise AssertionError(f"no {kinds} event within {timeout} s: {_events(monitor)}\n{monitor.log}")


def _labels_joined(monitor: DriftgateProcess, version: int) -> int:
    """Labels joined to the version's predictions over its whole history."""
    with grpc.insecure_channel(monitor.address) as channel:
        answer = mpb_grpc.MonitorStub(channel).GetAccuracy(
            mpb.GetAccuracyRequest(model=MODEL, version=version, window=Duration(seconds=0)),
            timeout=10,
        )
    return int(answer.label_count)


def _repository(tmp_path: Path, versions: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """``versions`` versions of a logistic regression (C differs), the policy, the live rows."""
    x, y = make_classification(1200, 5, n_informative=4, n_redundant=0, random_state=11)
    x = x.astype(np.float32).round(2)
    repository = tmp_path / "models"
    for c in (1.0, 0.1)[:versions]:
        estimator = LogisticRegression(C=c, max_iter=500).fit(x[:800], y[:800])
        convert(estimator, x[:800], MODEL, repository, labels=y[:800])
    (repository / MODEL / "policy.toml").write_text(POLICY)
    return repository, x[800:], y[800:]


def _start(
    repository: Path, tmp_path: Path, gate: Gate, *, monitor_acts: bool
) -> tuple[DriftgateProcess, DriftgateProcess]:
    """A gateway reporting every prediction to a monitor; the monitor is given the gateway's
    Control service only when ``monitor_acts``."""
    monitor_port = _free_port()
    env = {"DRIFTGATE_CONTROL_TOKEN": TOKEN}
    gateway = start_gateway(
        repository, tmp_path, "--monitor", f"127.0.0.1:{monitor_port}",
        "--report-interval", "0.2", "--record-max-per-second", "0", env=env,
    )  # fmt: skip
    args = [
        "--repository", str(repository), "--data-dir", str(tmp_path / "data"),
        "--host", "127.0.0.1", "--grpc-port", str(monitor_port), "--metrics-port", "-1",
        "--bucket-seconds", "1",
    ]  # fmt: skip
    if monitor_acts:
        args += ["--gateway", gateway.address]
    try:
        monitor = DriftgateProcess("monitor", args, tmp_path, env | gate.environment())
        return gateway, monitor.wait_ready()
    except BaseException:
        gateway.terminate()
        raise


def _infer(gateway: DriftgateProcess, rows: np.ndarray, prefix: str) -> list[str]:
    """One request per row, with ids ``prefix0``...; the versions that answered."""
    versions = []
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for i, row in enumerate(rows):
            answer = stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name=MODEL, id=f"{prefix}{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, row.size]}],
                    raw_input_contents=[row[None, :].tobytes()],
                ),
                timeout=10,
            )  # fmt: skip
            versions.append(answer.model_version)
    return versions


def _labelled_traffic(gateway: DriftgateProcess, monitor: DriftgateProcess, x, y) -> None:
    """ROWS requests and their labels through the gateway, until the monitor joined them all
    (the judge needs the whole holdout), whichever versions answered."""
    served = _infer(gateway, x[:ROWS], "r")
    labels = [fb.Label(request_id=f"r{i}", int64_value=int(y[i])) for i in range(ROWS)]
    with grpc.insecure_channel(gateway.address) as channel:
        fb_grpc.FeedbackStub(channel).SendLabels(fb.SendLabelsRequest(labels=labels), timeout=10)
    deadline = time.monotonic() + 30
    while True:
        joined = {v: _labels_joined(monitor, int(v)) for v in sorted(set(served))}
        if sum(joined.values()) >= ROWS:
            return
        assert time.monotonic() < deadline, f"labels not joined within 30 s: {joined}"
        time.sleep(0.2)


def _retrain(monitor: DriftgateProcess) -> None:
    asked = _driftgate("retrain", MODEL, "--monitor", monitor.address)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "queued" in asked.stdout


def test_an_operators_deploy_during_a_running_retrain_is_not_overwritten(tmp_path: Path) -> None:
    repository, x, y = _repository(tmp_path, versions=2)
    gate = Gate(tmp_path, repository / MODEL / "1" / "estimator.joblib")
    gateway, monitor = _start(repository, tmp_path, gate, monitor_acts=True)
    admin = ["--gateway", gateway.address]
    try:
        _json("deploy", MODEL, "1", *admin, "--reason", "version 1 is the stable")
        _labelled_traffic(gateway, monitor, x, y)
        _retrain(monitor)
        gate.wait_started(monitor)
        # The worker runs: the monitor has read (and pinned) the deployment before it.
        read = int(_json("status", MODEL, *admin)["models"][0]["state"]["revision"])
        operator = _json(
            "deploy", MODEL, "2", "--canary", "20", *admin, "--reason", "the operator's canary"
        )
        moved = int(operator["state"]["revision"])
        assert moved > read
        gate.release.touch()
        ended = _wait_for_event(monitor, ENDED)
        _wait_until_reconciled(gateway, repository)
        status = _json("status", MODEL, *admin)["models"][0]
        history = _json("history", MODEL, *admin)["entries"]
        served = _infer(gateway, x[:200], "after")
        kinds = [e.kind for e in _events(monitor)]
    finally:
        gate.release.touch()  # a failed test does not leave the worker waiting
        monitor.terminate()
        gateway.terminate()

    assert (repository / MODEL / "3" / "model.onnx").is_file()  # retrained and judged good
    assert ended.kind == "retrain_rejected", ended
    assert ended.reason.startswith("version 3 written, not deployed")
    assert f"since revision {read} was read" in ended.reason
    assert f"at revision {moved}" in ended.reason
    assert "retrain_succeeded" not in kinds and "action_superseded" not in kinds
    # What the operator deployed is what serves; version 3 has no role and answers nothing.
    state = status["state"]
    assert (int(state["stable"]), int(state["revision"])) == (1, moved)
    assert (int(state["canary"]["version"]), state["canary"]["weight"]) == (2, 20.0)
    roles = {int(v["version"]): v["role"] for v in status["versions"]}
    assert roles == {1: "ROLE_STABLE", 2: "ROLE_CANARY"}
    assert set(served) == {"1", "2"}
    assert history[0]["reason"] == "the operator's canary"
    assert int(history[0]["revision"]) == moved
    assert "driftgate-monitor" not in {e["actor"] for e in history}
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 1 and deployment["canary"]["version"] == 2


def test_a_monitor_without_a_gateway_never_makes_a_retrained_version_serve(
    tmp_path: Path,
) -> None:
    repository, x, y = _repository(tmp_path, versions=1)
    deployment_file = repository / MODEL / "deployment.json"
    gate = Gate(tmp_path, repository / MODEL / "1" / "estimator.joblib")
    gateway, monitor = _start(repository, tmp_path, gate, monitor_acts=False)
    try:
        assert not deployment_file.exists()  # version 1 serves by being the highest
        _labelled_traffic(gateway, monitor, x, y)
        _retrain(monitor)
        gate.wait_started(monitor)
        # The worker is about to fit: the stable is pinned already and nothing new is written.
        pinned = json.loads(deployment_file.read_text())
        assert pinned["stable"] == 1 and not (pinned.get("canary") or {}).get("version")
        assert sorted(p.name for p in (repository / MODEL).iterdir() if p.is_dir()) == ["1"]
        events = _events(monitor)  # newest first
        assert [e.kind for e in events] == ["stable_pinned", "retrain_started"]
        assert events[0].version == 1
        gate.release.touch()
        ended = _wait_for_event(monitor, ENDED)
        assert ended.kind == "retrain_succeeded", ended
        assert (repository / MODEL / "2" / "model.onnx").is_file()
        _wait_until_reconciled(gateway, repository)
        served = _infer(gateway, x, "after")
        history = _json("history", MODEL, "--gateway", gateway.address)["entries"]
    finally:
        gate.release.touch()  # a failed test does not leave the worker waiting
        monitor.terminate()
        gateway.terminate()

    assert set(served) == {"1"}, f"{served.count('2')} of {len(served)} answered by version 2"
    assert json.loads(deployment_file.read_text())["stable"] == 1
    assert ended.version == 2
    assert [e["actor"] for e in history] == ["driftgate-monitor"]


def test_a_monitor_without_a_gateway_leaves_an_operators_canary_alone(tmp_path: Path) -> None:
    repository, x, y = _repository(tmp_path, versions=2)
    gate = Gate(tmp_path, repository / MODEL / "1" / "estimator.joblib")
    gate.release.touch()  # nothing to interleave: the trainer runs straight through
    gateway, monitor = _start(repository, tmp_path, gate, monitor_acts=False)
    admin = ["--gateway", gateway.address]
    try:
        _json("deploy", MODEL, "1", *admin, "--reason", "version 1 is the stable")
        operator = _json(
            "deploy", MODEL, "2", "--canary", "20", *admin, "--reason", "the operator's canary"
        )
        _labelled_traffic(gateway, monitor, x, y)
        _retrain(monitor)
        ended = _wait_for_event(monitor, ENDED)
        assert ended.kind == "retrain_succeeded", ended
        _wait_until_reconciled(gateway, repository)
        served = _infer(gateway, x, "after")
        history = _json("history", MODEL, *admin)["entries"]
        kinds = [e.kind for e in _events(monitor)]
    finally:
        monitor.terminate()
        gateway.terminate()

    assert (repository / MODEL / "3" / "model.onnx").is_file()
    assert set(served) == {"1", "2"}, f"{served.count('2')} of {len(served)} by the canary"
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 1 and deployment["canary"] == {"version": 2, "weight": 20.0}
    assert deployment["revision"] == int(operator["state"]["revision"])
    assert [e["reason"] for e in history][0] == "the operator's canary"
    assert "driftgate-monitor" not in {e["actor"] for e in history}
    assert "stable_pinned" not in kinds


def _wait_until_reconciled(gateway: DriftgateProcess, repository: Path) -> None:
    """Wait until the gateway has reconciled the model with the repository as it is now.

    A model added now, named after it, is the marker: the watcher lists the repository and
    reconciles its models one after another in name order, so once the marker is ready the
    model was reconciled (its versions loaded, its route rebuilt) from a later listing."""
    shutil.copytree(repository / MODEL / "1", repository / "zz-marker" / "1")
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(gateway.address) as channel:
        index = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex
        while True:
            ready = index(pb.RepositoryIndexRequest(ready=True), timeout=10).models
            if any(m.name == "zz-marker" for m in ready):
                return
            assert time.monotonic() < deadline, (
                f"the gateway never loaded the marker\n{gateway.log}"
            )
            time.sleep(0.1)

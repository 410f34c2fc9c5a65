"""An identical canary whose labels arrive late is promoted, on evidence from every check.

Real processes: a gateway serving version 1 (stable) and version 2, the same fitted estimator
converted a second time (identical predictions), a monitor analysing the canary, and a client
that sends every request with an id and the true label later through the gateway's Feedback
service.

Time is scaled down 30 times from the policy defaults: a look every 2 s instead of 60 s, a
deadline of 60 s instead of 30 minutes (the same 30 planned looks, so every test runs at the
default levels), and labels delayed by 4 s, two looks, where the defaults' one-minute delay
is one look: harsher than the defaults' ratio. The steps, margins and minimum sample sizes
are the defaults, and so is the choice of required checks: accuracy is required because the
stable version received labels before the canary began.

The promotion event carries, for each required check, its tests (name, statistic, p-value,
level) and the sample sizes; the canary never takes a step before the accuracy check has its
minimum labels on both versions, so it cannot be promoted before either.
"""

from __future__ import annotations

import collections
import json
import math
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.control.v1 import control_pb2 as control
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as control_grpc
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.monitor.policy import CanaryChecks, CanaryPolicy
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "m"
SCALE = 30  # the defaults' durations divided by this
LABEL_DELAY = 4.0  # seconds: two looks (the defaults: one minute, one look)
POLICY = f"""\
[drift]
interval = 3600
[retrain]
enabled = false
[canary]
interval = {60 / SCALE:g}
deadline = {1800 / SCALE:g}
"""
MIN_LABELS = CanaryChecks().min_labels
RATE = 150.0  # requests a second: the canary's errors check passes on ~1,200 canary requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(address: str) -> list[mpb.Event]:
    with grpc.insecure_channel(address) as channel:
        listed = mpb_grpc.MonitorStub(channel).ListEvents(
            mpb.ListEventsRequest(model=MODEL, limit=500), timeout=10
        )
    return list(reversed(listed.events))  # oldest first


def _wait_for_any(address: str, kinds: set[str], timeout: float) -> mpb.Event:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            events = _events(address)
        except grpc.RpcError:
            events = []
        seen = [e.kind for e in events]
        found = [e for e in events if e.kind in kinds]
        if found:
            return found[0]
        time.sleep(0.25)
    raise AssertionError(f"none of {sorted(kinds)} within {timeout} s; events: {seen}")


class Client:
    """Senders of requests with ids; the true labels follow ``LABEL_DELAY`` seconds later."""

    def __init__(self, address: str, rows: np.ndarray, truth: np.ndarray) -> None:
        self.address, self.rows, self.truth = address, rows, truth
        self.stop = threading.Event()
        self.failures: list[object] = []
        self.answered: collections.Counter[str] = collections.Counter()
        self._due: collections.deque[tuple[float, fb.Label]] = collections.deque()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._label, daemon=True),
        ]

    def start(self) -> Client:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            i, start = 0, time.monotonic()
            while not self.stop.wait(max(start + i / RATE - time.monotonic(), 0.0)):
                row = i % len(self.rows)
                request = pb.ModelInferRequest(
                    model_name=MODEL, id=f"r{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 4]}],
                    raw_input_contents=[self.rows[row : row + 1].tobytes()],
                )  # fmt: skip
                try:
                    answer = infer(request, timeout=10)
                except grpc.RpcError as exc:
                    self.failures.append(exc.code())
                else:
                    label = fb.Label(
                        request_id=answer.id, model=MODEL, int64_value=int(self.truth[row])
                    )
                    with self._lock:
                        self.answered[answer.model_version] += 1
                        self._due.append((time.monotonic() + LABEL_DELAY, label))
                i += 1

    def _label(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            feedback = fb_grpc.FeedbackStub(channel).SendLabels
            while not self.stop.wait(0.25):
                now, due = time.monotonic(), []
                with self._lock:
                    while self._due and self._due[0][0] <= now and len(due) < 1000:
                        due.append(self._due.popleft()[1])
                if due:
                    try:
                        feedback(fb.SendLabelsRequest(labels=due), timeout=10)
                    except grpc.RpcError as exc:
                        self.failures.append(("feedback", exc.code()))


def _identical_versions(repository: Path) -> tuple[np.ndarray, np.ndarray]:
    """Version 1 and version 2 of one fitted estimator; rows and labels to serve."""
    x, y = make_classification(
        4000, 4, n_informative=3, n_redundant=0, class_sep=2.0, random_state=11
    )
    x = x.astype(np.float32)
    fitted = LogisticRegression(max_iter=500).fit(x[:2000], y[:2000])
    for _ in range(2):
        convert(fitted, x[:2000], MODEL, repository, labels=y[:2000])
    (repository / MODEL / "deployment.json").write_text(json.dumps({"stable": 1, "revision": 1}))
    (repository / MODEL / "policy.toml").write_text(POLICY)
    return x[2000:], y[2000:]


def _start(repository: Path, tmp_path: Path) -> tuple[DriftgateProcess, DriftgateProcess]:
    monitor_port = _free_port()
    gateway = start_gateway(
        repository, tmp_path, "--monitor", f"127.0.0.1:{monitor_port}",
        "--report-interval", "0.2", "--record-max-per-second", "0",
    )  # fmt: skip
    monitor = DriftgateProcess(
        "monitor",
        [
            "--repository", str(repository), "--data-dir", str(tmp_path / "data"),
            "--host", "127.0.0.1", "--grpc-port", str(monitor_port), "--metrics-port", "-1",
            "--gateway", gateway.address, "--bucket-seconds", "1",
            "--policy-sync-interval", "0.5",
        ],
        tmp_path,
        {},
    ).wait_ready()  # fmt: skip
    return gateway, monitor


def _stable_labelled(address: str, timeout: float) -> int:
    """Waits until the monitor has joined some labels of version 1; their count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                answer = mpb_grpc.MonitorStub(channel).GetAccuracy(
                    mpb.GetAccuracyRequest(model=MODEL, version=1, window=Duration()), timeout=10
                )
            except grpc.RpcError:
                answer = None
        if answer is not None and answer.label_count > 0:
            return int(answer.label_count)
        time.sleep(0.25)
    raise AssertionError(f"no label of version 1 joined within {timeout} s")


def _deploy_canary(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        control_grpc.ControlStub(channel).Deploy(
            control.DeployRequest(
                model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=5,
                reason="the same model converted again",
            ),
            timeout=10,
        )  # fmt: skip


def test_an_identical_canary_with_late_labels_is_promoted_on_every_required_check(
    tmp_path: Path,
) -> None:
    repository = tmp_path / "models"
    rows, truth = _identical_versions(repository)
    gateway, monitor = _start(repository, tmp_path)
    client = Client(gateway.address, rows, truth).start()
    try:
        # Labels of the stable before the canary: the analysis then requires accuracy.
        _stable_labelled(monitor.address, timeout=60)
        _deploy_canary(gateway.address)
        try:
            verdict = _wait_for_any(monitor.address, {"promotion", "rollback"}, timeout=150)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nmonitor log (end):\n{monitor.log[-4000:]}") from None
        events = _events(monitor.address)
    finally:
        client.close()
        gateway.terminate()
        monitor.terminate()

    kinds = [e.kind for e in events]
    assert verdict.kind == "promotion", (verdict.reason, kinds)
    assert verdict.version == 2
    assert "rollback" not in kinds and "canary_check_failed" not in kinds, kinds
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 2 and not (deployment.get("canary") or {}).get("version")
    assert client.failures == []
    assert client.answered["2"] > 0  # the canary served before its promotion

    (started,) = [e for e in events if e.kind == "canary_started"]
    assert json.loads(started.figures_json)["required"] == ["errors", "latency", "accuracy"]
    _assert_the_evidence(json.loads(verdict.figures_json))
    _assert_no_step_before_the_labels([e for e in events if e.kind == "canary_step"])


def _assert_the_evidence(figures: dict) -> None:
    """Each required check passed, with its tests' statistics and the sample sizes."""
    defaults = CanaryPolicy()
    assert figures["required"] == ["errors", "latency", "accuracy"]
    assert set(figures["passed"]) >= {"errors", "latency", "accuracy"}
    assert figures["weight"] == defaults.steps[-1]
    assert figures["planned_looks"] == 30 and figures["look"] <= 30
    for name in figures["required"]:
        check = figures["checks"][name]
        assert check["required"], name
        minimum = MIN_LABELS if name == "accuracy" else defaults.min_requests
        assert check["canary_n"] >= minimum and check["stable_n"] >= minimum, check
        tests = {t["test"] for t in check["tests"]}
        assert tests == (
            {"mann_whitney_u"} if name == "latency" else {"farrington_manning", "fisher_exact"}
        ), check
        for test in check["tests"]:
            assert math.isfinite(test["statistic"]) and 0.0 <= test["p_value"] <= 1.0, test
            assert test["level"] > 0.0, test
        failing = [t for t in check["tests"] if t["null"].endswith("<= stable")]
        assert failing and not any(t["rejected"] for t in failing), check  # never worse
    accuracy = figures["checks"]["accuracy"]
    # Identical predictions on the same traffic: the same accuracy, up to sampling.
    assert abs(accuracy["canary_value"] - accuracy["stable_value"]) < 0.05, accuracy


def _assert_no_step_before_the_labels(steps: list[mpb.Event]) -> None:
    """The canary leaves its first step only once the accuracy check has its minimum labels
    on both versions; two looks of label delay hold it there for at least one look."""
    assert len(steps) == len(CanaryPolicy().steps) - 1, [s.reason for s in steps]
    for step in steps:
        accuracy = json.loads(step.figures_json)["checks"]["accuracy"]
        assert accuracy["outcome"] != "insufficient", accuracy
        assert accuracy["canary_n"] >= MIN_LABELS and accuracy["stable_n"] >= MIN_LABELS
    first = json.loads(steps[0].figures_json)
    assert first["look"] >= 2, first  # the first look had no canary label yet: held

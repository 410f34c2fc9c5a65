"""A canary 15 points less accurate is rolled back on its joined labels.

Real processes: a gateway serving version 1 (stable, accuracy about 0.95) and version 2 (a
canary fitted on a shifted feature, about 0.80 on the same rows), a monitor analysing it with
a look every 2 seconds, and a client that sends every request with an id and its true label
a moment later through the gateway's Feedback service. The rollback event names the accuracy
check's failed test (Fisher's exact test) with its p-value, level and sample sizes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
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
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "m"
# Accuracy required explicitly; the predictions check may not fail (its floor is 1.0), so
# that the accuracy test alone decides.
POLICY = """\
[drift]
interval = 3600
[retrain]
enabled = false
[canary]
interval = 2
steps = [20, 50]
deadline = 60
min_requests = 10
required = ["errors", "latency", "accuracy"]
[canary.checks]
latency_p99_slack_ms = 1000
min_labels = 20
max_prediction_drift = 1.0
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(address: str) -> list[mpb.Event]:
    with grpc.insecure_channel(address) as channel:
        listed = mpb_grpc.MonitorStub(channel).ListEvents(
            mpb.ListEventsRequest(model=MODEL, limit=100), timeout=10
        )
    return list(reversed(listed.events))  # oldest first


def _wait_for(address: str, kind: str, timeout: float) -> mpb.Event:
    deadline = time.monotonic() + timeout
    kinds: list[str] = []
    while time.monotonic() < deadline:
        try:
            events = _events(address)
        except grpc.RpcError:
            events = []
        kinds = [e.kind for e in events]
        found = [e for e in events if e.kind == kind]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {timeout} s; events: {kinds}")


def test_a_canary_15_points_less_accurate_is_rolled_back_by_the_accuracy_test(
    tmp_path: Path,
) -> None:
    x, y = make_classification(
        3000, 4, n_informative=3, n_redundant=0, class_sep=1.5, random_state=5
    )
    x = x.astype(np.float32)
    repository = tmp_path / "models"
    good = LogisticRegression(max_iter=500).fit(x[:1500], y[:1500])
    shifted = x[:1500].copy()
    shifted[:, 0] -= 1.1  # the canary expects feature 0 lower than it is served
    worse = LogisticRegression(max_iter=500).fit(shifted, y[:1500])
    live, truth = x[1500:], y[1500:]
    accuracies = [float((m.predict(live) == truth).mean()) for m in (good, worse)]
    assert accuracies[0] - accuracies[1] > 0.12, accuracies
    for estimator in (good, worse):
        convert(estimator, x[:1500], MODEL, repository, labels=y[:1500])
    (repository / MODEL / "deployment.json").write_text(json.dumps({"stable": 1, "revision": 1}))
    (repository / MODEL / "policy.toml").write_text(POLICY)

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
    stop, failures = threading.Event(), []

    def traffic() -> None:
        with grpc.insecure_channel(gateway.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            feedback = fb_grpc.FeedbackStub(channel).SendLabels
            labels: list[fb.Label] = []
            i = 0
            while not stop.is_set():
                row = i % len(live)
                request = pb.ModelInferRequest(
                    model_name=MODEL, id=f"r{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 4]}],
                    raw_input_contents=[live[row : row + 1].tobytes()],
                )  # fmt: skip
                try:
                    answer = infer(request, timeout=10)
                    labels.append(
                        fb.Label(request_id=answer.id, model=MODEL, int64_value=int(truth[row]))
                    )
                except grpc.RpcError as exc:
                    failures.append(exc.code())
                if len(labels) >= 20:  # the truth follows a moment later, in batches
                    feedback(fb.SendLabelsRequest(labels=labels), timeout=10)
                    labels = []
                i += 1
                time.sleep(0.002)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(1.0)  # the stable answers (and is labelled) before the canary comes
        with grpc.insecure_channel(gateway.address) as channel:
            control_grpc.ControlStub(channel).Deploy(
                control.DeployRequest(
                    model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=5,
                    reason="a canary to analyse",
                ),
                timeout=10,
            )  # fmt: skip
        rollback = _wait_for(monitor.address, "rollback", timeout=45)
        kinds = [e.kind for e in _events(monitor.address)]
        # the gateway counts it under the bounded cause the monitor named, not its reason
        rollbacks = _rollbacks(gateway.metrics_port)
    finally:
        stop.set()
        sender.join(30)
        gateway.terminate()
        monitor.terminate()

    assert rollback.version == 2
    assert rollbacks == {(("cause", "canary_failed"), ("model", MODEL)): 1.0}
    assert kinds[-2:] == ["canary_check_failed", "rollback"], kinds
    assert rollback.reason.startswith("canary worse than stable: accuracy")
    figures = json.loads(rollback.figures_json)
    accuracy = figures["checks"]["accuracy"]
    assert accuracy["outcome"] == "fail" and accuracy["required"]
    assert accuracy["canary_n"] >= 20 and accuracy["stable_n"] >= 20  # joined labels
    assert accuracy["canary_value"] < accuracy["stable_value"] - 0.05
    (failed,) = [t for t in accuracy["tests"] if t["rejected"]]
    assert failed["test"] == "fisher_exact" and failed["p_value"] <= failed["level"]
    assert failed["level"] == pytest.approx(0.0025 / 30)
    assert figures["checks"]["errors"]["outcome"] != "fail"
    assert failures == []
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 1 and not (deployment.get("canary") or {}).get("version")


def _rollbacks(metrics_port: int) -> dict[tuple[tuple[str, str], ...], float]:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "driftgate_rollbacks_total"
    }

"""A monitor killed in the middle of a canary analysis resumes it after a restart.

Real processes: a gateway serving versions 1 (stable) and 2 (canary) under steady traffic, and
a monitor analysing the canary with a look every 2 seconds (no labels: errors and latency are
the required checks). The monitor is SIGKILLed after the first step; the restarted monitor
(same store) continues from that step to the promotion instead of starting over, and the
gateway never fails a request.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.control.v1 import control_pb2 as control
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as control_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "m"
POLICY = """\
[drift]
interval = 3600
[retrain]
enabled = false
[canary]
interval = 2
steps = [20, 50, 80]
deadline = 90
min_requests = 10
[canary.checks]
latency_p99_slack_ms = 1000
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _monitor(repository: Path, workdir: Path, port: int, gateway: str) -> DriftgateProcess:
    args = [
        "--repository", str(repository), "--data-dir", str(workdir / "data"),
        "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1",
        "--gateway", gateway, "--bucket-seconds", "1", "--policy-sync-interval", "0.5",
    ]  # fmt: skip
    return DriftgateProcess("monitor", args, workdir, {}).wait_ready()


def _kinds(address: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        events = mpb_grpc.MonitorStub(channel).ListEvents(
            mpb.ListEventsRequest(model=MODEL, limit=100), timeout=10
        )
    return [e.kind for e in reversed(events.events)]  # oldest first


def _wait_for(address: str, kind: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    kinds: list[str] = []
    while time.monotonic() < deadline:
        try:
            kinds = _kinds(address)
        except grpc.RpcError:
            kinds = []
        if kind in kinds:
            return kinds
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {timeout} s; events: {kinds}")


def test_restarted_monitor_resumes_the_canary_analysis(tmp_path: Path) -> None:
    x, y = make_classification(800, 4, n_informative=3, n_redundant=0, random_state=5)
    x = x.astype(np.float32).round(2)
    repository = tmp_path / "models"
    for seed in (0, 1):
        estimator = LogisticRegression(C=1.0 + seed, max_iter=500).fit(x, y)
        convert(estimator, x, MODEL, repository, labels=y)
    (repository / MODEL / "deployment.json").write_text(json.dumps({"stable": 1, "revision": 1}))
    (repository / MODEL / "policy.toml").write_text(POLICY)

    monitor_port = _free_port()
    gateway = start_gateway(
        repository, tmp_path, "--monitor", f"127.0.0.1:{monitor_port}", "--report-interval", "0.2"
    )
    monitor = _monitor(repository, tmp_path, monitor_port, gateway.address)
    stop, failures, answered = threading.Event(), [], [0]

    def traffic() -> None:
        with grpc.insecure_channel(gateway.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            i = 0
            while not stop.is_set():
                request = pb.ModelInferRequest(
                    model_name=MODEL, id=f"r{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 4]}],
                    raw_input_contents=[x[i % len(x) : i % len(x) + 1].tobytes()],
                )  # fmt: skip
                try:
                    infer(request, timeout=10)
                    answered[0] += 1
                except grpc.RpcError as exc:
                    failures.append(exc.code())
                i += 1
                time.sleep(0.002)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            control_grpc.ControlStub(channel).Deploy(
                control.DeployRequest(
                    model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=5,
                    reason="a canary to analyse",
                ),
                timeout=10,
            )  # fmt: skip
        _wait_for(monitor.address, "canary_step", timeout=60)
        monitor.process.send_signal(signal.SIGKILL)  # mid-analysis
        monitor.terminate()  # reaps it and closes its log
        monitor = _monitor(repository, tmp_path, monitor_port, gateway.address)
        kinds = _wait_for(monitor.address, "promotion", timeout=90)
    finally:
        stop.set()
        sender.join(30)
        gateway.terminate()
        monitor.terminate()

    assert kinds.count("canary_started") == 1, kinds  # resumed, not started over
    assert kinds.count("canary_step") == 2, kinds  # 20 -> 50 -> 80, then promotion
    assert "rollback" not in kinds
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 2 and not (deployment.get("canary") or {}).get("version")
    weights = [
        (entry.get("after") or {}).get("canary", {}) or {}
        for entry in map(
            json.loads, (repository / MODEL / "history.jsonl").read_text().splitlines()
        )
    ]
    steps = [w.get("weight") for w in weights if w.get("weight")]
    assert steps == sorted(steps), steps  # never back to an earlier step
    assert failures == [] and answered[0] > 0

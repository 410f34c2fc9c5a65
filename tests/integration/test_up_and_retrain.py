"""`driftgate up` runs both processes wired together; `driftgate retrain` goes through them.

A user's repository, `driftgate up` on free ports, traffic and labels through the gateway,
then `driftgate retrain`: the monitor trains out of process, converts, judges, writes
version 2 and deploys it as a canary through the gateway's Control service; the events say
so. Ctrl-C stops both processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

MODEL = "churn"


def _driftgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftgate", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _events(monitor: str) -> list[dict]:
    result = _driftgate("events", MODEL, "--monitor", monitor, "--json")
    assert result.returncode == 0, result.stderr
    events: list[dict] = json.loads(result.stdout)
    return events


def _labels_joined(monitor: str) -> int:
    result = _driftgate("accuracy", MODEL, "--monitor", monitor, "--window", "total", "--json")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout).get("label_count", 0))


def test_up_serves_and_retrain_deploys_a_canary(tmp_path: Path) -> None:
    x, y = make_classification(1200, 5, n_informative=4, n_redundant=0, random_state=11)
    x = x.astype(np.float32).round(2)
    repository = tmp_path / "models"
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, repository, labels=y)
    # 300 labelled rows: the newest 60% are the holdout, judged with a 10-point margin (150
    # rows needed for a candidate that rarely disagrees with version 1; at the default margin
    # of 2 points about 770, far more than 75 rows at the default holdout fraction).
    (repository / MODEL / "policy.toml").write_text(
        "[retrain]\nholdout_fraction = 0.6\ntolerance = 0.1\n"
    )
    ready = tmp_path / "up.json"
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "driftgate", "up", "--repository", str(repository),
         "--data-dir", str(tmp_path / "data"), "--grpc-port", "0", "--metrics-port", "0",
         "--monitor-grpc-port", "0", "--monitor-metrics-port", "0",
         "--report-interval", "0.2", "--ready-file", str(ready)],
        # Every prediction recorded (the default caps records at 200 a second): the judge
        # counts on all 300 labelled rows.
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "DRIFTGATE_RECORD_MAX_PER_SECOND": "0"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "driftgate up was not ready within 60 s"
            time.sleep(0.1)
        ports = json.loads(ready.read_text())
        gateway = f"127.0.0.1:{ports['grpc']}"
        monitor = f"127.0.0.1:{ports['monitor_grpc']}"

        with grpc.insecure_channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(300):
                stub.ModelInfer(
                    pb.ModelInferRequest(
                        model_name=MODEL, id=f"r{i}",
                        inputs=[{"name": "input", "datatype": "FP32", "shape": [1, 5]}],
                        raw_input_contents=[x[i : i + 1].tobytes()],
                    ),
                    timeout=10,
                )  # fmt: skip
            labels = [fb.Label(request_id=f"r{i}", int64_value=int(y[i])) for i in range(300)]
            fb_grpc.FeedbackStub(channel).SendLabels(
                fb.SendLabelsRequest(labels=labels), timeout=10
            )

        deadline = time.monotonic() + 30
        while _labels_joined(monitor) < 300:  # the judge needs the holdout whole
            assert time.monotonic() < deadline, "the 300 labels were not joined within 30 s"
            time.sleep(0.2)
        asked = _driftgate("retrain", MODEL, "--monitor", monitor)
        assert asked.returncode == 0, asked.stderr
        assert "queued" in asked.stdout

        kinds: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            kinds = [e["kind"] for e in _events(monitor)]
            if {"retrain_succeeded", "retrain_rejected", "retrain_failed"} & set(kinds):
                break
            time.sleep(0.5)
        assert "retrain_started" in kinds
        assert "retrain_succeeded" in kinds, _events(monitor)
        deployment = json.loads((repository / MODEL / "deployment.json").read_text())
        assert deployment["stable"] == 1
        assert deployment["canary"]["version"] == 2
        assert (repository / MODEL / "2" / "model.onnx").is_file()
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(30)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()

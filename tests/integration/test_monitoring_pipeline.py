"""Gateway -> monitor, with both real processes: exact counts, crash safety, labels, accuracy."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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

MODEL = "loans"
TOTAL = Duration(seconds=0)  # the version's whole history


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(1500, 4, n_informative=3, n_redundant=0, random_state=3)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, data: tuple) -> Path:
    root = tmp_path_factory.mktemp("models")
    x, y = data
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, root, labels=y)
    return root


def _monitor(repository: Path, workdir: Path, data_dir: Path, port: int = 0) -> DriftgateProcess:
    args = [
        "--repository",
        str(repository),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(port),
        "--metrics-port",
        "-1",
    ]
    return DriftgateProcess("monitor", args, workdir, {}).wait_ready()


@pytest.fixture
def pipeline(repository: Path, tmp_path: Path) -> Iterator[tuple]:
    monitor = _monitor(repository, tmp_path, tmp_path / "data")
    gateway = start_gateway(
        repository, tmp_path, "--monitor", monitor.address, "--report-interval", "0.2"
    )
    yield gateway, monitor
    gateway.terminate()
    monitor.terminate()


def _requests(x: np.ndarray, start: int, count: int) -> list[pb.ModelInferRequest]:
    out = []
    for i in range(start, start + count):
        rows = 1 + i % 3  # some requests carry several rows
        block = np.take(x, range(i, i + rows), axis=0, mode="wrap")
        out.append(
            pb.ModelInferRequest(
                model_name=MODEL,
                id=f"req-{i}",
                inputs=[{"name": "input", "datatype": "FP32", "shape": [rows, x.shape[1]]}],
                raw_input_contents=[block.tobytes()],
            )
        )
    return out


async def _send(address: str, requests: list[pb.ModelInferRequest]) -> dict[str, np.ndarray]:
    """Send with 8 callers; every request must succeed. Returns labels by request id."""
    answers: dict[str, np.ndarray] = {}
    queue = list(reversed(requests))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def caller() -> None:
            while queue:
                request = queue.pop()
                response = await stub.ModelInfer(request, timeout=10)
                answers[response.id] = np.frombuffer(response.raw_output_contents[0], "<i8")

        await asyncio.gather(*(caller() for _ in range(8)))
    return answers


def _drift(monitor: DriftgateProcess) -> mpb.GetDriftResponse:
    with grpc.insecure_channel(monitor.address) as channel:
        stub = mpb_grpc.MonitorStub(channel)
        return stub.GetDrift(mpb.GetDriftRequest(model=MODEL, window=TOTAL), timeout=10)


def _wait_for_rows(monitor: DriftgateProcess, rows: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        try:
            seen = _drift(monitor).features[0].rows
        except grpc.RpcError:
            seen = -1
        if seen >= rows:
            time.sleep(0.6)  # a few more report intervals: nothing more may arrive
            return _drift(monitor).features[0].rows
        time.sleep(0.1)
    return seen


def _rows(requests: list[pb.ModelInferRequest]) -> int:
    return sum(r.inputs[0].shape[0] for r in requests)


def test_monitor_counts_every_row_exactly(pipeline: tuple, data: tuple, repository: Path) -> None:
    gateway, monitor = pipeline
    requests = _requests(data[0], 0, 300)
    asyncio.run(_send(gateway.address, requests))
    assert _wait_for_rows(monitor, _rows(requests)) == _rows(requests)
    drift = _drift(monitor)
    names = json.loads((repository / MODEL / "1" / "model.json").read_text())["inputs"][0]
    assert [f.name for f in drift.features] == names["features"]
    assert all(f.rows == _rows(requests) for f in drift.features)
    assert drift.prediction.rows == _rows(requests)


def test_monitor_killed_under_load_loses_and_doubles_nothing(
    repository: Path, tmp_path: Path, data: tuple
) -> None:
    data_dir = tmp_path / "data"
    monitor = _monitor(repository, tmp_path, data_dir)
    port = monitor.grpc_port
    gateway = start_gateway(
        repository, tmp_path, "--monitor", monitor.address, "--report-interval", "0.1"
    )
    try:
        first, second = _requests(data[0], 0, 400), _requests(data[0], 400, 400)

        async def scenario() -> None:
            sending = asyncio.create_task(_send(gateway.address, first))
            await asyncio.sleep(0.3)
            monitor.process.send_signal(signal.SIGKILL)  # mid-load, mid-report
            await sending  # the gateway answers every request regardless
            await _send(gateway.address, second)  # still no monitor

        asyncio.run(scenario())
        monitor.process.wait(10)
        restarted = _monitor(repository, tmp_path, data_dir, port)
        try:
            expected = _rows(first) + _rows(second)
            assert _wait_for_rows(restarted, expected) == expected
        finally:
            restarted.terminate()
    finally:
        gateway.terminate()
        monitor.terminate()


def test_labels_join_out_of_order_and_accuracy_matches_a_hand_count(
    pipeline: tuple, data: tuple
) -> None:
    gateway, monitor = pipeline
    x, y = data
    early = [fb.Label(request_id=f"req-{i}", model=MODEL, int64_value=int(y[i])) for i in (0, 3)]
    with grpc.insecure_channel(monitor.address) as channel:  # labels before predictions
        fb_grpc.FeedbackStub(channel).SendLabels(fb.SendLabelsRequest(labels=early), timeout=10)
    requests = [r for r in _requests(x, 0, 60) if r.inputs[0].shape[0] == 1]
    answers = asyncio.run(_send(gateway.address, requests))
    late = [
        fb.Label(request_id=r.id, model=MODEL, int64_value=int(y[int(r.id.split("-")[1])]))
        for r in requests
        if r.id not in ("req-0", "req-3")
    ]
    with grpc.insecure_channel(gateway.address) as channel:  # labels through the gateway
        reply = fb_grpc.FeedbackStub(channel).SendLabels(
            fb.SendLabelsRequest(labels=late), timeout=10
        )
    assert reply.accepted == len(late)
    truth = {r.id: int(y[int(r.id.split("-")[1])]) for r in requests}
    expected = np.mean([answers[i][0] == truth[i] for i in truth])
    deadline = time.monotonic() + 20
    accuracy = None
    while time.monotonic() < deadline:
        with grpc.insecure_channel(monitor.address) as channel:
            accuracy = mpb_grpc.MonitorStub(channel).GetAccuracy(
                mpb.GetAccuracyRequest(model=MODEL, window=TOTAL), timeout=10
            )
        if accuracy.label_count == len(requests):
            break
        time.sleep(0.2)
    assert accuracy is not None and accuracy.label_count == len(requests)
    assert accuracy.accuracy == pytest.approx(expected)

    # The same figures through the CLI an operator uses, as a table and as JSON.
    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "driftgate", *args, MODEL, "--monitor", monitor.address,
             "--window", "total"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    table = cli("accuracy")
    assert f"labels {len(requests)}" in table and f"{expected:.4f}" in table
    figures = json.loads(cli("accuracy", "--json"))
    assert figures["accuracy"] == pytest.approx(expected)
    drift = json.loads(cli("drift", "--json"))
    names = [f["name"] for f in drift["features"]]
    assert len(names) == 4 and all(name in cli("drift") for name in names)


def test_two_models_sharing_request_ids_join_their_own_labels(tmp_path: Path, data: tuple) -> None:
    """One business id sent to two models: each model's accuracy comes from its own labels."""
    x, y = data
    root = tmp_path / "models"
    other = "loans-inverse"  # trained on the opposite outcome: its answers are the other class
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, root, labels=y)
    convert(LogisticRegression(max_iter=500).fit(x, 1 - y), x, other, root, labels=1 - y)
    monitor = _monitor(root, tmp_path, tmp_path / "data")
    gateway = start_gateway(
        root, tmp_path, "--monitor", monitor.address, "--report-interval", "0.2"
    )
    try:
        ids = range(40)
        answers: dict[str, dict[str, np.ndarray]] = {}
        for model in (MODEL, other):
            requests = [
                pb.ModelInferRequest(
                    model_name=model,
                    id=f"order-{i}",  # the same ids for both models
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, x.shape[1]]}],
                    raw_input_contents=[x[i : i + 1].tobytes()],
                )
                for i in ids
            ]
            answers[model] = asyncio.run(_send(gateway.address, requests))
        truth = {MODEL: {i: int(y[i]) for i in ids}, other: {i: 1 - int(y[i]) for i in ids}}
        labels = [
            fb.Label(request_id=f"order-{i}", model=model, int64_value=truth[model][i])
            for model in (MODEL, other)
            for i in ids
        ]
        with grpc.insecure_channel(gateway.address) as channel:
            fb_grpc.FeedbackStub(channel).SendLabels(
                fb.SendLabelsRequest(labels=labels), timeout=10
            )
        for model in (MODEL, other):
            expected = np.mean([answers[model][f"order-{i}"][0] == truth[model][i] for i in ids])
            assert expected > 0.7  # each model mostly right about its own outcome
            deadline = time.monotonic() + 20
            accuracy = None
            while time.monotonic() < deadline:
                with grpc.insecure_channel(monitor.address) as channel:
                    accuracy = mpb_grpc.MonitorStub(channel).GetAccuracy(
                        mpb.GetAccuracyRequest(model=model, window=TOTAL), timeout=10
                    )
                if accuracy.label_count == len(ids):
                    break
                time.sleep(0.2)
            assert accuracy is not None
            assert (accuracy.prediction_count, accuracy.label_count) == (len(ids), len(ids))
            assert accuracy.accuracy == pytest.approx(expected)
    finally:
        gateway.terminate()
        monitor.terminate()

"""A text model through the real gateway and monitor: documents sent as BYTES are measured by
the gateway, and the monitor's drift query and metrics report the text measures like any
feature: a shifted vocabulary is drift on the out-of-vocabulary share, an unshifted sample
is no drift."""

from __future__ import annotations

import asyncio
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from driftgate.converter import convert
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import DriftgateProcess, start_gateway
from tests.test_text_features import _pipeline, reviews

pytestmark = pytest.mark.integration

TEXT = ("review.tokens", "review.chars", "review.oov")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    frame, y = reviews(2000, seed=0)
    fitted = _pipeline("tfidf").fit(frame, y)
    for model in ("unshifted", "new-words"):  # one model per test: windows of its own
        convert(fitted, frame, model, root, labels=y)
    return root


@pytest.fixture(scope="module")
def pipeline(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DriftgateProcess, ...]]:
    tmp_path = tmp_path_factory.mktemp("processes")
    args = ["--repository", str(repository), "--data-dir", str(tmp_path / "data"),
            "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
            "--evaluate-interval", "0.5"]  # fmt: skip
    monitor = DriftgateProcess("monitor", args, tmp_path, {}).wait_ready()
    gateway = start_gateway(
        repository, tmp_path, "--monitor", monitor.address, "--report-interval", "0.2"
    )
    yield gateway, monitor
    gateway.terminate()
    monitor.terminate()


def _bytes_tensor(values: list[str]) -> bytes:
    encoded = [v.encode("utf-8") for v in values]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def _requests(model: str, frame, size: int = 50) -> list[pb.ModelInferRequest]:
    out = []
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        rows = len(part)
        out.append(
            pb.ModelInferRequest(
                model_name=model,
                id=f"r{start}",
                inputs=[
                    {"name": "numeric", "datatype": "FP32", "shape": [rows, 1]},
                    {"name": "categorical", "datatype": "BYTES", "shape": [rows, 1]},
                ],
                raw_input_contents=[
                    part[["x"]].to_numpy(np.float32).tobytes(),
                    _bytes_tensor(list(part["review"])),
                ],
            )
        )
    return out


async def _send(address: str, requests: list[pb.ModelInferRequest]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for request in requests:
            await stub.ModelInfer(request, timeout=10)


def _drift_after(monitor: DriftgateProcess, model: str, rows: int) -> dict[str, mpb.FeatureDrift]:
    """The whole history's drift once the monitor has counted ``rows`` documents."""
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(monitor.address) as channel:
        stub = mpb_grpc.MonitorStub(channel)
        while True:
            request = mpb.GetDriftRequest(model=model, window=Duration(seconds=0))
            features = {f.name: f for f in stub.GetDrift(request, timeout=10).features}
            if features["review.tokens"].rows >= rows or time.monotonic() > deadline:
                return features
            time.sleep(0.2)


def _metric_lines(monitor: DriftgateProcess, model: str, feature: str) -> list[str]:
    url = f"http://127.0.0.1:{monitor.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        line
        for line in text.splitlines()
        if f'feature="{feature}"' in line and f'model="{model}"' in line
    ]


@pytest.mark.parametrize("model", ["unshifted", "new-words"])
def test_text_measures_are_drift_only_when_the_vocabulary_shifts(pipeline, model) -> None:
    gateway, monitor = pipeline
    shifted = model == "new-words"
    frame, _ = reviews(1500, seed=9, new_words=0.4 if shifted else 0.0)
    asyncio.run(_send(gateway.address, _requests(model, frame)))
    features = _drift_after(monitor, model, 1500)
    assert set(TEXT) <= set(features)
    assert features["review.oov"].rows == 1500
    verdict = mpb.DRIFT if shifted else mpb.NO_DRIFT
    assert features["review.oov"].verdict == verdict
    assert features["x"].verdict == mpb.NO_DRIFT
    if not shifted:
        assert {features[name].verdict for name in TEXT} == {mpb.NO_DRIFT}
    # The gauges name the text measures as features, like any other.
    deadline = time.monotonic() + 15
    while not _metric_lines(monitor, model, "review.oov") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric_lines(monitor, model, "review.oov")

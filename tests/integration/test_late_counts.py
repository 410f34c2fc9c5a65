"""Counts held through a monitor outage land in the buckets they were observed in.

A real gateway serves three bursts of traffic, each in its own two-second bucket, while its
monitor is not running; then the monitor starts on the address the gateway reports to. Each
bucket must hold exactly its burst's rows, and the whole history exactly the rows sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.monitor.up import free_port
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "loans"
BUCKET = 2  # seconds, the gateway's and the monitor's


def _requests(x: np.ndarray, start: int, count: int) -> list[pb.ModelInferRequest]:
    out = []
    for i in range(start, start + count):
        rows = 1 + i % 3
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


async def _send(address: str, requests: list[pb.ModelInferRequest]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for request in requests:
            await stub.ModelInfer(request, timeout=10)


def _rows_in(monitor: str, seconds: int, end: float | None = None) -> int:
    request = mpb.GetDriftRequest(model=MODEL, window=Duration(seconds=seconds))
    if end is not None:
        request.end_time.CopyFrom(Timestamp(seconds=int(end)))
    with grpc.insecure_channel(monitor) as channel:
        drift = mpb_grpc.MonitorStub(channel).GetDrift(request, timeout=10)
    return int(drift.features[0].rows)


def test_counts_held_through_an_outage_land_in_the_buckets_they_were_observed_in(
    tmp_path: Path,
) -> None:
    x, y = make_classification(600, 4, n_informative=3, n_redundant=0, random_state=5)
    x = x.astype(np.float32)
    repository = tmp_path / "models"
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, repository, labels=y)
    address = f"127.0.0.1:{free_port()}"  # where the monitor will be, once started
    gateway = start_gateway(
        repository, tmp_path, "--monitor", address, "--report-interval", "0.2",
        "--report-bucket-seconds", str(BUCKET),
    )  # fmt: skip
    monitor: DriftgateProcess | None = None
    try:
        sent: dict[int, int] = {}  # bucket start -> rows served in it
        for burst in range(3):
            now = time.time()  # half a second into the next bucket, then one burst
            time.sleep(math.floor(now / BUCKET) * BUCKET + BUCKET + 0.5 - now)
            bucket = math.floor(time.time() / BUCKET) * BUCKET
            requests = _requests(x, 100 * burst, 10 + 10 * burst)
            asyncio.run(_send(gateway.address, requests))
            assert math.floor(time.time() / BUCKET) * BUCKET == bucket, "a burst took >1.5 s"
            sent[bucket] = sum(r.inputs[0].shape[0] for r in requests)
        assert len(sent) == 3 and len(set(sent.values())) == 3

        monitor = DriftgateProcess(
            "monitor",
            ["--repository", str(repository), "--data-dir", str(tmp_path / "data"),
             "--host", "127.0.0.1", "--grpc-port", address.rsplit(":", 1)[1],
             "--metrics-port", "-1", "--bucket-seconds", str(BUCKET), "--no-scheduler"],
            tmp_path, {},
        ).wait_ready()  # fmt: skip
        total = sum(sent.values())
        deadline = time.monotonic() + 60
        while _rows_in(monitor.address, 0) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a few more report intervals: nothing more may arrive
        assert _rows_in(monitor.address, 0) == total  # every row, once
        for bucket, rows in sent.items():
            assert _rows_in(monitor.address, BUCKET, bucket + BUCKET) == rows, bucket
    finally:
        gateway.terminate()
        if monitor is not None:
            monitor.terminate()

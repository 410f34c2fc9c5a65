"""Drift on a table like the ones users have, through real gateway and monitor processes.

Twenty features of mixed kinds (decimals with ties, integers, binary, low-cardinality,
skewed and heavy-tailed columns, and a categorical one) go through a scikit-learn Pipeline,
the converter, the gateway's counting and the monitor's tests. Undrifted traffic must give no
drift on any feature at 500, 5k and 50k rows; one feature gone half NaN must alarm on it.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from google.protobuf.duration_pb2 import Duration
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftgate.converter import convert
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.integration.test_monitoring_pipeline import _monitor
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

UNDRIFTED, BROKEN = "table", "table_broken"
TOTAL = Duration(seconds=0)
PLANS = ["basic", "plus", "pro", "team", "enterprise", "trial"]


def table(rows: int, seed: int) -> pd.DataFrame:
    """Twenty columns of the kinds real tables hold (the same distribution for any seed)."""
    rng = np.random.default_rng(seed)
    columns = {
        "rate": np.round(rng.uniform(0.1, 0.9, rows), 1),  # decimals with heavy ties
        "score": np.round(rng.normal(0, 2, rows), 1),
        "price": np.round(rng.lognormal(3, 0.5, rows), 2),
        "share": np.round(rng.beta(2, 5, rows), 2),
        "visits": rng.poisson(3, rows).astype(float),  # integers
        "percent": rng.integers(0, 100, rows).astype(float),
        "age": rng.integers(18, 80, rows).astype(float),
        "orders": rng.negative_binomial(2, 0.3, rows).astype(float),
        "churned_before": (rng.random(rows) < 0.03).astype(float),  # binary, rare
        "mobile": (rng.random(rows) < 0.5).astype(float),
        "stars": rng.choice([1, 2, 3, 4, 5], rows, p=[0.05, 0.1, 0.2, 0.35, 0.3]).astype(float),
        "seats": rng.choice([1, 2, 5, 10], rows).astype(float),
        "tier": rng.choice([0, 1, 2], rows, p=[0.7, 0.2, 0.1]).astype(float),
        "revenue": rng.lognormal(5, 1.5, rows),  # skewed
        "wait": rng.pareto(2.5, rows),  # heavy-tailed
        "delta": rng.standard_t(2, rows),
        "x1": rng.normal(0, 1, rows),  # continuous
        "x2": rng.normal(10, 3, rows),
        "x3": rng.uniform(-1, 1, rows),
        "plan": rng.choice(PLANS, rows, p=[0.3, 0.25, 0.2, 0.1, 0.05, 0.1]),  # categorical
    }
    return pd.DataFrame(columns)


NUMERIC = [c for c in table(1, 0).columns if c != "plan"]


def estimator() -> Pipeline:
    numeric = make_pipeline(SimpleImputer(), StandardScaler())
    columns = ColumnTransformer(
        [("num", numeric, NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    train = table(10_000, 0)
    label = ((train["x1"] + train["rate"] * 2 + (train["plan"] == "pro")) > 1.5).astype(int)
    fitted = estimator().fit(train, label)
    for model in (UNDRIFTED, BROKEN):
        convert(fitted, train, model, root, labels=label.to_numpy())
    return root


@pytest.fixture(scope="module")
def pipeline(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DriftgateProcess, DriftgateProcess]]:
    workdir = tmp_path_factory.mktemp("drift_pipeline")
    monitor = _monitor(repository, workdir, workdir / "data")
    gateway = start_gateway(
        repository, workdir, "--monitor", monitor.address, "--report-interval", "0.2"
    )
    yield gateway, monitor
    gateway.terminate()
    monitor.terminate()


def _bytes(values: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in (str(x).encode() for x in values))


def _requests(model: str, frame: pd.DataFrame, size: int = 500) -> list[pb.ModelInferRequest]:
    requests = []
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        n = len(part)
        numeric = part[NUMERIC].to_numpy(np.float32)
        requests.append(
            pb.ModelInferRequest(
                model_name=model,
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="numeric", datatype="FP32", shape=[n, len(NUMERIC)]
                    ),
                    pb.ModelInferRequest.InferInputTensor(
                        name="categorical", datatype="BYTES", shape=[n, 1]
                    ),
                ],
                raw_input_contents=[numeric.tobytes(), _bytes(part["plan"].to_numpy())],
            )
        )
    return requests


async def _send(address: str, requests: list[pb.ModelInferRequest]) -> None:
    queue = list(reversed(requests))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def caller() -> None:
            while queue:
                await stub.ModelInfer(queue.pop(), timeout=30)

        await asyncio.gather(*(caller() for _ in range(4)))


def _drift(monitor: DriftgateProcess, model: str, rows: int) -> mpb.GetDriftResponse:
    """The model's drift over its whole history, once the monitor holds ``rows`` rows."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(monitor.address) as channel:
        stub = mpb_grpc.MonitorStub(channel)
        while True:
            answer = stub.GetDrift(mpb.GetDriftRequest(model=model, window=TOTAL), timeout=30)
            # A feature's rows are its finite values: the fullest feature tells what arrived.
            if answer.features and max(f.rows for f in answer.features) >= rows:
                return answer
            assert time.monotonic() < deadline, f"the monitor holds {answer.features}"
            time.sleep(0.2)


def _drifted(answer: mpb.GetDriftResponse) -> dict[str, str]:
    return {
        f.name: mpb.DriftVerdict.Name(f.verdict)
        for f in answer.features
        if f.verdict != mpb.NO_DRIFT
    }


def test_undrifted_traffic_gives_no_drift_at_any_size(pipeline: tuple) -> None:
    gateway, monitor = pipeline
    sent = 0
    for size, seed in ((500, 1), (4_500, 2), (45_000, 3)):  # 500, 5k and 50k rows in all
        asyncio.run(_send(gateway.address, _requests(UNDRIFTED, table(size, seed))))
        sent += size
        answer = _drift(monitor, UNDRIFTED, sent)
        assert len(answer.features) == 20
        assert _drifted(answer) == {}, f"at {sent} rows"


def test_a_feature_gone_half_nan_alarms_on_that_feature(pipeline: tuple) -> None:
    gateway, monitor = pipeline
    frame = table(5_000, 4)
    frame.loc[frame.index % 2 == 0, "price"] = np.nan
    asyncio.run(_send(gateway.address, _requests(BROKEN, frame)))
    answer = _drift(monitor, BROKEN, 5_000)
    assert set(_drifted(answer)) == {"price"}

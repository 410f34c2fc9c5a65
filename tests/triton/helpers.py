"""Models, repository writers and client helpers shared by the gateway integration tests.

Never import ``driftgate.core._proto`` here: tritonclient's compiled protos define the same symbols
and the protobuf runtime refuses both in one process. The gateway runs in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import DriftgateProcess, start_gateway

if TYPE_CHECKING:
    import tritonclient.grpc

# v2 datatype -> (ONNX element type, numpy dtype of the values sent).
DATATYPES: dict[str, tuple[int, Any]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def _model_bytes(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def identity_model(datatype: str) -> bytes:
    """x [-1, 3] of ``datatype`` -> Identity -> y."""
    elem = DATATYPES[datatype][0]
    return _model_bytes(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", elem, ["batch", 3])],
        [helper.make_tensor_value_info("y", elem, ["batch", 3])],
    )


def gather_model() -> bytes:
    """idx INT64 [-1, 1] -> rows of a 10x2 table; an index >= 10 fails inside onnxruntime."""
    table = numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(10, 2), "table")
    return _model_bytes(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 2])],
        [table],
    )


def row_sum_model() -> bytes:
    """x FP32 [-1, -1] (free width) -> y [-1], the sum of each row."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    return _model_bytes(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [axes],
    )


SLOW_WIDTH = 256


def slow_identity_model(layers: int = 40, rows: int | None = None) -> bytes:
    """x FP32 [-1, 256] -> x, after ``layers`` 256x256 MatMul+Tanh whose result is x0.

    With ``rows`` the first dimension is fixed at that size: a model that does not batch.
    """
    batch: int | str = "batch" if rows is None else rows
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (SLOW_WIDTH, SLOW_WIDTH)).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes, previous = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]))
        previous = f"h{i}"
    nodes += [
        helper.make_node("ReduceSum", [previous, "axes"], ["s"], keepdims=1),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    return _model_bytes(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, SLOW_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, SLOW_WIDTH])],
        inits,
    )


@dataclass
class LogisticModel:
    """A scikit-learn logistic regression on 4 features and its ONNX bytes."""

    estimator: Any
    onnx: bytes
    X: np.ndarray


def logistic_model(seed: int = 0) -> LogisticModel:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    est = LogisticRegression().fit(X, y)
    onx = to_onnx(est, X[:1], options={id(est): {"zipmap": False}})
    return LogisticModel(est, onx.SerializeToString(), X)


@dataclass
class MixedModel:
    """A Pipeline(ColumnTransformer, LogisticRegression) over numeric and string columns."""

    pipeline: Any
    onnx: bytes
    frame: Any  # pandas.DataFrame
    numeric: tuple[str, ...] = ("age", "income")
    categorical: tuple[str, ...] = ("city", "plan")


def mixed_model() -> MixedModel:
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).astype(np.float32),
            "income": rng.normal(50, 15, n).astype(np.float32),
            "city": pd.Series(rng.choice(["paris", "lyon", "nice"], n), dtype=object),
            "plan": pd.Series(rng.choice(["free", "pro"], n), dtype=object),
        }
    )
    y = ((frame["age"] > 40) ^ (frame["city"] == "lyon")).astype(np.int64)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
        ]
    )
    clf = LogisticRegression()
    pipeline = Pipeline([("prep", prep), ("clf", clf)]).fit(frame, y)
    onx = to_onnx(pipeline, frame[:1], options={id(clf): {"zipmap": False}})
    return MixedModel(pipeline, onx.SerializeToString(), frame)


# -- the repository on disk ---------------------------------------------------------------


def write_version(
    repo: Path,
    model: str,
    version: int,
    onnx_bytes: bytes,
    *,
    driftgate: bool = False,
    sha256: str | None = None,
) -> Path:
    """Write ``<repo>/<model>/<version>`` atomically (temp dir, then rename), as a writer must.

    ``driftgate=True`` adds model.json (with the sha256 of model.onnx, or ``sha256``) and
    reference.json; otherwise the version is Triton-style (model.onnx alone).
    """
    model_dir = repo / model
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    (tmp / "model.onnx").write_bytes(onnx_bytes)
    if driftgate:
        meta = {
            "name": model,
            "version": version,
            "sha256": sha256 or hashlib.sha256(onnx_bytes).hexdigest(),
            "task": "classification",
        }
        (tmp / "model.json").write_text(json.dumps(meta))
        (tmp / "reference.json").write_text(json.dumps({"features": []}))
    target = model_dir / str(version)
    os.rename(tmp, target)
    return target


def write_deployment(repo: Path, model: str, state: dict[str, Any]) -> None:
    """Replace ``deployment.json`` atomically."""
    directory = repo / model
    tmp = directory / f".deployment.{time.monotonic_ns()}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, directory / "deployment.json")


# -- talking to the gateway ----------------------------------------------------------------


def status_of(exc: Exception) -> str:
    """The gRPC status name of a tritonclient or grpcio error: 'INVALID_ARGUMENT', ..."""
    status = exc.status() if hasattr(exc, "status") else exc.code()  # type: ignore[attr-defined]
    return str(status).removeprefix("StatusCode.")


def message_of(exc: Exception) -> str:
    return exc.message() if hasattr(exc, "message") else exc.details()  # type: ignore[attr-defined]


# tritonclient is imported inside these two: tests outside tests/triton import this module in a
# process that holds driftgate's own protos, which tritonclient's would clash with.


def tensor(name: str, data: np.ndarray, datatype: str) -> tritonclient.grpc.InferInput:
    import tritonclient.grpc as grpcclient

    t = grpcclient.InferInput(name, list(data.shape), datatype)
    t.set_data_from_numpy(data)
    return t


async def send_all(address: str, requests: list[tuple[str, list]]) -> list:
    """Send every (model, inputs) at once; each result or the exception it raised."""
    import tritonclient.grpc.aio as aioclient

    triton = aioclient.InferenceServerClient(address)
    try:
        return await asyncio.gather(
            *(triton.infer(model, inputs) for model, inputs in requests),
            return_exceptions=True,
        )
    finally:
        await triton.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


Sample = tuple[str, dict[str, str], float]


def scrape(metrics_port: int) -> list[Sample]:
    """Every sample of ``/metrics`` as (name, labels, value)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def sample(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample called ``name`` whose labels include ``labels``."""
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


@dataclass
class Zoo:
    """The models of the session repository, with the data they were trained on."""

    repo: Path
    logistic: LogisticModel
    logistic_v2: LogisticModel
    mixed: MixedModel


def run_gateway(repo: Path, workdir: Path, *args: str) -> Iterator[DriftgateProcess]:
    """Start a gateway, yield it, then stop it with SIGTERM and require a clean exit."""
    gateway = start_gateway(repo, workdir, *args)
    try:
        yield gateway
    finally:
        code = gateway.terminate()
        assert code == 0, f"gateway exited {code}:\n{gateway.log_path.read_text()}"

"""The hostile-input catalogue: every case against a real gateway or a real monitor process.

Each case asserts the gRPC status, that the answer came within a time budget, that the server
answers a good request right after, and that the server's resident memory stayed bounded: its
peak during the case (VmHWM, reset before the case through /proc/PID/clear_refs) may exceed
what it held before by a fixed allowance plus a small multiple of the message itself (gRPC
and protobuf hold a received message more than once), never by the blow-ups these cases used
to cause (gigabytes for a long request id copied per row, a 16M-character category).

Gateway cases are below; monitor cases come from ``tests/hostile_monitor_cases.py`` and run
against a ``driftgate monitor`` that shares the gateway's repository. The gateway reports to
that monitor, so statistics and records run too. Messages up to 80 MiB reach the gateway's
own checks (``--max-message-bytes``), beyond what the 64 MiB cases send.

grpcio stubs from ``driftgate.core._proto`` only: tritonclient must not share this process.
"""

from __future__ import annotations

import importlib
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from driftgate.converter import convert
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import DriftgateProcess, start_gateway
from tests.triton.helpers import identity_model, logistic_model, row_sum_model, write_version

pytestmark = pytest.mark.integration

MiB = 1 << 20
#: seconds a case may take, plus a second for every 32 MiB the client sends
BUDGET = 2.0
#: resident memory a case may add, beyond a few times its message (see Memory)
MEMORY_ALLOWANCE = 200 * MiB
SHOP_NUMERIC = ["age", "income", "score", "tenure"]


# -- the processes ------------------------------------------------------------------------


def _shop(root: Path) -> None:
    """A converted pipeline with a numeric and a categorical (BYTES) input and a profile."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(300, 4)), columns=SHOP_NUMERIC)
    frame["color"] = rng.choice(["red", "green", "blue"], len(frame))
    frame["plan"] = rng.choice(["basic", "pro"], len(frame))
    labels = np.where(frame["age"] + (frame["color"] == "red") > 0.5, "churn", "stay")
    pipeline = Pipeline(
        [
            ("columns", ColumnTransformer([
                ("num", StandardScaler(), SHOP_NUMERIC),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["color", "plan"]),
            ])),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )  # fmt: skip
    convert(pipeline.fit(frame, labels), frame, "shop", root, labels=labels)


@dataclass
class Servers:
    gateway: DriftgateProcess
    monitor: DriftgateProcess
    inference: Any  # GRPCInferenceServiceStub
    feedback: Any  # FeedbackStub (on the gateway)
    monitor_stub: Any  # MonitorStub


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("models")
    write_version(root, "lr", 1, logistic_model(0).onnx)  # X FP32 [-1, 4]
    write_version(root, "words", 1, identity_model("BYTES"))  # x BYTES [-1, 3]
    write_version(root, "free", 1, row_sum_model())  # x FP32 [-1, -1]
    _shop(root)
    workdir = tmp_path_factory.mktemp("hostile")
    monitor = DriftgateProcess(
        "monitor",
        ["--repository", str(root), "--data-dir", str(workdir / "data"), "--host", "127.0.0.1",
         "--grpc-port", "0", "--metrics-port", "-1"],
        workdir,
        {},
    ).wait_ready()  # fmt: skip
    gateway = None
    try:
        gateway = start_gateway(
            root, workdir, "--monitor", monitor.address, "--report-interval", "0.3",
            "--max-message-bytes", str(80 * MiB),
        )  # fmt: skip
        _wait_loaded(gateway, ("lr", "words", "free", "shop"))
        with (
            grpc.insecure_channel(gateway.address) as channel,
            grpc.insecure_channel(monitor.address) as monitor_channel,
        ):
            yield Servers(
                gateway,
                monitor,
                pb_grpc.GRPCInferenceServiceStub(channel),
                fb_grpc.FeedbackStub(channel),
                mpb_grpc.MonitorStub(monitor_channel),
            )
    finally:
        if gateway is not None:
            gateway.terminate()
        monitor.terminate()


def _wait_loaded(gateway: DriftgateProcess, models: tuple[str, ...]) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(stub.ModelReady(pb.ModelReadyRequest(name=m)).ready for m in models):
                return
            time.sleep(0.1)
    raise TimeoutError(f"models not ready:\n{gateway.log}")


# -- memory of a process ------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


class Memory:
    """The peak resident memory of a process over a case, against what it held before.

    gRPC and protobuf alone hold a received message several times over (HTTP/2 frames, the
    joined bytes, the parsed message, a field read from it): a 64 MiB request refused at its
    first check peaks near 370 MiB here, so the allowance grows with the message. What the
    old code did with such messages took gigabytes.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:  # 5: reset the peak (VmHWM) to the current size (Linux >= 4.0)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.peaks = True
        except OSError:
            self.peaks = False
        self.before = _status(pid)["VmRSS"]

    def check(self, message_bytes: int) -> None:
        after = _status(self.pid)
        peak = (after["VmHWM"] if self.peaks else after["VmRSS"]) - self.before
        kept = after["VmRSS"] - self.before
        assert peak < MEMORY_ALLOWANCE + 6 * message_bytes, f"peak +{peak / MiB:.0f} MiB"
        assert kept < MEMORY_ALLOWANCE + 3 * message_bytes, f"kept +{kept / MiB:.0f} MiB"


# -- building requests --------------------------------------------------------------------

Request = pb.ModelInferRequest
ROW = np.arange(4, dtype=np.float32).reshape(1, 4)


def lr(data: np.ndarray = ROW, **fields: Any) -> Request:
    request = Request(model_name="lr", **fields)
    request.inputs.add(name="X", datatype="FP32", shape=list(data.shape))
    request.raw_input_contents.append(data.tobytes())
    return request


def words(buffer: bytes, shape: list[int] | None = None) -> Request:
    request = Request(model_name="words")
    request.inputs.add(name="x", datatype="BYTES", shape=shape or [1, 3])
    request.raw_input_contents.append(buffer)
    return request


def _bytes(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def shop(rows: int, colour: str = "red", first: str | None = None, **fields: Any) -> Request:
    """``rows`` rows of the shop model; ``first`` replaces the first row's colour."""
    request = Request(model_name="shop", **fields)
    request.inputs.add(name="numeric", datatype="FP32", shape=[rows, 4])
    request.inputs.add(name="categorical", datatype="BYTES", shape=[rows, 2])
    values = [colour.encode(), b"pro"] * rows
    if first is not None:
        values[0] = first.encode()
    request.raw_input_contents.extend(
        [np.full((rows, 4), 0.25, np.float32).tobytes(), _bytes(*values)]
    )
    return request


def same_name_inputs(count: int) -> Request:
    request = Request(model_name="lr")
    for _ in range(count):
        request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    return request


def with_parameters(count: int, on_input: bool = False) -> Request:
    request = lr()
    target = request.inputs[0].parameters if on_input else request.parameters
    for i in range(count):
        target[f"p{i}"].int64_param = i
    return request


def with_outputs(*names: str) -> Request:
    request = lr()
    for name in names:
        request.outputs.add(name=name)
    return request


def contents_and_raw() -> Request:
    request = lr()
    request.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    return request


def contents(values: list[float], shape: list[int]) -> Request:
    request = Request(model_name="lr")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(values)
    return request


def bytes_contents(*values: bytes) -> Request:
    request = Request(model_name="words")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=[1, len(values)])
    tensor.contents.bytes_contents.extend(values)
    return request


def free(shape: list[int], data: bytes = b"") -> Request:
    request = Request(model_name="free")
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(data)
    return request


def free_contents(count: int) -> Request:
    request = Request(model_name="free")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, count])
    tensor.contents.fp32_contents.extend(np.ones(count, np.float32).tolist())
    return request


def pinned(version: str) -> Request:
    request = lr()
    request.parameters["driftgate_version"].string_param = version
    return request


def lr_named(name: str) -> Request:
    request = lr()
    request.inputs[0].name = name
    return request


def lr_shape(shape: list[int]) -> Request:
    request = lr()
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    return request


def lr_typed(datatype: str) -> Request:
    request = lr()
    request.inputs[0].datatype = datatype
    return request


def lr_extra_raw() -> Request:
    request = lr()
    request.raw_input_contents.append(ROW.tobytes())
    return request


def lr_raw(data: bytes) -> Request:
    request = lr()
    request.raw_input_contents[0] = data
    return request


def labels(*items: fb.Label) -> fb.SendLabelsRequest:
    return fb.SendLabelsRequest(labels=list(items))


# -- the gateway's cases ------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayCase:
    """A hostile request to the gateway's ``method``; answered ``expected``, naming
    ``fragments``; ``then`` checks more afterwards (given the servers)."""

    name: str
    build: Callable[[], Any]
    expected: str = "INVALID_ARGUMENT"
    fragments: tuple[str, ...] = ()
    method: str = "ModelInfer"
    then: Callable[[Servers], None] | None = None


def _counts_reach_the_monitor(servers: Servers) -> None:
    """The 16M-character category was counted (as "other") and reported; ids stay aligned."""
    ids = [f"after-huge-{i}" for i in range(3)]
    for request_id in ids:
        servers.inference.ModelInfer(shop(2, id=request_id), timeout=5)
    deadline = time.monotonic() + 20
    window = Duration(seconds=0)
    rows = 0
    while time.monotonic() < deadline and rows < 256 + 6:
        try:
            drift = servers.monitor_stub.GetDrift(
                mpb.GetDriftRequest(model="shop", window=window), timeout=5
            )
            rows = max(f.rows for f in drift.features)
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    assert rows >= 256 + 6, "the gateway's counts did not reach the monitor"
    metrics = _gateway_metrics(servers.gateway)
    assert 'driftgate_bookkeeping_errors_total{model="shop",version="1"} 0.0' in metrics


def _gateway_metrics(gateway: DriftgateProcess) -> str:
    import urllib.request

    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


GATEWAY_CASES = [
    # -- floods of inputs, outputs and parameters
    GatewayCase(
        "200k-inputs-of-one-name", lambda: same_name_inputs(200_000), fragments=("200000 inputs",)
    ),
    GatewayCase(
        "3-inputs-of-one-name", lambda: same_name_inputs(3), fragments=("duplicate inputs 'X'",)
    ),
    GatewayCase("no-inputs", lambda: Request(model_name="lr"), fragments=("missing input 'X'",)),
    GatewayCase(
        "input-name-100kb", lambda: lr_named("n" * 100_000), fragments=("longer than 256 bytes",)
    ),
    GatewayCase(
        "too-many-outputs",
        lambda: with_outputs("label", "probabilities", "label"),
        fragments=("asks for 3 outputs",),
    ),
    GatewayCase(
        "100k-outputs", lambda: with_outputs(*["label"] * 100_000), fragments=("100000 outputs",)
    ),
    GatewayCase(
        "unknown-output", lambda: with_outputs("nope"), fragments=("requested output 'nope'",)
    ),
    GatewayCase(
        "output-name-100kb", lambda: with_outputs("o" * 100_000), fragments=("(100000 bytes)",)
    ),
    GatewayCase(
        "10k-request-parameters", lambda: with_parameters(10_000), fragments=("10000 parameters",)
    ),
    GatewayCase(
        "10k-input-parameters",
        lambda: with_parameters(10_000, on_input=True),
        fragments=("10000 parameters",),
    ),
    # -- request ids, names, versions
    GatewayCase(
        "request-id-50mb", lambda: lr(id="i" * 50_000_000), fragments=("longer than 256 bytes",)
    ),
    GatewayCase("request-id-300kb", lambda: lr(id="i" * 300_000), fragments=("(300000 bytes)",)),
    GatewayCase("request-id-257-bytes", lambda: lr(id="i" * 257)),
    GatewayCase(
        "request-id-129-two-byte-characters", lambda: lr(id="é" * 129), fragments=("(258 bytes)",)
    ),
    GatewayCase(
        "model-name-100kb",
        lambda: Request(model_name="m" * 100_000),
        fragments=("invalid model name", "(100000 bytes)"),
    ),
    GatewayCase(
        "model-name-100kb-metadata",
        lambda: pb.ModelMetadataRequest(name="m" * 100_000),
        method="ModelMetadata",
        fragments=("(100000 bytes)",),
    ),
    GatewayCase(
        "model-name-100kb-statistics",
        lambda: pb.ModelStatisticsRequest(name="m" * 100_000),
        method="ModelStatistics",
    ),
    GatewayCase(
        "model-name-traversal",
        lambda: Request(model_name="../../etc/passwd"),
        fragments=("invalid model name",),
    ),
    GatewayCase("unknown-model", lambda: Request(model_name="no_such_model"), expected="NOT_FOUND"),
    GatewayCase("version-not-loaded", lambda: lr(model_version="7"), expected="NOT_FOUND"),
    GatewayCase(
        "version-of-1mb-digits",
        lambda: lr(model_version="9" * 1_000_000),
        fragments=("model_version",),
    ),
    GatewayCase(
        "pinned-version-1mb-string", lambda: pinned("9" * 1_000_000), fragments=("model_version",)
    ),
    # -- shapes
    GatewayCase(
        "shape-of-a-million-dimensions",
        lambda: lr_shape([1] * 1_000_000),
        fragments=("rank 1000000",),
    ),
    GatewayCase("negative-dimension", lambda: lr_shape([1, -4])),
    GatewayCase("negative-batch", lambda: lr_shape([-1, 4])),
    GatewayCase("zero-rows", lambda: lr(np.zeros((0, 4), np.float32)), fragments=("batch size 0",)),
    GatewayCase(
        "rows-over-max-request-rows",
        lambda: lr_shape([2**40, 4]),
        fragments=("--max-request-rows",),
    ),
    GatewayCase(
        "dims-whose-product-overflows-int64", lambda: free([1, 2**62 + 1]), fragments=("more than",)
    ),
    GatewayCase("largest-int64-dimension", lambda: free([1, 2**63 - 1]), fragments=("more than",)),
    # -- tensors and their contents
    GatewayCase(
        "wrong-datatype", lambda: lr_typed("FP64"), fragments=("expected datatype FP32, got FP64",)
    ),
    GatewayCase(
        "datatype-1mb-string", lambda: lr_typed("T" * 1_000_000), fragments=("(1000000 bytes)",)
    ),
    GatewayCase("raw-entries-more-than-inputs", lambda: lr_extra_raw(), fragments=("2 entries",)),
    GatewayCase("contents-and-raw", contents_and_raw, fragments=("carries contents",)),
    GatewayCase("raw-length-mismatch", lambda: lr_raw(b"\x00" * 15), fragments=("holds 15 bytes",)),
    GatewayCase(
        "contents-count-mismatch",
        lambda: contents([0.0] * 3, [1, 4]),
        fragments=("holds 3 values",),
    ),
    GatewayCase(
        "a-million-contents-for-4",
        lambda: contents([0.5] * 1_000_000, [1, 4]),
        fragments=("holds 1000000 values",),
    ),
    GatewayCase("5m-typed-contents", lambda: free_contents(5 << 20), fragments=("send more raw",)),
    GatewayCase("4m-typed-contents-are-served", lambda: free_contents(4 << 20), expected="OK"),
    # -- BYTES
    GatewayCase(
        "64mib-of-empty-bytes-elements",
        lambda: words(bytes(64 * MiB)),
        fragments=("after the 3 elements",),
    ),
    GatewayCase(
        "64mib-of-empty-bytes-elements-as-rows",
        lambda: words(bytes(64 * MiB), [(16 * MiB) // 3, 3]),
        fragments=("--max-request-rows",),
    ),
    GatewayCase(
        "bytes-truncated-length-prefix",
        lambda: words(_bytes(b"a", b"b") + b"\x01\x00"),
        fragments=("malformed BYTES",),
    ),
    GatewayCase(
        "bytes-prefix-claims-4gib",
        lambda: words(struct.pack("<I", 2**32 - 1) + bytes(20)),
        fragments=("claims 4294967295 bytes",),
    ),
    GatewayCase(
        "bytes-invalid-utf8",
        lambda: words(_bytes(b"a", b"\xff\xfe", b"c")),
        fragments=("not valid UTF-8",),
    ),
    GatewayCase(
        "bytes-contents-invalid-utf8",
        lambda: bytes_contents(b"a", b"\xc3", b"c"),
        fragments=("not valid UTF-8",),
    ),
    GatewayCase(
        "bytes-fewer-than-the-shape", lambda: words(_bytes(b"a")), fragments=("malformed BYTES",)
    ),
    # -- statistics: a huge categorical value is served, counted as "other", never recorded
    GatewayCase(
        "categorical-value-of-16m-characters",
        lambda: shop(256, first="x" * 16_000_000, id="huge"),
        expected="OK",
        then=_counts_reach_the_monitor,
    ),
    # -- labels sent to the gateway's Feedback service
    GatewayCase(
        "10001-labels",
        lambda: labels(*[fb.Label(request_id=f"r{i}", int64_value=1) for i in range(10_001)]),
        method="SendLabels",
        fragments=("at most 10000",),
    ),
    GatewayCase(
        "label-request-id-1mb",
        lambda: labels(fb.Label(request_id="r" * MiB, int64_value=1)),
        method="SendLabels",
        fragments=("(1048576 bytes)",),
    ),
    GatewayCase(
        "label-string-value-1mb",
        lambda: labels(fb.Label(request_id="r", string_value="v" * MiB)),
        method="SendLabels",
        fragments=("longer than 1024",),
    ),
    GatewayCase(
        "label-without-value",
        lambda: labels(fb.Label(request_id="r")),
        method="SendLabels",
        fragments=("has no value",),
    ),
    GatewayCase(
        "label-id-1mb-without-value",
        lambda: labels(fb.Label(request_id="r" * MiB)),
        method="SendLabels",
        fragments=("(1048576 bytes)",),
    ),
]


def _call(servers: Servers, case: GatewayCase, request: Any) -> tuple[str, str, float]:
    """(status name, details, seconds) of one call of ``case``."""
    if case.method == "SendLabels":
        method = servers.feedback.SendLabels
    else:
        method = getattr(servers.inference, case.method)
    start = time.perf_counter()
    try:
        method(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or "", time.perf_counter() - start
    return "OK", "", time.perf_counter() - start


def _good_gateway_request(servers: Servers) -> None:
    response = servers.inference.ModelInfer(lr(id="good"), timeout=5)
    assert response.id == "good" and len(response.outputs) == 2


@pytest.mark.parametrize("case", GATEWAY_CASES, ids=lambda case: case.name)
def test_gateway_answers_hostile_input_in_bounded_time_and_memory(
    case: GatewayCase, servers: Servers
) -> None:
    request = case.build()
    size = request.ByteSize()
    memory = Memory(servers.gateway.process.pid)
    code, details, seconds = _call(servers, case, request)
    del request
    assert code == case.expected, details
    for fragment in case.fragments:
        assert fragment in details
    assert len(details) < 2000  # client strings are quoted in part only
    assert seconds < BUDGET + size / (32 * MiB), f"answered in {seconds:.2f} s"
    _good_gateway_request(servers)
    if case.then is not None:
        case.then(servers)
    memory.check(size)


def test_a_stream_does_not_echo_what_it_refused(servers: Servers) -> None:
    """ModelStreamInfer answers a refused request in the stream, without its 50 MB id."""
    memory = Memory(servers.gateway.process.pid)
    hostile = lr(id="s" * 50_000_000)
    size = hostile.ByteSize()
    start = time.perf_counter()
    answers = list(servers.inference.ModelStreamInfer(iter([hostile, lr(id="next")]), timeout=30))
    assert time.perf_counter() - start < BUDGET + size / (32 * MiB)
    refused = next(a for a in answers if a.error_message)
    assert "longer than 256 bytes" in refused.error_message
    assert refused.ByteSize() < 2000
    assert [a.infer_response.id for a in answers if not a.error_message] == ["next"]
    _good_gateway_request(servers)
    memory.check(size)


# -- the monitor's cases ------------------------------------------------------------------


def _monitor_cases() -> list[Any]:
    """The cases of tests/hostile_monitor_cases.py, or one skipped case when it is absent."""
    try:
        module = importlib.import_module("tests.hostile_monitor_cases")
    except ModuleNotFoundError as exc:
        if exc.name != "tests.hostile_monitor_cases":
            raise
        reason = "tests/hostile_monitor_cases.py is not there"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="none")]
    return [pytest.param(case, id=case.name) for case in module.MONITOR_CASES]


def _good_monitor_request(servers: Servers) -> None:
    drift = servers.monitor_stub.GetDrift(
        mpb.GetDriftRequest(model="shop", window=Duration(seconds=0)), timeout=5
    )
    assert drift.model == "shop"


@pytest.mark.parametrize("case", _monitor_cases())
def test_monitor_answers_hostile_input_in_bounded_time_and_memory(
    case: Any, servers: Servers
) -> None:
    request = case.build("shop", 1)
    size = request.ByteSize()
    memory = Memory(servers.monitor.process.pid)
    start = time.perf_counter()
    try:
        getattr(servers.monitor_stub, case.method)(request, timeout=30)
        code, details = "OK", ""
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    seconds = time.perf_counter() - start
    del request
    assert code == case.expected, details
    assert len(details) < 2000
    assert seconds < BUDGET + size / (32 * MiB), f"answered in {seconds:.2f} s"
    _good_monitor_request(servers)
    memory.check(size)

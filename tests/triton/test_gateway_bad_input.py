"""Each malformed request gets a precise status and a message naming the input, what was
expected and what came; the gateway keeps serving the next good request."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import Zoo, message_of, run_gateway, status_of

pytestmark = pytest.mark.integration

Request = service_pb2.ModelInferRequest
ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def lr_request(
    data: np.ndarray = ROWS, *, datatype: str = "FP32", shape: list[int] | None = None, **kw
) -> Request:
    request = Request(model_name="lr", **kw)
    request.inputs.add(name="X", datatype=datatype, shape=shape or list(data.shape))
    request.raw_input_contents.append(data.tobytes())
    return request


def missing_input() -> Request:
    request = Request(model_name="mixed")
    for name, datatype in (("age", "FP32"), ("income", "FP32"), ("city", "BYTES")):
        request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
    request.raw_input_contents.extend(
        [np.float32(1).tobytes(), np.float32(2).tobytes(), struct.pack("<I", 5) + b"paris"]
    )
    return request


def extra_input() -> Request:
    request = lr_request()
    request.inputs.add(name="Z", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(ROWS.tobytes())
    return request


def contents_and_raw() -> Request:
    request = lr_request()
    request.inputs[0].contents.fp32_contents.extend(ROWS.reshape(-1).tolist())
    return request


def malformed_bytes() -> Request:
    request = Request(model_name="identity_bytes")
    request.inputs.add(name="x", datatype="BYTES", shape=[1, 3])
    request.raw_input_contents.append(struct.pack("<I", 100) + b"abc" + struct.pack("<II", 0, 0))
    return request


def unknown_output() -> Request:
    request = lr_request()
    request.outputs.add(name="nope")
    return request


CASES: dict[str, tuple[Callable[[], Request], grpc.StatusCode, list[str]]] = {
    "wrong shape": (
        lambda: lr_request(ROWS[:, :3].copy()),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'X'", "expected shape [-1, 4], got [2, 3]"],
    ),
    "wrong datatype": (
        lambda: lr_request(ROWS.astype(np.float64), datatype="FP64"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'X'", "expected datatype FP32, got FP64"],
    ),
    "raw length does not match shape": (
        lambda: lr_request(ROWS.reshape(-1)[:7].copy(), shape=[2, 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'X'", "holds 28 bytes", "shape [2, 4] of FP32 needs 32 bytes"],
    ),
    "missing input": (
        missing_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        ["model 'mixed' expects inputs", "missing input 'plan'"],
    ),
    "extra input": (
        extra_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        ["model 'lr' expects inputs ['X']", "unexpected input 'Z'"],
    ),
    "contents and raw together": (
        contents_and_raw,
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'X' carries contents", "raw_input_contents"],
    ),
    "unknown model": (
        lambda: Request(model_name="no_such_model"),
        grpc.StatusCode.NOT_FOUND,
        ["model 'no_such_model' is not loaded"],
    ),
    "invalid model name": (
        lambda: Request(model_name="../etc"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["invalid model name '../etc'"],
    ),
    "unknown version": (
        lambda: lr_request(model_version="9"),
        grpc.StatusCode.NOT_FOUND,
        ["version 9 of model 'lr' is not loaded", "loaded versions: 1"],
    ),
    "non-integer version": (
        lambda: lr_request(model_version="latest"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["model_version must be an integer", "'latest'"],
    ),
    "malformed BYTES": (
        malformed_bytes,
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "malformed BYTES", "claims 100 bytes but only 11 remain"],
    ),
    "unknown requested output": (
        unknown_output,
        grpc.StatusCode.INVALID_ARGUMENT,
        ["requested output 'nope'", "model 'lr'", "'label'", "'probabilities'"],
    ),
}


@pytest.fixture(scope="module")
def stub(gateway: DriftgateProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def assert_good_request_succeeds(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(lr_request(id="good"))
    assert response.id == "good"
    assert [o.name for o in response.outputs] == ["label", "probabilities"]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_a_precise_status_and_message(
    case: str, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    build, code, fragments = CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(build())
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    assert_good_request_succeeds(stub)


def test_unknown_request_parameters_are_ignored(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient
) -> None:
    request = lr_request(id="with-params")
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.parameters["my_tracing_tag"].string_param = "abc"
    request.inputs[0].parameters["binary_data_size"].int64_param = 32
    assert stub.ModelInfer(request).id == "with-params"

    tensor = grpcclient.InferInput("X", [2, 4], "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer("lr", [tensor], parameters={"custom": "value", "n": 3})
    assert result.as_numpy("label").shape == (2,)


def test_tritonclient_sees_the_status_and_message(
    client: grpcclient.InferenceServerClient,
) -> None:
    tensor = grpcclient.InferInput("X", [2, 4], "FP64")
    tensor.set_data_from_numpy(ROWS.astype(np.float64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("lr", [tensor])
    assert status_of(info.value) == "INVALID_ARGUMENT"
    assert "input 'X': expected datatype FP32, got FP64" in message_of(info.value)


# -- limits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway(
    zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(
        zoo.repo,
        tmp_path_factory.mktemp("limits"),
        "--max-message-bytes",
        "100000",
        "--max-batch-size",
        "8",
        "--max-request-rows",
        "200",
    )


@pytest.fixture(scope="module")
def limited(limited_gateway: DriftgateProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(limited_gateway.address) as triton:
        yield triton


def lr_inputs(X: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("X", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return [tensor]


def test_oversize_message_is_resource_exhausted(
    limited: grpcclient.InferenceServerClient,
) -> None:
    X = np.ones((8000, 4), dtype=np.float32)  # 128 000 bytes of tensor data
    with pytest.raises(InferenceServerException) as info:
        limited.infer("lr", lr_inputs(X))
    assert status_of(info.value) == "RESOURCE_EXHAUSTED"
    assert "larger than max" in message_of(info.value)
    assert "100000" in message_of(info.value)
    assert limited.infer("lr", lr_inputs(X[:8])).as_numpy("label").shape == (8,)


def test_more_rows_than_max_batch_size_run_in_chunks_and_answer_once(
    limited: grpcclient.InferenceServerClient,
) -> None:
    assert limited.get_model_config("lr", as_json=True)["config"]["max_batch_size"] == 8
    before = limited.get_inference_statistics("lr", as_json=True)["model_stats"][0]
    X = np.random.default_rng(3).normal(size=(100, 4)).astype(np.float32)
    labels = limited.infer("lr", lr_inputs(X)).as_numpy("label")
    assert labels.shape == (100,)
    one_by_one = [
        limited.infer("lr", lr_inputs(X[i : i + 1])).as_numpy("label")[0] for i in (0, 57, 99)
    ]
    assert [labels[0], labels[57], labels[99]] == one_by_one
    after = limited.get_inference_statistics("lr", as_json=True)["model_stats"][0]
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    assert executions == 13 + 3  # ceil(100 / 8) calls of at most 8 rows, then three single rows
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert max(sizes) <= 8


def test_more_rows_than_max_request_rows_is_invalid(
    limited: grpcclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as info:
        limited.infer("lr", lr_inputs(np.ones((201, 4), dtype=np.float32)))
    assert status_of(info.value) == "INVALID_ARGUMENT"
    assert "input 'X': batch size 201 is outside 1..200" in message_of(info.value)
    assert limited.infer("lr", lr_inputs(np.ones((8, 4), np.float32))).as_numpy("label").size == 8

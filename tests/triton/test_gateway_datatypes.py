"""Every v2 datatype round-trips, raw and as typed contents; a multi-input BYTES pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor

from tests.processes import DriftgateProcess
from tests.triton.helpers import DATATYPES, Zoo

pytestmark = pytest.mark.integration

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def values(datatype: str) -> np.ndarray:
    """Two rows of three values of ``datatype``, including its extremes."""
    dtype = DATATYPES[datatype][1]
    if datatype == "BOOL":
        flat = [True, False, True, False, False, True]
    elif datatype == "BYTES":
        flat = [b"", b"plain", "h\u00e9llo \u2713".encode(), b"a b", b"x" * 300, b"0"]
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        flat = [info.min, info.max, 0, 1, info.max - 1, 7]
    else:
        info = np.finfo(dtype)
        flat = [info.min, info.max, 0.0, -1.5, 0.25, info.tiny]
    return np.array(flat, dtype=dtype).reshape(2, 3)


def decode(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(DATATYPES[datatype][1]).newbyteorder("<")).reshape(
        shape
    )


@pytest.fixture(scope="module")
def stub(gateway: DriftgateProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_tensor_round_trips(datatype: str, client: grpcclient.InferenceServerClient) -> None:
    data = values(datatype)
    tensor = grpcclient.InferInput("x", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{datatype.lower()}", [tensor])
    output = result.get_response().outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == ("y", datatype, [2, 3])
    np.testing.assert_array_equal(result.as_numpy("y"), data)


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELD))
def test_typed_contents_round_trip(
    datatype: str, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    data = values(datatype)
    request = service_pb2.ModelInferRequest(model_name=f"identity_{datatype.lower()}")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(data.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert response.outputs[0].datatype == datatype
    np.testing.assert_array_equal(decode(response.raw_output_contents[0], datatype, [2, 3]), data)


def test_fp16_contents_is_refused_with_a_pointer_to_raw(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_fp16")
    tensor = request.inputs.add(name="x", datatype="FP16", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 has no typed contents field" in info.value.details()
    assert "raw_input_contents" in info.value.details()


def test_contents_that_do_not_fit_the_datatype_are_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_uint8")
    tensor = request.inputs.add(name="x", datatype="UINT8", shape=[1, 3])
    tensor.contents.uint_contents.extend([1, 2, 300])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in info.value.details()


# -- a multi-input pipeline with string columns ------------------------------------------


def frame_inputs(zoo: Zoo, frame) -> list[grpcclient.InferInput]:
    inputs = []
    for column in zoo.mixed.numeric:
        tensor = grpcclient.InferInput(column, [len(frame), 1], "FP32")
        tensor.set_data_from_numpy(frame[column].to_numpy(np.float32).reshape(-1, 1))
        inputs.append(tensor)
    for column in zoo.mixed.categorical:
        tensor = grpcclient.InferInput(column, [len(frame), 1], "BYTES")
        tensor.set_data_from_numpy(frame[column].to_numpy(dtype=np.object_).reshape(-1, 1))
        inputs.append(tensor)
    return inputs


def test_pipeline_with_string_columns_matches_scikit_learn(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    metadata = client.get_model_metadata("mixed", as_json=True)
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        "age": "FP32",
        "income": "FP32",
        "city": "BYTES",
        "plan": "BYTES",
    }
    frame = zoo.mixed.frame.iloc[:40].copy()
    frame.iloc[0, frame.columns.get_loc("city")] = "berlin"  # unseen: ignored by the encoder
    result = client.infer("mixed", frame_inputs(zoo, frame))
    pipeline = zoo.mixed.pipeline
    np.testing.assert_array_equal(result.as_numpy("label"), pipeline.predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), pipeline.predict_proba(frame), atol=1e-5
    )


def test_pipeline_inputs_may_come_in_any_order(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    frame = zoo.mixed.frame.iloc[40:45]
    result = client.infer("mixed", frame_inputs(zoo, frame)[::-1])
    np.testing.assert_array_equal(result.as_numpy("label"), zoo.mixed.pipeline.predict(frame))

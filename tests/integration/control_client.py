"""grpcio clients for the control tests: the generated control and inference stubs.

Only modules outside ``tests/triton`` import ``driftgate.core._proto`` (see ``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from driftgate.core._proto.driftgate.control.v1 import control_pb2 as control
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as control_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as inference
from driftgate.core._proto.inference import grpc_service_pb2_grpc as inference_grpc

InferRequest = inference.ModelInferRequest


def infer_request(model: str, X: np.ndarray, request_id: str = "", **kw: Any) -> Any:
    request = InferRequest(model_name=model, id=request_id, **kw)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "X", "FP32"
    tensor.shape.extend(X.shape)
    request.raw_input_contents.append(np.ascontiguousarray(X, np.float32).tobytes())
    return request


def infer_call(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    return inference_grpc.GRPCInferenceServiceStub(channel).ModelInfer


def control_stub(channel: grpc.Channel) -> control_grpc.ControlStub:
    return control_grpc.ControlStub(channel)


__all__ = ["control", "control_stub", "infer_call", "infer_request"]

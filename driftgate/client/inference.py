"""``Gateway`` and ``AsyncGateway``: inference over the KServe v2 protocol with numpy arrays
in and out, and labels for earlier predictions.

::

    import numpy as np
    from driftgate.client import Gateway

    with Gateway("localhost:8001") as gateway:
        answer = gateway.infer("churn", np.array([[0.1, 2.0, 3.5]]), request_id="order-42")
        print(answer.version, answer["label"], answer["probabilities"])
        gateway.send_labels({"order-42": 1}, model="churn")   # when the outcome is known

The names, datatypes and shapes of the inputs come from the model's ModelMetadata (asked
once per model and version): one array for a model with one input (cast to its datatype;
a single row may leave out the batch dimension), a mapping of input name to array
otherwise. Labels need the ingest token when the gateway has one (``token``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftgate.client._base import AsyncClient, Client
from driftgate.client._tensors import Inputs, TensorSpec, decode_outputs, encode_inputs
from driftgate.client.labels import Label, LabelReceipt, LabelValue, label_requests, receipt
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc

__all__ = ["AsyncGateway", "Gateway", "ModelMetadata", "Prediction"]

Labels = Mapping[str, LabelValue] | Iterable[Label]


@dataclass(frozen=True)
class ModelMetadata:
    """A model's versions and its inputs and outputs (shapes with the batch dimension)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Prediction:
    """A model's answer: the outputs by name, the version that answered, the request id
    (the one given, or the gateway's: send the label with it)."""

    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray[Any, Any]] = field(repr=False)

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.outputs[name]


def _specs(tensors: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in tensors)


def _metadata(response: Any) -> ModelMetadata:
    return ModelMetadata(
        response.name, tuple(response.versions), response.platform,
        _specs(response.inputs), _specs(response.outputs),
    )  # fmt: skip


def _request(
    meta: ModelMetadata,
    inputs: Inputs,
    version: str | int | None,
    request_id: str,
    outputs: Sequence[str] | None,
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=meta.name, model_version=str(version or ""), id=request_id
    )
    encode_inputs(request, meta.inputs, inputs)
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def _prediction(response: Any) -> Prediction:
    return Prediction(
        response.model_name, response.model_version, response.id, decode_outputs(response)
    )


class Gateway(Client):
    """A gateway's inference and feedback services, blocking calls.

    ``timeout`` is every call's default, in seconds; ``token``/``token_file`` the ingest
    token sent with labels; ``tls`` the CA (and client certificate) of a TLS gateway."""

    _stub_class = pb_grpc.GRPCInferenceServiceStub

    def _open(self, channel: Any) -> None:
        super()._open(channel)
        self._feedback = fb_grpc.FeedbackStub(channel)
        self._metadata: dict[tuple[str, str], ModelMetadata] = {}

    def metadata(self, model: str, version: str | int | None = None) -> ModelMetadata:
        """The model's inputs and outputs (asked once, then remembered)."""
        key = (model, str(version or ""))
        if key not in self._metadata:
            request = pb.ModelMetadataRequest(name=model, version=key[1])
            answer = self._connection.call(self._stub.ModelMetadata, request, None)
            self._metadata[key] = _metadata(answer)
        return self._metadata[key]

    def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: str | int | None = None,
        request_id: str = "",
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Prediction:
        """Predict ``inputs`` with ``model`` (routed stable/canary unless ``version`` pins
        one); ``outputs`` limits the outputs returned."""
        request = _request(self.metadata(model, version), inputs, version, request_id, outputs)
        return _prediction(self._connection.call(self._stub.ModelInfer, request, timeout))

    def send_labels(self, labels: Labels, *, model: str = "") -> LabelReceipt:
        """Send true outcomes: ``{request_id: value}`` or ``Label`` objects; ``model`` names
        the model of labels that do not name theirs."""
        total = LabelReceipt()
        for request in label_requests(labels, model):
            answer = self._connection.call(self._feedback.SendLabels, request, None)
            total += receipt(answer)
        return total

    def ready(self, model: str | None = None, version: str | int | None = None) -> bool:
        """Whether the server (or ``model``) is ready for inference."""
        if model is None:
            answer = self._connection.call(self._stub.ServerReady, pb.ServerReadyRequest(), None)
        else:
            request = pb.ModelReadyRequest(name=model, version=str(version or ""))
            answer = self._connection.call(self._stub.ModelReady, request, None)
        return bool(answer.ready)


class AsyncGateway(AsyncClient):
    """``Gateway`` for asyncio: the same calls, awaited. Make it inside the running loop."""

    _stub_class = pb_grpc.GRPCInferenceServiceStub

    def _open(self, channel: Any) -> None:
        super()._open(channel)
        self._feedback = fb_grpc.FeedbackStub(channel)
        self._metadata: dict[tuple[str, str], ModelMetadata] = {}

    async def metadata(self, model: str, version: str | int | None = None) -> ModelMetadata:
        key = (model, str(version or ""))
        if key not in self._metadata:
            request = pb.ModelMetadataRequest(name=model, version=key[1])
            answer = await self._connection.call(self._stub.ModelMetadata, request, None)
            self._metadata[key] = _metadata(answer)
        return self._metadata[key]

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        version: str | int | None = None,
        request_id: str = "",
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Prediction:
        meta = await self.metadata(model, version)
        request = _request(meta, inputs, version, request_id, outputs)
        return _prediction(await self._connection.call(self._stub.ModelInfer, request, timeout))

    async def send_labels(self, labels: Labels, *, model: str = "") -> LabelReceipt:
        total = LabelReceipt()
        for request in label_requests(labels, model):
            answer = await self._connection.call(self._feedback.SendLabels, request, None)
            total += receipt(answer)
        return total

    async def ready(self, model: str | None = None, version: str | int | None = None) -> bool:
        if model is None:
            request: Any = pb.ServerReadyRequest()
            answer = await self._connection.call(self._stub.ServerReady, request, None)
        else:
            request = pb.ModelReadyRequest(name=model, version=str(version or ""))
            answer = await self._connection.call(self._stub.ModelReady, request, None)
        return bool(answer.ready)

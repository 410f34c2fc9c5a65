"""``inference.GRPCInferenceService``: protobuf in, the manager and the codec, protobuf out.

ModelInfer routes a request without a version to the stable or the canary by a hash of its
request id (generated here first when the request has none), so a retry meets the same
version; ``model_version`` or the request parameter ``driftgate_version`` pins a version.
Routed requests are mirrored to the shadow version, if any, after the answer is ready.

Errors are raised as ``DriftgateError`` subclasses; ``driftgate.core.rpc`` maps them to statuses
for every method at once. Methods not defined here answer UNIMPLEMENTED through the generated
base class.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from driftgate import __version__
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.core.auth import Credentials, Role
from driftgate.core.errors import DriftgateError, InvalidInput, ResourceExhausted
from driftgate.core.rpc import authorize, name_worker
from driftgate.gateway import describe
from driftgate.gateway.dataplane.codec import check_request, payload_bytes
from driftgate.gateway.dataplane.version import VersionRuntime
from driftgate.gateway.manager import ModelManager
from driftgate.gateway.shadow import ShadowMirror

__all__ = ["EXTENSIONS", "PIN_PARAMETER", "InferenceServicer"]

#: request parameter that pins a version, like the model_version field
PIN_PARAMETER = "driftgate_version"

# Only what is implemented (ServerMetadata must not promise more).
EXTENSIONS = ("model_repository", "model_configuration", "statistics")

Context = grpc.aio.ServicerContext[Any, Any]


class RequestIds:
    """Ids for requests that came without one: unique across processes, cheap to make."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


class Admission:
    """The server-wide bound on inference requests in progress and their bytes."""

    def __init__(
        self, max_requests: int, max_bytes: int, refused: Callable[[str], None] | None = None
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._on_refusal = refused  # told which limit refused a request
        self.requests = 0
        self.bytes = 0

    def admit(self, size: int) -> _Admitted:
        """Count a request of ``size`` bytes in, for the length of a ``with`` block."""
        over_requests = self.requests >= self.max_requests
        if over_requests or (self.bytes and self.bytes + size > self.max_bytes):
            if self._on_refusal is not None:
                self._on_refusal("requests" if over_requests else "bytes")
            raise ResourceExhausted(
                f"the gateway is at its limit ({self.requests} requests, {self.bytes} bytes "
                f"in progress; --max-in-flight-requests {self.max_requests}, "
                f"--max-in-flight-bytes {self.max_bytes}); retry later"
            )
        self.requests += 1
        self.bytes += size
        return _Admitted(self, size)


class _Admitted:
    """An admitted request; leaving the ``with`` block counts it out.

    A plain class rather than ``contextlib.contextmanager``: the generator costs about three
    times as much, on every request.
    """

    __slots__ = ("_admission", "_size")

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission = admission
        self._size = size

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._admission.requests -= 1
        self._admission.bytes -= self._size


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        manager: ModelManager,
        mirror: ShadowMirror | None = None,
        admission: Admission | None = None,
        stream_concurrency: int = 64,
        credentials: Credentials | None = None,
        expired: Callable[[], None] | None = None,
    ) -> None:
        #: who may load and unload models (RepositoryModelLoad/Unload are operator calls)
        self._credentials = credentials or Credentials()
        self._manager = manager
        self._mirror = mirror
        self._ids = RequestIds()
        self._admission = admission or Admission(1 << 30, 1 << 62)
        self._stream_concurrency = stream_concurrency
        self._on_expired = expired  # told of every call dropped for its passed deadline
        self.ready = False

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> Any:
        # A gateway whose repository watcher stopped would serve on but never swap again.
        return pb.ServerReadyResponse(ready=self.ready and self._manager.watcher_healthy())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> Any:
        return pb.ModelReadyResponse(ready=self._manager.is_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:
        return pb.ServerMetadataResponse(
            name="driftgate", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:
        version = self._manager.resolve(request.name, request.version)
        state = self._manager.state(request.name)
        assert state is not None
        return describe.model_metadata(state, version)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> Any:
        version = self._manager.resolve(request.name, request.version)
        return pb.ModelConfigResponse(config=describe.model_config(version))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Context) -> Any:
        await name_worker(context, self._manager.settings.worker)
        if request.name:
            if request.version:
                versions = [self._manager.resolve(request.name, request.version)]
            else:
                self._manager.resolve(request.name)
                state = self._manager.state(request.name)
                versions = list(state.loaded.values()) if state else []
        elif request.version:
            raise InvalidInput("ModelStatistics: a version needs a model name")
        else:
            versions = [v for s in self._manager.states() for v in s.loaded.values()]
        versions.sort(key=lambda v: (v.model, v.version))
        return pb.ModelStatisticsResponse(
            model_stats=[describe.model_statistics(v) for v in versions]
        )

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> Any:
        return describe.repository_index(self._manager, request.ready)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Any:
        authorize(self._credentials, Role.OPERATOR, context)
        if request.parameters:
            raise InvalidInput(
                "RepositoryModelLoad: parameters (config or file overrides) are not supported; "
                "write a new version into the repository instead"
            )
        await self._manager.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Any:
        authorize(self._credentials, Role.OPERATOR, context)
        await self._manager.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            # Under overload a call can wait in gRPC's queue past its client's deadline; its
            # answer would reach nobody, so it costs no decoding and no model call.
            if self._on_expired is not None:
                self._on_expired()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request's deadline passed {-remaining * 1e3:.0f} ms before the gateway "
                "could take it (the gateway is overloaded); it was not run",
            )
        return await self._answer(request)

    async def _answer(self, request: pb.ModelInferRequest) -> Any:
        check_request(request, self._manager.settings.max_request_id_bytes)
        with self._admission.admit(payload_bytes(request)):
            request_id = request.id or self._ids.next()
            pinned = request.model_version
            if not pinned and request.parameters:
                pinned = _pinned_version(request.parameters)
            if pinned:
                version = self._manager.resolve(request.model_name, pinned)
                return await self.infer(version, request, request_id)
            route = self._manager.route(request.model_name)
            return await self.infer(route.pick(request_id), request, request_id, route.shadow)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answer a stream's requests concurrently; each response carries its request's id.

        As in Triton, responses may come back in another order than the requests. At most
        ``stream_concurrency`` requests of one stream are in progress at once, so a client
        that writes faster than it reads is slowed down rather than buffered without bound.
        """
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._stream_concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = await self._answer(request)
                await responses.put(pb.ModelStreamInferResponse(infer_response=response))
            except DriftgateError as exc:
                # The id tells a streaming client which of its requests failed; what a
                # refused request carried beyond the limits is not echoed back.
                limit = self._manager.settings.max_request_id_bytes
                failed = pb.ModelInferResponse(
                    model_name=request.model_name if len(request.model_name) <= 64 else "",
                    model_version=request.model_version[:20],
                    id=request.id if len(request.id) <= limit else "",
                )
                await responses.put(
                    pb.ModelStreamInferResponse(error_message=exc.message, infer_response=failed)
                )
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                await responses.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await responses.get()) is not None:
                yield item
            await reader  # a broken request stream raises here
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def infer(
        self,
        version: VersionRuntime,
        request: pb.ModelInferRequest,
        request_id: str = "",
        shadow: VersionRuntime | None = None,
    ) -> Any:
        wanted = [o.name for o in request.outputs] if request.outputs else ()
        answer = await version.infer(request, request_id, wanted)
        if shadow is not None and self._mirror is not None:
            self._mirror.submit(shadow, request, answer.outputs[0])
        return pb.ModelInferResponse(
            model_name=version.model,
            model_version=str(version.version),
            id=request_id,
            outputs=answer.tensors,
            raw_output_contents=answer.raw,
        )


def _pinned_version(parameters: Any) -> str:
    """The version named by the ``driftgate_version`` request parameter, or ""."""
    if PIN_PARAMETER not in parameters:
        return ""
    parameter = parameters[PIN_PARAMETER]
    kind = parameter.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return str(parameter.int64_param)
    if kind == "string_param":
        return str(parameter.string_param)
    raise InvalidInput(f"parameter '{PIN_PARAMETER}' must be an integer version or a string")

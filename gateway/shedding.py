"""Load shedding: ModelInfer calls beyond a bound are refused before their message is read.

Under a load the gateway cannot keep up with, calls pile up inside gRPC and the event loop
before any handler sees them (a one-row call runs inline, so a counter in the handler stays near
zero while the queue in front of it grows). The bound therefore counts calls from the moment
gRPC hands one to the server until it is finished, in a server interceptor, and a call past it
is answered RESOURCE_EXHAUSTED at once: its bytes are never parsed, no tensor is decoded, so a
refusal costs a small share of an answer and the admitted calls keep a bounded wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

__all__ = ["MODEL_INFER", "LoadShedder"]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

if TYPE_CHECKING:  # generic in the stubs only
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class LoadShedder(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses ModelInfer calls while ``limit`` of them are waiting or running.

    Other methods (health, metadata, control) pass untouched, so an operator can still reach an
    overloaded gateway. ``refused`` is told of every refusal (for the admission metric).
    """

    def __init__(self, limit: int, refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.pending = 0
        self._on_refusal = refused
        # No deserializer: a refused call's bytes are never parsed.
        self._refusal = grpc.unary_unary_rpc_method_handler(self._refuse)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        if details.method != MODEL_INFER:
            return await continuation(details)
        if self.pending >= self.limit:
            if self._on_refusal is not None:
                self._on_refusal()
            return self._refusal
        task = asyncio.current_task()
        if task is not None:  # this call's task: done however the call ends, so never leaks
            self.pending += 1
            task.add_done_callback(self._release)
        return await continuation(details)

    def _release(self, task: asyncio.Task[Any]) -> None:
        self.pending -= 1

    async def _refuse(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the gateway is overloaded: {self.pending} inference calls are waiting or running "
            f"(--max-pending-infers {self.limit}); retry later",
        )

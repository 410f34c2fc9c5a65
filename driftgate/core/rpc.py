"""Plumbing shared by driftgate's gRPC servers (gateway and monitor).

``Guarded`` wraps every method of a servicer with ``guard``: a ``DriftgateError`` becomes its
gRPC status and message; anything else becomes INTERNAL with a generic message and a logged
traceback. The wrapping is applied to the servicer object once, so no RPC can forget it, and
unlike a server interceptor it costs nothing per call beyond one extra frame.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from driftgate.core.errors import DriftgateError

__all__ = ["Guarded", "guard", "serve_until_signalled", "write_ready_file"]

log = logging.getLogger(__name__)

_INTERNAL = "internal error; see the server log"


def guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map exceptions of one servicer method (unary or server-streaming) to gRPC statuses."""
    if inspect.isasyncgenfunction(method):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async for item in method(request, context):
                    yield item
            except DriftgateError as exc:
                await context.abort(grpc.StatusCode[exc.code.name], exc.message)
            except Exception:
                log.exception("unexpected error in %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(request, context)
        except DriftgateError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)

    return unary


class Guarded:
    """A servicer whose coroutine methods are all wrapped by ``guard``."""

    def __init__(self, servicer: object) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._servicer, name)
        if inspect.iscoroutinefunction(attribute) or inspect.isasyncgenfunction(attribute):
            return guard(attribute)
        return attribute


def write_ready_file(path: Path | None, **info: Any) -> None:
    """Atomically write ``info`` (ports, pid) as JSON for a supervisor waiting on readiness."""
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(info))
    os.replace(temporary, path)


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    name: str,
    grace: float,
) -> None:
    """Start, run until SIGTERM or SIGINT, then drain (within ``grace`` seconds) and stop."""
    await start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down: draining for up to %.1f s", grace)
    await stop()
    log.info("%s stopped", name)

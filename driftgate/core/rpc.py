"""Plumbing shared by driftgate's gRPC servers (gateway and monitor).

``Guarded`` wraps every method of a servicer with ``guard``: a ``DriftgateError`` becomes its
gRPC status and message; anything else becomes INTERNAL with a generic message and a logged
traceback. The wrapping is applied to the servicer object once, so no RPC can forget it, and
unlike a server interceptor it costs nothing per call beyond one extra frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import inspect
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from driftgate.core.auth import Credentials, Role
from driftgate.core.errors import DriftgateError
from driftgate.core.tls import ClientTLS, ServerTLS

__all__ = [
    "RELEASE_SECONDS",
    "Guarded",
    "aio_channel",
    "authorize",
    "channel",
    "channel_credentials",
    "guard",
    "serve_until_signalled",
    "WORKER_METADATA",
    "name_worker",
    "server_credentials",
    "write_ready_file",
]

log = logging.getLogger(__name__)

#: seconds a stopping gateway may take past its delay and drain to release what it holds
#: (models, the last report, the metrics server) and exit, before it is declared stuck
RELEASE_SECONDS = 10.0

_INTERNAL = "internal error; see the server log"


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """Server credentials that read ``tls``'s files again when they change."""
    lock = threading.Lock()
    last = [tls.stamp()]

    def configuration() -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
        )

    def fetch() -> Any:
        with lock:
            try:
                stamp = tls.stamp()
                if stamp == last[0]:
                    return None
                fresh = configuration()
            except (OSError, ValueError) as exc:
                log.warning("TLS files unreadable (%s); serving the previous certificate", exc)
                return None
            last[0] = stamp
            log.info("TLS files changed; offering %s for the next handshakes", tls.cert)
            return fresh

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=tls.mutual
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    if (tls.cert is None) != (tls.key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes() if tls.ca else None,
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )


def channel(
    address: str, tls: ClientTLS | None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A blocking channel: TLS when ``tls`` is given, plaintext otherwise."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, channel_credentials(tls), options=options)


def aio_channel(
    address: str, tls: ClientTLS | None, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """An asyncio channel: TLS when ``tls`` is given, plaintext otherwise."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)


def authorize(credentials: Credentials, role: Role, context: Any) -> None:
    """Raise UNAUTHENTICATED unless the call carries ``role``'s token or certificate."""
    if not credentials.required(role):
        return
    credentials.check(role, context.invocation_metadata() or (), context.auth_context() or {})


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


WORKER_METADATA = "driftgate-worker"
"""Response metadata naming the ``--workers`` process whose own figures a response carries."""


async def name_worker(context: Any, worker: str) -> None:
    """Under ``--workers``, say which worker answered (ModelStatistics, GetStatus)."""
    if worker:
        await context.send_initial_metadata(((WORKER_METADATA, worker),))


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    name: str,
    grace: float,
    *,
    announce: Callable[[], Awaitable[None]] | None = None,
    delay: float = 0.0,
    release: float | None = None,
) -> None:
    """Start, run until SIGTERM or SIGINT, then drain (within ``grace`` seconds) and stop.

    Behind a load balancer, ``announce`` (health NOT_SERVING) runs first and the process
    keeps serving for ``delay`` seconds, the time the balancer takes to see it and stop
    routing new requests to it; a second signal ends the delay at once.

    With ``release`` (seconds), a process that has not exited ``delay + grace + release``
    seconds after the signal is stuck: it logs an error, writes the stacks of its threads and
    tasks to stderr and exits with status 1, so an orchestrator never waits on it forever and
    its log says where it hung. Without, stopping may take as long as ``stop`` does (the
    monitor lets a running evaluation or retraining finish).
    """
    # Handlers first: start() announces readiness (the ready file) before it returns, and a
    # signal sent on that news must find them, not Python's default (exit at once).
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    await start()
    await signalled.wait()
    if release is not None:
        _exit_if_stuck(name, delay + grace + release, loop)
    if announce is not None:
        signalled.clear()
        await announce()
        if delay > 0:
            log.info("shutting down: not serving health, still answering for %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signalled.wait(), delay)
    log.info("shutting down: draining for up to %.1f s", grace)
    await stop()
    log.info("%s stopped", name)


def _exit_if_stuck(name: str, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
    """Exit with status 1, after the stacks of every thread and task, unless gone in time.

    A daemon timer: it never holds up an exit, and it still fires while the interpreter
    waits for other threads at exit. The tasks' stacks show what each coroutine awaits,
    which a thread's stack (the event loop waiting in ``select``) does not.
    """

    def stuck() -> None:
        log.error(
            "%s did not exit within %.1f s of the signal; the stacks of its threads and tasks "
            "follow, then it exits with status 1",
            name,
            seconds,
        )
        faulthandler.dump_traceback(all_threads=True)
        with contextlib.suppress(Exception):  # read from another thread: best effort
            for task in asyncio.all_tasks(loop):
                print(f"Task {task.get_name()} awaits (outermost first):", file=sys.stderr)
                print("\n".join(_awaiting(task.get_coro())), file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, stuck)
    timer.daemon = True
    timer.name = "driftgate-exit-watchdog"
    timer.start()


def _awaiting(coroutine: Any) -> list[str]:
    """Where a suspended coroutine and each coroutine it awaits stand, outermost first."""
    lines = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return lines

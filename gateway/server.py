"""The gateway process: a grpc.aio server with inference, control, health and reflection,
plus /metrics.

``GatewayServer.start()`` binds and returns; ``stop(grace)`` drains; ``serve()`` runs until
SIGTERM or SIGINT and then drains within the grace period.

Every RPC handler is wrapped once, here, by ``guard``: a ``DriftgateError`` becomes its gRPC
status and message; anything else becomes INTERNAL with a generic message and a logged
traceback. The wrapping is applied to the generated method table, so no RPC can forget it,
and unlike a server interceptor it costs nothing per call beyond one extra frame.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from driftgate.core._proto.driftgate.control.v1 import control_pb2, control_pb2_grpc
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.core.auth import TokenSource
from driftgate.core.deployment import DeploymentStore
from driftgate.core.objectstore import open_repository
from driftgate.core.rpc import (
    RELEASE_SECONDS,
    Guarded,
    serve_until_signalled,
    server_credentials,
    write_ready_file,
)
from driftgate.gateway.control import ControlServicer
from driftgate.gateway.dataplane.probe import lower_priority
from driftgate.gateway.feedback import FeedbackServicer
from driftgate.gateway.manager import ModelManager
from driftgate.gateway.metrics import GatewayMetrics
from driftgate.gateway.reporter import LabelBuffer, MonitorReporter, StatisticsHub
from driftgate.gateway.servicer import Admission, InferenceServicer
from driftgate.gateway.settings import GatewaySettings
from driftgate.gateway.shadow import ShadowMirror
from driftgate.gateway.shedding import LoadShedder

__all__ = ["GatewayServer"]

log = logging.getLogger(__name__)

_INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_CONTROL_SERVICE = control_pb2.DESCRIPTOR.services_by_name["Control"].full_name


class GatewayServer:
    """One gateway process serving one repository."""

    def __init__(
        self, settings: GatewaySettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self._infer_executor = ThreadPoolExecutor(settings.infer_threads, "driftgate-infer")
        # Loading and warming a version must not steal the serving thread's core, so the
        # loader threads run at a lower priority, but only with one onnxruntime thread per
        # session: a session of more builds its own pool of threads on the loader thread,
        # and Linux gives them the loader's priority for good (a process may lower its
        # threads' priority but not raise it again). Two loader threads: a load that hangs
        # (until the load probe gives up on it) or takes long holds one, and the other
        # models' loads and Control's go on.
        self._load_executor = ThreadPoolExecutor(
            2, "driftgate-load", initializer=lower_priority if settings.ort_threads == 1 else None
        )
        repository = open_repository(settings.repository)
        self.hub: StatisticsHub | None = None
        self.labels: LabelBuffer | None = None
        self.reporter: MonitorReporter | None = None
        if settings.monitor is not None:
            self.hub = StatisticsHub()
            self.labels = LabelBuffer(settings.label_buffer)
            s = settings.security
            self.reporter = MonitorReporter(
                settings.monitor,
                self.hub,
                self.labels,
                settings.report_interval,
                bucket_seconds=settings.report_bucket_seconds,
                max_buckets=settings.report_max_buckets,
                tls=settings.monitor_tls,
                token=TokenSource(s.ingest_token, s.ingest_token_file),
                registry=self.registry,
            )
        self.manager = ModelManager(
            repository,
            settings,
            self.metrics,
            self._infer_executor,
            self._load_executor,
            self.hub,
        )
        self.health = HealthServicer()
        self.mirror = ShadowMirror(self.metrics, settings.shadow_in_flight)
        self.metrics.watch(self.manager.snapshot)
        self.admission = Admission(
            settings.max_in_flight_requests,
            settings.max_in_flight_bytes,
            lambda limit: self.metrics.admission_refusals.labels(limit).inc(),
        )
        self.shedder = LoadShedder(
            settings.pending_infers_limit,
            lambda: self.metrics.admission_refusals.labels("pending").inc(),
        )
        self.credentials = settings.security.credentials()
        self.inference = InferenceServicer(
            self.manager,
            self.mirror,
            self.admission,
            settings.stream_concurrency,
            self.credentials,
            self.metrics.expired_requests.inc,
        )
        self.control = ControlServicer(
            self.manager,
            DeploymentStore(repository),
            self.metrics,
            self.mirror,
            self.credentials,
        )
        self._server: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self._health_task: asyncio.Task[None] | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Load the repository, bind the ports and start serving; returns once serving."""
        limit = self.settings.max_message_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),
                # gRPC's core drops a call that waited longer than this for the server to take
                # it, in C++, before any Python runs for it
                ("grpc.server_max_unrequested_time_in_server", self.settings.max_queue_seconds),
                # and, before a call waits at all, drops it if that queue is full: at random
                # past the soft bound (random early detection), always at the hard one
                ("grpc.server.max_pending_requests", self.settings.max_queued_calls // 2),
                ("grpc.server.max_pending_requests_hard_limit", self.settings.max_queued_calls),
            ],
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            interceptors=[self.shedder],
        )
        server: Any = _HotMethodsOnly(self._server)  # what the add_*_to_server calls need
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Guarded(self.inference), server)
        control_pb2_grpc.add_ControlServicer_to_server(Guarded(self.control), server)
        feedback_pb2_grpc.add_FeedbackServicer_to_server(
            Guarded(FeedbackServicer(self.labels, self.credentials)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                _INFERENCE_SERVICE,
                _CONTROL_SERVICE,
                feedback_pb2.DESCRIPTOR.services_by_name["Feedback"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        tls = self.settings.security.tls
        if tls is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, server_credentials(tls))
        self.manager.listeners.append(self._model_health)
        await self.manager.refresh()
        await self._server.start()
        self._start_metrics()
        self.manager.start_watching()
        if self.reporter is not None:
            self.reporter.start()
        self.inference.ready = True
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._health_task = asyncio.create_task(self._follow_health(), name="driftgate-health")
        write_ready_file(
            self.settings.ready_file,
            grpc_port=self.port,
            metrics_port=self.metrics_port,
            pid=os.getpid(),
        )
        log.info("gateway serving on %s:%d", self.settings.host, self.port)

    def _start_metrics(self) -> None:
        if self.settings.metrics_port < 0:
            return
        host = self.settings.metrics_host
        server, _thread = start_http_server(
            self.settings.metrics_port, addr=host, registry=self.registry
        )
        self._metrics_http = server
        self.metrics_port = server.server_port

    async def _follow_health(self) -> None:
        """Server health follows the repository watcher: a gateway that can no longer see its
        repository would serve on but never swap again, so it stops reporting SERVING."""
        serving = True
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            healthy = self.manager.watcher_healthy()
            if healthy != serving:
                serving = healthy
                status = health_pb2.HealthCheckResponse
                await self.health.set("", status.SERVING if healthy else status.NOT_SERVING)
                log.warning("repository watcher %s", "recovered" if healthy else "is stale")

    def _model_health(self, model: str, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        asyncio.get_running_loop().create_task(self.health.set(model, status))

    async def announce_shutdown(self) -> None:
        """Health NOT_SERVING and ServerReady false, while requests are still answered: what
        a load balancer's probe sees before the drain begins."""
        self.inference.ready = False
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, release."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self.announce_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        log.info("shutting down: requests drained; releasing models and sending the last report")
        await self.mirror.close()
        await self.manager.close()
        if self.reporter is not None:
            await self.reporter.stop()  # a last report with the final counts
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self._infer_executor.shutdown(wait=False)
        self._load_executor.shutdown(wait=False)

    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT, then drain and stop."""

        async def start() -> None:
            await self.start()
            freeze_start_up()

        await serve_until_signalled(
            start,
            self.stop,
            "gateway",
            self.settings.grace_seconds,
            announce=self.announce_shutdown,
            delay=self.settings.shutdown_delay,
            release=RELEASE_SECONDS,
        )


def freeze_start_up() -> None:
    """Leave what start-up made (modules, sessions, the servers) out of garbage collection.

    Those tens of thousands of objects live as long as the process, yet every full collection
    walks them: a 25-30 ms pause of the event loop, about every 20 s at 1,400 requests/s
    (benchmarks/request_cost.py). Only the process's own ``serve()`` freezes them; a server
    started inside another program (tests) leaves that program's collector alone.
    """
    gc.collect()
    gc.freeze()


#: methods gRPC accepts through a queue of their own; every other method shares one
_HOT_METHODS = frozenset(
    {f"/{_INFERENCE_SERVICE}/ModelInfer", f"/{_INFERENCE_SERVICE}/ModelStreamInfer"}
)


class _HotMethodsOnly:
    """Registers only the inference calls as gRPC "registered methods"; the rest are served
    through the generic handlers the generated code adds too.

    grpc.aio keeps one accept outstanding per registered method and, for every call it
    accepts, waits on all of them at once (``asyncio.wait``): about 0.35 µs of the event loop
    per registered method per call, in a micro-benchmark (23 µs with 35 methods, 11 with 2).
    Calls of the other methods (health, control, metadata, reflection) are rare and share the
    generic accept queue, whose handler lookup costs a few dictionary probes. Each hot method
    keeps its own accept queue, so ``--max-queued-calls`` bounds inference apart from health.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server: Any = server  # add_registered_method_handlers is missing from the stubs

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        hot = {name: h for name, h in handlers.items() if f"/{service}/{name}" in _HOT_METHODS}
        if hot:
            self._server.add_registered_method_handlers(service, hot)

"""The monitor process: a grpc.aio server with the Monitor and Feedback services, plus /metrics.

``MonitorServer.start()`` opens the store (migrating it), binds and returns; ``stop(grace)``
drains; ``serve()`` runs until SIGTERM or SIGINT. Background tasks refresh the gauges every
``evaluate_interval`` seconds and prune the store every ``prune_interval`` seconds.

Threads: the RPCs (ingest, labels, queries) run on one store thread, in order, so that a
report is acknowledged as soon as it is committed; the gauge evaluation and the prune run on
a thread of their own, so a slow evaluation never queues an acknowledgement behind it; the
policy scheduler's jobs run on its own pool, only while this monitor leads (``monitor.leader``:
one policy runner among the monitors of a store; the health service ``policy-runner`` says
which). ``Monitor`` is shared by all of them, and that
is safe: its profile, tester and model-metadata caches are dictionaries filled on first use
and never emptied (a lookup racing another reads the same file twice and keeps one equal
result; each dictionary operation is atomic under the GIL); the set of failing versions
belongs to the evaluation alone; Prometheus metrics lock their own values; the store's
SQLAlchemy engine hands each call a connection of its own. The critical-value cache the
drift testers share is such a dictionary too, but its eviction once full (``monitor.drift``)
is two steps, so two threads evicting at once can fail one evaluation (logged, counted,
retried at the next). On SQLite (WAL) readers never wait for the writer; writes (ingest,
labels, prune, policy state) still take the database's one write lock in turn, up to its
busy timeout, so a long prune transaction can delay an ingest there; on PostgreSQL they
lock only the rows they touch.

Errors map to statuses as in the gateway: a ``DriftgateError`` becomes its status and
message, anything else INTERNAL with a logged traceback (``driftgate.core.rpc.Guarded`` wraps each
method).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fpb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
from driftgate.core.auth import TokenSource
from driftgate.core.rpc import Guarded, serve_until_signalled, server_credentials, write_ready_file
from driftgate.monitor.autopilot import Autopilot
from driftgate.monitor.control_client import GatewayControl
from driftgate.monitor.leader import Leadership, LeadershipRefused, default_identity
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.scheduler import PolicyScheduler
from driftgate.monitor.service import Monitor
from driftgate.monitor.servicer import MonitorServicer
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Store
from driftgate.monitor.web import WebServer, report_page

__all__ = ["POLICY_RUNNER", "MonitorServer"]

log = logging.getLogger(__name__)

POLICY_RUNNER = "policy-runner"
"""The health service that is SERVING on the monitor that leads (runs the policy jobs) and
NOT_SERVING on the others: ``driftgate health --monitor ADDR --service policy-runner``."""


class MonitorServer:
    """One monitor process."""

    def __init__(
        self, settings: MonitorSettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = MonitorMetrics(self.registry)
        self._executor = ThreadPoolExecutor(1, "driftgate-store")  # RPCs: ingest first
        self._background = ThreadPoolExecutor(1, "driftgate-evaluate")  # gauges and prune
        self.monitor: Monitor | None = None
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._metrics_http: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.autopilot: Autopilot | None = None
        self.scheduler: PolicyScheduler | None = None
        self.leadership: Leadership | None = None
        self._control: GatewayControl | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Open the store, bind the ports and start serving; returns once serving."""
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(
            self._executor, lambda: Store(self.settings.url, self.settings.bucket_seconds)
        )
        self.monitor = Monitor(self.settings, store, self.metrics)
        retrain = None
        if self.settings.scheduler:
            await self._start_policy(store)
            assert self.scheduler is not None
            retrain = self.scheduler.trigger_retrain
        credentials = self.settings.security.credentials()
        servicer = Guarded(MonitorServicer(self.monitor, self._executor, retrain, credentials))
        limit = self.settings.max_message_bytes
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        pb_grpc.add_MonitorServicer_to_server(servicer, self._server)
        fpb_grpc.add_FeedbackServicer_to_server(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["Monitor"].full_name,
                fpb.DESCRIPTOR.services_by_name["Feedback"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        tls = self.settings.security.tls
        if tls is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, server_credentials(tls))
        await self._server.start()
        self._start_metrics()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._publish_leadership()
        self._tasks = [
            loop.create_task(self._every(self.settings.evaluate_interval, self.monitor.evaluate)),
            loop.create_task(self._every(self.settings.prune_interval, self.monitor.prune)),
        ]
        if self.scheduler is not None:
            watch = self._every(self.settings.leader_check_interval, self.scheduler.ensure_running)
            self._tasks.append(loop.create_task(watch))
        write_ready_file(
            self.settings.ready_file,
            grpc_port=self.port,
            metrics_port=self.metrics_port,
            pid=os.getpid(),
        )
        log.info("monitor serving on %s (gRPC port %d), store %s", address, self.port, store.url)

    async def _start_policy(self, store: Store) -> None:
        """The autopilot and its scheduler, run while this monitor leads (``monitor.leader``);
        ``LeadershipRefused`` (SQLite, another monitor leads) ends the start."""
        s, loop = self.settings, asyncio.get_running_loop()
        if s.gateway:
            token = TokenSource(s.security.control_token, s.security.control_token_file)
            self._control = GatewayControl(s.gateway, token, tls=s.gateway_tls)
        assert self.monitor is not None
        self.autopilot = Autopilot(self.monitor, self._control, s.data_dir / "retrain")
        identity = s.monitor_id or default_identity()

        def changed(leading: bool) -> None:
            assert self.scheduler is not None
            self.scheduler.set_leading(leading)
            asyncio.run_coroutine_threadsafe(self._publish_leadership(), loop)

        self.leadership = Leadership(
            store, identity, s.leader_check_interval, self.registry, changed
        )
        self.scheduler = PolicyScheduler(self.autopilot, s.policy_sync_interval, self.leadership)
        try:
            await loop.run_in_executor(self._executor, self.leadership.start)
        except LeadershipRefused:
            if self._control is not None:
                self._control.close()
            await loop.run_in_executor(self._executor, store.close)
            raise

    async def _publish_leadership(self) -> None:
        """Health service ``policy-runner``: SERVING on the leader, NOT_SERVING elsewhere."""
        leading = self.leadership is not None and self.leadership.leading
        status = health_pb2.HealthCheckResponse
        await self.health.set(POLICY_RUNNER, status.SERVING if leading else status.NOT_SERVING)

    async def _every(self, seconds: float, job: Callable[[], Any]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._background, job)
            except Exception:
                log.exception("periodic %s failed", getattr(job, "__name__", job))
            await asyncio.sleep(seconds)

    def _start_metrics(self) -> None:
        if self.settings.metrics_port < 0:
            return
        assert self.monitor is not None
        # /metrics and /report/MODEL on one port; the report asks an unguarded servicer of
        # its own (reads only, as the queries are).
        s, loop = self.settings, asyncio.get_running_loop()
        page = report_page(MonitorServicer(self.monitor, self._executor), loop)
        server = WebServer(s.metrics_host, s.metrics_port, self.registry, page)
        server.start()
        self._metrics_http = server
        self.metrics_port = server.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight calls finish within ``grace`` seconds, close."""
        grace = self.settings.grace_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.leadership is not None:  # stops acting first, then releases the lock
            await loop.run_in_executor(None, self.leadership.stop)
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._control is not None:
            self._control.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        # An evaluation already running finishes before the store closes under it.
        await loop.run_in_executor(None, self._background.shutdown)
        if self.monitor is not None:
            await loop.run_in_executor(self._executor, self.monitor.store.close)
        self._executor.shutdown(wait=True)

    async def serve(self) -> None:
        """Start, then run until SIGTERM/SIGINT, then drain and stop."""
        await serve_until_signalled(self.start, self.stop, "monitor", self.settings.grace_seconds)

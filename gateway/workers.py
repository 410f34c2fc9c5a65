"""``driftgate serve --workers N``: N serving processes on one port, supervised.

The workers share the gRPC port (SO_REUSEPORT: the kernel spreads new connections over them)
and each serves its own ``/metrics`` on a loopback port, which this parent merges at scrape
time on the configured metrics port (``metrics.WorkerMetrics``). A worker that dies while the
group is serving (a crash, the OOM killer) is started again after a backoff that doubles from
``FIRST_BACKOFF`` up to ``MAX_BACKOFF`` and is forgotten once a worker has served for
``STABLE_SECONDS``; restarts are counted in
``driftgate_gateway_worker_restarts_total{worker}``. Requests in flight on a dying worker's
connections fail with UNAVAILABLE (their process is gone); clients reconnect to the workers
alive, and the restarted one takes new connections once it has loaded its models. Each worker
counts the requests it answered: ModelStatistics and Control GetStatus say which worker
answered in their ``driftgate-worker`` response metadata, and the merged ``/metrics`` sum every
worker's counters (a restarted worker's start again from zero, which Prometheus reads as a
counter reset). SIGTERM and SIGINT go to every worker, each of which drains as a single gateway
does; the parent exits when they all have.

The parent writes the ready file (with the merged metrics port and its own pid) once every
worker has written its own, so a supervisor sees one ready signal for the group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from driftgate.core.rpc import write_ready_file
from driftgate.gateway.settings import GatewaySettings

__all__ = ["FIRST_BACKOFF", "MAX_BACKOFF", "STABLE_SECONDS", "WorkerSupervisor"]

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
"""Seconds before the first restart of a worker that died."""
MAX_BACKOFF = 30.0
"""The backoff doubles with each death in a row, up to this."""
STABLE_SECONDS = 60.0
"""A worker that served this long before dying is restarted after ``FIRST_BACKOFF`` again."""


def _serve_worker(settings: GatewaySettings, log_level: int) -> None:
    from driftgate.gateway.server import GatewayServer

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(GatewayServer(settings).serve())


@dataclass
class _Worker:
    index: int
    ready_file: Path
    process: Any = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    restarts: int = 0


class WorkerSupervisor:
    """Start ``workers`` gateways on one port, restart those that die, stop them on a signal.

    Usage: ``sys.exit(WorkerSupervisor(settings, 2).run())``.
    """

    def __init__(self, settings: GatewaySettings, workers: int) -> None:
        self.settings = settings
        self.port = settings.grpc_port or _free_port(settings.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="driftgate-workers-"))
        # Each worker serves its own metrics on a loopback port; this parent merges them.
        self._base = replace(
            settings, grpc_port=self.port, metrics_port=0, metrics_host="127.0.0.1"
        )
        self._workers = [
            _Worker(i, self._workdir / f"worker-{i}.ready.json") for i in range(workers)
        ]
        self._context = multiprocessing.get_context("spawn")
        self._level = logging.getLogger().level
        self._stopping = False
        self._signalled: set[int] = set()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 when every worker stopped cleanly."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        try:
            for worker in self._workers:
                self._start(worker)
            if not self._all_ready():
                log.error("a worker exited during start-up; stopping the others")
                self._forward(signal.SIGTERM, None)
            else:
                self._announce_ready()
                self._supervise()
                self._signal_unsignalled()
            for worker in self._workers:
                worker.process.join()
            return 0 if all(w.process.exitcode == 0 for w in self._workers) else 1
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _start(self, worker: _Worker) -> None:
        worker.ready_file.unlink(missing_ok=True)
        settings = replace(self._base, ready_file=worker.ready_file, worker=str(worker.index))
        worker.process = self._context.Process(
            target=_serve_worker, args=(settings, self._level), name=f"worker-{worker.index}"
        )
        worker.process.start()
        worker.started = time.monotonic()
        worker.restart_at = None

    def _forward(self, signum: int, _frame: Any) -> None:
        self._stopping = True
        for worker in self._workers:
            process = worker.process
            if process is not None and process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)
                self._signalled.add(process.pid)

    def _signal_unsignalled(self) -> None:
        """A worker restarted while the signal was being forwarded has not had it."""
        for worker in self._workers:
            process = worker.process
            if process.pid not in self._signalled and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    def _all_ready(self) -> bool:
        while not all(w.ready_file.exists() for w in self._workers):
            if self._stopping or any(w.process.exitcode is not None for w in self._workers):
                return False
            time.sleep(0.05)
        return True

    def _announce_ready(self) -> None:
        metrics_port = self._serve_metrics()
        log.info("%d workers serving on port %d", len(self._workers), self.port)
        write_ready_file(
            self.settings.ready_file,
            grpc_port=self.port,
            metrics_port=metrics_port,
            pid=os.getpid(),
        )

    def _supervise(self) -> None:
        """Until a signal: restart each worker that died, after its backoff."""
        while not self._stopping:
            sentinels = [w.process.sentinel for w in self._workers if w.restart_at is None]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            now = time.monotonic()
            for worker in self._workers:
                if self._stopping:
                    return
                if worker.restart_at is None and worker.process.exitcode is not None:
                    self._schedule_restart(worker, now)
                elif worker.restart_at is not None and now >= worker.restart_at:
                    worker.restarts += 1
                    self._start(worker)

    def _schedule_restart(self, worker: _Worker, now: float) -> None:
        if now - worker.started >= STABLE_SECONDS:
            worker.backoff = FIRST_BACKOFF
        worker.ready_file.unlink(missing_ok=True)  # its metrics port is gone with it
        worker.restart_at = now + worker.backoff
        log.error(
            "worker %d (pid %s) exited with %s; restarting in %.1f s",
            worker.index, worker.process.pid, worker.process.exitcode, worker.backoff,
        )  # fmt: skip
        worker.backoff = min(worker.backoff * 2, MAX_BACKOFF)

    def _metric_urls(self) -> Iterator[str]:
        for worker in self._workers:
            try:
                info = json.loads(worker.ready_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # restarting: not serving metrics yet
                continue
            yield f"http://127.0.0.1:{info['metrics_port']}/metrics"

    def _serve_metrics(self) -> int:
        """Serve the workers' merged metrics and the restarts; the bound port (0: disabled)."""
        if self.settings.metrics_port < 0:
            return 0
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
        from prometheus_client.registry import Collector

        from driftgate.gateway.metrics import WorkerMetrics

        workers = self._workers

        class Supervision(Collector):
            def collect(self) -> Iterator[Metric]:
                restarts = CounterMetricFamily(
                    "driftgate_gateway_worker_restarts",
                    "Workers started again after they died",
                    labels=["worker"],
                )
                for w in workers:
                    restarts.add_metric([str(w.index)], w.restarts)
                yield restarts
                ready = sum(w.ready_file.exists() for w in workers)
                yield GaugeMetricFamily(
                    "driftgate_gateway_workers_ready", "Workers serving", value=ready
                )

        registry = CollectorRegistry()
        registry.register(WorkerMetrics(lambda: list(self._metric_urls())))
        registry.register(Supervision())
        server, _thread = start_http_server(
            self.settings.metrics_port, addr=self.settings.metrics_host, registry=registry
        )
        port: int = server.server_port
        return port


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port

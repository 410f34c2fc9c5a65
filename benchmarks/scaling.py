"""The scaling scenario: ``driftgate serve --workers 1`` and ``--workers 2`` under perf_analyzer.

Triton's perf_analyzer (a C++ gRPC client, light enough to leave the server most of a core)
sends one-row forest requests at a fixed concurrency (32) to a gateway of one worker, then to
one of two workers sharing the port. perf_analyzer measures three windows of ``duration / 3``
seconds each and reports their mean; the stability check is off (any three windows count), as
on a shared machine it would otherwise retry until it gives up. The binary comes from
``scripts/install_perf_analyzer.sh``; without it the scenario is skipped and says why.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import models
import procfs
import servers

PERF_ANALYZER = Path(
    os.environ.get(
        "PERF_ANALYZER", servers.ROOT / ".cache" / "perf_analyzer" / "bin" / "perf_analyzer"
    )
)


# Workers share the port with SO_REUSEPORT, which spreads connections, not requests. Triton's
# client shares one channel (one connection) among up to six of perf_analyzer's contexts by
# default, so 32 in flight rode on six connections, and a run could land most of them on one
# worker. One channel a context: a connection each (33 counted), split about evenly.
CLIENT_ENV = os.environ | {"TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT": "1"}


@dataclass(frozen=True)
class ScalingConfig:
    workers: tuple[int, ...] = (1, 2)
    concurrency: int = 32
    duration: float = 10.0  # seconds measured: three windows of a third each
    model: str = "forest"


def available() -> str | None:
    """None if perf_analyzer can run, else why not."""
    if os.access(PERF_ANALYZER, os.X_OK):
        return None
    return f"perf_analyzer is missing at {PERF_ANALYZER}: run scripts/install_perf_analyzer.sh"


def run(config: ScalingConfig, workdir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    missing = available()
    if missing:
        say(f"scaling skipped: {missing}")
        return {"skipped": missing}
    repository = workdir / "scaling-repository"
    models.write_model(repository, config.model)
    points = []
    for workers in config.workers:
        name = f"driftgate-workers-{workers}"
        server = servers.start_driftgate(
            name, repository, [config.model], workdir, "on", ["--workers", str(workers)]
        )
        try:
            point = {"workers": workers} | measure(config, server, workdir / f"{name}.csv")
        finally:
            server.stop()
        say(
            f"workers {workers}: {point['throughput']:.0f} req/s, p50 {point['p50_ms']:.2f} ms, "
            f"p99 {point['p99_ms']:.2f} ms, server CPU {point['server_cpu']}"
        )
        points.append(point)
    return {"model": config.model, "config": config.__dict__, "points": points}


def measure(config: ScalingConfig, server: servers.Server, csv_path: Path) -> dict[str, Any]:
    """One perf_analyzer run against ``server``: throughput, latencies, CPU on both sides."""
    window_ms = max(200, round(config.duration * 1000 / 3))
    command = [
        str(PERF_ANALYZER), "-i", "grpc", "-u", f"127.0.0.1:{server.port}", "-m", config.model,
        "-b", "1", "--concurrency-range", str(config.concurrency),
        "--measurement-mode", "time_windows", "--measurement-interval", str(window_ms),
        "--stability-percentage", "1000", "--max-trials", "3", "-f", str(csv_path),
    ]  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, started = procfs.cpu_seconds(server.pid), time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=config.duration * 4 + 120,
        stdin=subprocess.DEVNULL,
        env=CLIENT_ENV,
    )
    server_seconds = procfs.cpu_seconds(server.pid) - server_before
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{done.stdout[-2000:]}")
    row = _csv_row(csv_path)
    client = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    throughput = float(row["Inferences/Second"])
    return {
        "throughput": throughput,
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p90_ms": float(row["p90 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
        # Cores used over the whole run (three windows plus perf_analyzer's start-up).
        "server_cpu": round(server_seconds / wall, 2),
        "client_cpu": round(client / wall, 2),
    }


def _csv_row(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise RuntimeError(f"perf_analyzer wrote {len(rows)} rows to {path}, expected one")
    return rows[0]


def markdown(scaling: dict[str, Any] | None) -> list[str]:
    """The scenario's table for results.md."""
    if not scaling:
        return []
    for key in ("skipped", "error"):
        if key in scaling:
            return ["## Scaling", "", f"not measured: `{scaling[key][:300]}`", ""]
    config = scaling["config"]
    lines = [
        "## Scaling",
        "",
        f"{scaling['model']}, one row a request, perf_analyzer (gRPC, synchronous) at "
        f"concurrency {config['concurrency']}, three windows of {config['duration'] / 3:g} s.",
        "",
        "| gateway | req/s | p50 ms | p90 ms | p99 ms | server CPU | perf_analyzer CPU |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for p in scaling["points"]:
        lines.append(
            f"| --workers {p['workers']} | {p['throughput']:.0f} | {p['p50_ms']:.2f} "
            f"| {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['server_cpu']} | {p['client_cpu']} |"
        )
    return [*lines, ""]

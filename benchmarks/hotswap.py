"""The hot-swap scenario: flip the served version under load and watch failures, p99 and RSS.

A steady phase measures p99 with no swaps (again if other work on the machine disturbed it);
then, under the same load, ``deployment.json`` alternates {"stable": 1} / {"stable": 2} (temp file
+ os.replace). Each swap waits until a probe request is answered by the new version, so every
counted swap really happened; the gateway's VmRSS is read one interval after every swap.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import loadgen
import models
import procfs
import servers


@dataclass(frozen=True)
class HotswapConfig:
    swaps: int = 1000
    interval: float = 0.1  # seconds between one observed swap and the next write
    steady: float = 10.0  # seconds of the steady-state phase
    concurrency: int = 16
    poll_interval: float = 0.1  # the gateway's --poll-interval
    model: str = "forest"
    warmup: float = 2.0


def write_deployment(model_dir: Path, stable: int) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".deployment.", suffix=".tmp", dir=model_dir)
    with os.fdopen(fd, "w") as out:
        json.dump({"stable": stable}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, model_dir / "deployment.json")


class Probe:
    """Sends one inference request and says which version answered."""

    def __init__(self, port: int, request: bytes) -> None:
        from driftgate.core._proto.inference import grpc_service_pb2 as pb

        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._call = self._channel.unary_unary(
            loadgen.MODEL_INFER, response_deserializer=pb.ModelInferResponse.FromString
        )
        self._request = request

    def version(self) -> str:
        return str(self._call(self._request, timeout=5).model_version)

    def wait_for(self, version: int, timeout: float = 15.0) -> float:
        """Seconds until ``version`` answers; raises TimeoutError."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.version() == str(version):
                return time.perf_counter() - start
            time.sleep(0.01)
        raise TimeoutError(f"version {version} did not take traffic within {timeout:.0f} s")

    def close(self) -> None:
        self._channel.close()


def run(
    config: HotswapConfig,
    workdir: Path,
    load: loadgen.LoadGenerator,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    repository = workdir / "hotswap-repository"
    info = models.write_model(repository, config.model, versions=(1, 2))
    model_dir = repository / config.model
    write_deployment(model_dir, 1)
    request = loadgen.build_request(config.model, info.input_name, models.sample_row())
    extra = ["--poll-interval", str(config.poll_interval)]
    server = servers.start_driftgate(
        "driftgate-hotswap", repository, [config.model], workdir, "on", extra
    )
    probe = Probe(server.port, request)
    try:
        probe.wait_for(1)
        steady_job = loadgen.Job(
            server.port, request, config.concurrency, config.steady, config.warmup
        )
        steady = loadgen.measure_quietly(load, server.pid, steady_job, say=say)
        swapping = _swap_phase(config, server, probe, model_dir, request, load)
    finally:
        probe.close()
        server.stop()
    result: dict[str, Any] = {
        "model": config.model,
        "config": config.__dict__,
        "steady": steady,
        "swapping": swapping["load"],
        "swaps": swapping["swaps"],
        "swap_seconds_mean": swapping["swap_seconds_mean"],
        "swap_seconds_max": swapping["swap_seconds_max"],
        "rss_bytes": swapping["rss"],
        "failed_requests": steady["errors"] + swapping["load"]["errors"],
    }
    rss = swapping["rss"]
    if rss:
        result["rss_after_first"] = rss[0]
        result["rss_after_last"] = rss[-1]
        result["rss_growth"] = rss[-1] / rss[0] - 1
    steady_p99 = steady["p99_ms"]
    result["p99_ratio"] = swapping["load"]["p99_ms"] / steady_p99 if steady_p99 else None
    return result


def _swap_phase(
    config: HotswapConfig,
    server: servers.Server,
    probe: Probe,
    model_dir: Path,
    request: bytes,
    load: loadgen.LoadGenerator,
) -> dict[str, Any]:
    cap = config.swaps * (config.interval + config.poll_interval + 5) + 60
    job = loadgen.Job(
        server.port, request, config.concurrency, cap, config.warmup, until_stopped=True
    )
    pending = load.submit(job)
    time.sleep(0.3 + config.warmup)
    cpu_before, busy_before = procfs.cpu_seconds(server.pid), procfs.busy_cpu_seconds()
    rss: list[int] = []
    durations: list[float] = []
    current = 1
    try:
        for _ in range(config.swaps):
            current = 2 if current == 1 else 1
            write_deployment(model_dir, current)
            durations.append(probe.wait_for(current))
            time.sleep(config.interval)
            rss.append(procfs.rss_bytes(server.pid))
    finally:
        load.stop()
        result = load.collect(pending)
    elapsed = max(result.elapsed, 1e-9)
    server_cpu = (procfs.cpu_seconds(server.pid) - cpu_before) / elapsed
    other = (procfs.busy_cpu_seconds() - busy_before) / elapsed - server_cpu - result.client_cpu
    cpu = {"server_cpu": round(server_cpu, 2), "other_cpu": round(max(0.0, other), 2)}
    return {
        "load": result.summary() | cpu,
        "swaps": len(durations),
        "swap_seconds_mean": sum(durations) / len(durations) if durations else None,
        "swap_seconds_max": max(durations, default=None),
        "rss": rss,
    }

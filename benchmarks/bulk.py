"""The bulk scenario: requests of thousands of rows against raw onnxruntime at the chunk size.

driftgate splits a request of more rows than the model's ``max_batch_size`` into chunks of at
most that many rows, runs them like queued requests and answers them as one. This scenario
sends such requests (1,024 and 4,096 rows of the forest by default) in a closed loop at a small
concurrency and reports rows per second beside onnxruntime alone in this process, called with
the same rows in chunks of the same size, from one thread and from as many threads as the
gateway runs onnxruntime calls at once: the latter is what a perfect server could reach with
the cores the gateway uses, and the target is judged against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import loadgen
import models
import numpy as np
import servers

from driftgate.gateway.settings import GatewaySettings


@dataclass(frozen=True)
class BulkConfig:
    sizes: tuple[int, ...] = (1024, 4096)  # rows per request
    concurrency: int = 2
    duration: float = 10.0
    warmup: float = 2.0
    model: str = "forest"
    retries: int = 2
    noise: float = 0.15
    #: onnxruntime calls the gateway runs at once (its --infer-threads default), and so the
    #: callers of the in-process reference the target is judged against
    threads: int = GatewaySettings().infer_threads


def max_batch_size(port: int, model: str) -> int:
    """The chunk size the gateway will use: ModelConfig's ``max_batch_size``."""
    from driftgate.core._proto.inference import grpc_service_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelConfig",
            request_serializer=pb.ModelConfigRequest.SerializeToString,
            response_deserializer=pb.ModelConfigResponse.FromString,
        )
        return int(call(pb.ModelConfigRequest(name=model), timeout=10).config.max_batch_size)


def bulk_rows(rows: int) -> np.ndarray:
    """``rows`` distinct FP32 rows of the benchmark's data (trees take different paths)."""
    return models.training_data(seed=1, rows=rows)[0]


def run(
    config: BulkConfig,
    workdir: Path,
    load: loadgen.LoadGenerator,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    repository = workdir / "bulk-repository"
    info = models.write_model(repository, config.model)
    data = {size: bulk_rows(size) for size in config.sizes}
    server = servers.start_driftgate("driftgate-bulk", repository, [config.model], workdir, "on")
    points: list[dict[str, Any]] = []
    try:
        chunk = max_batch_size(server.port, config.model)
        for size in config.sizes:
            request = loadgen.build_request(config.model, info.input_name, data[size])
            job = loadgen.Job(
                server.port, request, config.concurrency, config.duration, config.warmup
            )
            summary = loadgen.measure_quietly(
                load, server.pid, job, config.retries, config.noise, say
            )
            rate = summary["throughput"] * size
            points.append({"rows": size, "rows_per_second": rate} | summary)
            say(f"bulk {size} rows a request: {rate:.0f} rows/s, " + _brief(summary))
    finally:
        server.stop()
    for point in points:
        rows = data[point["rows"]]
        point["ort_rows_per_second"] = measure_chunks(info, rows, chunk, config.duration)
        parallel = measure_chunks(info, rows, chunk, config.duration, config.threads)
        point["ort_parallel_rows_per_second"] = parallel
        point["ratio"] = point["rows_per_second"] / parallel if parallel else None
    return {
        "model": config.model,
        "config": config.__dict__,
        "chunk_rows": chunk,
        "points": points,
    }


def _brief(summary: dict[str, Any]) -> str:
    return f"p50 {summary['p50_ms'] or 0:.1f} ms, p99 {summary['p99_ms'] or 0:.1f} ms, " + (
        f"errors {summary['errors']}"
    )


def measure_chunks(
    info: models.ModelInfo, data: np.ndarray, chunk: int, duration: float, callers: int = 1
) -> float:
    """Rows/s of onnxruntime alone scoring ``data`` in calls of ``chunk`` rows.

    ``callers`` threads call one session (one intra-op thread) at once, as the gateway's
    inference threads do.
    """
    session = models.ort_session(info.path)
    chunks = [data[s : s + chunk] for s in range(0, len(data), chunk)]

    def score(until: float) -> int:
        rows = 0
        while time.perf_counter() < until:
            for part in chunks:
                session.run(None, {info.input_name: part})
                rows += len(part)
        return rows

    with ThreadPoolExecutor(callers) as pool:
        warm = time.perf_counter() + min(1.0, duration / 4)
        list(pool.map(score, [warm] * callers))
        start = time.perf_counter()
        rows = sum(pool.map(score, [start + duration] * callers))
        return rows / (time.perf_counter() - start)


def markdown(bulk: dict[str, Any] | None) -> list[str]:
    """The scenario's table for results.md."""
    if not bulk:
        return []
    if "error" in bulk:
        return ["## Bulk scoring", "", f"not measured: `{bulk['error'][:300]}`", ""]
    config = bulk["config"]
    lines = [
        "## Bulk scoring",
        "",
        f"{bulk['model']}, closed loop at concurrency {config['concurrency']}; the gateway runs "
        f"each request in chunks of {bulk['chunk_rows']} rows (the model's max_batch_size); "
        f"onnxruntime alone scores the same rows in {bulk['chunk_rows']}-row calls from one "
        f"thread and from {config['threads']} (the gateway's inference threads); the ratio is "
        f"against the latter.",
        "",
        f"| rows a request | rows/s | onnxruntime rows/s, 1 thread | onnxruntime rows/s, "
        f"{config['threads']} threads | ratio | req/s | p50 ms | p99 ms | errors | server CPU "
        "| other CPU |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in bulk["points"]:
        ratio = "–" if p.get("ratio") is None else f"{p['ratio']:.2f}"
        lines.append(
            f"| {p['rows']} | {p['rows_per_second']:.0f} | {p['ort_rows_per_second']:.0f} "
            f"| {p['ort_parallel_rows_per_second']:.0f} "
            f"| {ratio} | {p['throughput']:.1f} | {p['p50_ms'] or 0:.1f} | {p['p99_ms'] or 0:.1f} "
            f"| {p['errors']} | {p.get('server_cpu', '–')} | {p.get('other_cpu', '–')} |"
        )
    return [*lines, ""]

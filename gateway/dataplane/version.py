"""One loaded model version: its session, batcher, statistics and metrics.

``load_version`` does the slow part (checksum, session, warm-up) and runs on a loader thread,
off the request path; ``ServingVersion.infer`` is the request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from driftgate.core.repository import Repository
from driftgate.gateway.dataplane.batching import Batcher, BatchingConfig, BatchResult
from driftgate.gateway.dataplane.session import OnnxModel, TensorSpec
from driftgate.gateway.dataplane.warmup import warmup_feeds
from driftgate.gateway.metrics import VersionMetrics
from driftgate.gateway.settings import GatewaySettings
from driftgate.gateway.statistics import VersionCollector

__all__ = ["ServingVersion", "VersionStats", "load_version"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class VersionStats:
    """Cumulative figures that ModelStatistics reports, in Triton's units (counts and ns)."""

    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    inference_count: int = 0  # rows
    execution_count: int = 0  # requests; merged calls are counted per request
    last_inference_ms: int = 0
    batches: dict[int, list[int]] = field(default_factory=dict)  # rows -> [count, compute ns]


@dataclass(slots=True)
class ServingVersion:
    """A version in memory, ready to answer."""

    model: str
    version: int
    onnx: OnnxModel
    metadata: Mapping[str, Any]
    reference: Mapping[str, Any] | None
    batching: BatchingConfig
    batcher: Batcher
    metrics: VersionMetrics
    collector: VersionCollector | None = None
    stats: VersionStats = field(default_factory=VersionStats)
    in_flight: int = 0
    loaded_at: float = field(default_factory=time.time)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.onnx.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.onnx.outputs

    @property
    def max_batch_size(self) -> int:
        return self.batching.max_batch_size if self.onnx.batched else 0

    async def infer(self, feed: Mapping[str, np.ndarray], rows: int) -> BatchResult:
        result = await self.batcher.infer(feed, rows)
        m, s = self.metrics, self.stats
        m.queue_seconds.observe(result.queue_seconds)
        m.compute_seconds.observe(result.compute_seconds)
        m.batch_size.observe(result.batch_rows)
        s.queue_ns += int(result.queue_seconds * 1e9)
        s.compute_ns += int(result.compute_seconds * 1e9)
        s.inference_count += rows
        s.execution_count += 1
        entry = s.batches.get(result.batch_rows)
        if entry is None:
            s.batches[result.batch_rows] = [1, int(result.compute_seconds * 1e9)]
        else:
            entry[0] += 1
            entry[1] += int(result.compute_seconds * 1e9)
        return result

    def succeeded(
        self,
        feed: Mapping[str, np.ndarray],
        outputs: list[np.ndarray],
        request_id: str,
        seconds: float,
    ) -> None:
        """Count one answered request, and hand its arrays to the statistics collector."""
        s = self.stats
        s.last_inference_ms = int(time.time() * 1000)
        s.success_count += 1
        s.success_ns += int(seconds * 1e9)
        self.metrics.ok.inc()
        self.metrics.request_seconds.observe(seconds)
        if self.collector is not None:
            self.collector.observe(feed, outputs, request_id, seconds)

    def failed(self, seconds: float, status: str) -> None:
        """Count one request answered with an error status (the transport knows which)."""
        s = self.stats
        s.last_inference_ms = int(time.time() * 1000)
        s.fail_count += 1
        s.fail_ns += int(seconds * 1e9)
        self.metrics.failed(status)
        if self.collector is not None:
            self.collector.failed(seconds)


def batching_config(metadata: Mapping[str, Any], default: BatchingConfig) -> BatchingConfig:
    """The model's own ``batching`` entry in model.json over the gateway's defaults."""
    entry = metadata.get("batching") or {}
    known = {k: v for k, v in entry.items() if k in BatchingConfig.__dataclass_fields__}
    if "preferred_batch_sizes" in known:
        known["preferred_batch_sizes"] = tuple(known["preferred_batch_sizes"])
    return replace(default, **known)


def load_version(
    repository: Repository,
    model: str,
    version: int,
    settings: GatewaySettings,
    executor: Executor,
    metrics: VersionMetrics,
) -> ServingVersion:
    """Read, verify, load and warm one version. Raises on any failure; nothing is half-loaded."""
    metadata = repository.metadata(model, version)
    reference = repository.reference(model, version)
    onnx = OnnxModel(repository.read_model_bytes(model, version), settings.ort_threads)
    if onnx.batched:
        feeds = warmup_feeds(onnx.inputs, reference, rows=settings.warmup_rows)
    else:
        feeds = [{s.name: np.zeros([max(d, 1) for d in s.shape], s.dtype) for s in onnx.inputs}]
    onnx.warm_up(feeds)
    config = batching_config(metadata, settings.batching)
    batcher = Batcher(
        onnx.run,
        onnx.estimated_seconds,
        config,
        executor,
        inline_below_seconds=settings.inline_below_us / 1e6,
        batched_model=onnx.batched,
        report_depth=metrics.queue_depth.set,
    )
    log.info(
        "loaded %s version %d: one-row call %.1f µs, %s",
        model,
        version,
        onnx.call_seconds * 1e6,
        "inline" if onnx.call_seconds * 1e6 < settings.inline_below_us else "on a thread",
    )
    collector = None
    if settings.monitor is not None:
        columns = {s.name: (s.shape[-1] if s.shape else 1) for s in onnx.inputs}
        collector = VersionCollector(
            reference,
            columns,
            [o.name for o in onnx.outputs],
            record_rate=settings.record_sample_rate,
            record_max_per_second=settings.record_max_per_second,
        )
    return ServingVersion(
        model, version, onnx, metadata, reference, config, batcher, metrics, collector
    )

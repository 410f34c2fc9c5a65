"""The one record of a loaded version's requests and executions.

Every request is recorded once, when it is answered (``request_succeeded`` or
``request_failed``), and every onnxruntime call once, when it returns (``executed``). Triton's
ModelStatistics, the Prometheus collector and ``driftgate status`` all read this record;
nothing else counts.

The figures follow Triton's published meaning (``inference.ModelStatistics``):

- ``inference_count`` counts rows (inferences) of successful requests;
- ``execution_count`` counts model executions, so requests merged into one call count once;
- ``success`` and ``fail`` count requests with their total time, request to response;
- ``queue``, ``compute_input``, ``compute_infer`` and ``compute_output`` count successful
  requests (equal counts) with the time spent waiting, decoding, in the model and encoding;
- ``batch_stats`` counts executions per batch size with their input, infer and output time.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS", "Histogram", "Timing", "VersionRecord"]

# Latency buckets from 100 µs to 10 s: the fast path sits well under a millisecond.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(slots=True)
class Timing:
    """A count and its total duration in nanoseconds (Triton's ``StatisticDuration``)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-read bucket counts, the shape Prometheus histograms export."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of values at or below it), ending with +Inf."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class BatchTiming:
    """Executions of one batch size."""

    compute_input: Timing = field(default_factory=Timing)
    compute_infer: Timing = field(default_factory=Timing)
    compute_output: Timing = field(default_factory=Timing)


@dataclass(slots=True)
class VersionRecord:
    """Cumulative figures of one loaded version (one process), in Triton's units."""

    success: Timing = field(default_factory=Timing)
    fail: Timing = field(default_factory=Timing)
    queue: Timing = field(default_factory=Timing)
    compute_input: Timing = field(default_factory=Timing)
    compute_infer: Timing = field(default_factory=Timing)
    compute_output: Timing = field(default_factory=Timing)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchTiming] = field(default_factory=dict)
    #: failed requests by gRPC status name
    failures: dict[str, int] = field(default_factory=dict)
    request_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    compute_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def request_succeeded(
        self, rows: int, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += rows
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)
        self.request_seconds.observe(total_ns / 1e9)
        self.queue_seconds.observe(queue_ns / 1e9)
        self.compute_seconds.observe(infer_ns / 1e9)

    def request_failed(self, total_ns: int, status: str) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        self.fail.add(total_ns)
        self.failures[status] = self.failures.get(status, 0) + 1

    def executed(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One onnxruntime call of ``rows`` rows (merging, the call, and splitting)."""
        self.execution_count += 1
        self.batch_rows.observe(rows)
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchTiming()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    @property
    def requests(self) -> int:
        return self.success.count + self.fail.count

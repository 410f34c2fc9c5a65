"""The gateway's Prometheus metrics, registered on a registry the caller owns.

Every series is labelled ``{model, version}``; the README lists each metric and its use.
Request-path code holds the labelled children (``VersionMetrics``) so that a request pays for
no label lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics", "VersionMetrics", "reason_label"]

# Latency buckets from 100 µs to 10 s: the fast path sits well under a millisecond.
_LATENCY_BUCKETS = (
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
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABELS = ("model", "version")


class GatewayMetrics:
    """All gateway metric families; ``for_version`` hands out the labelled children."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "driftgate_inference_requests",
            "Inference requests answered, by gRPC status code",
            (*_LABELS, "status"),
            registry=registry,
        )
        self.request_seconds = Histogram(
            "driftgate_inference_request_duration_seconds",
            "Time from decoding a request to encoding its response",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "driftgate_inference_queue_duration_seconds",
            "Time a request waited in the batching queue",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_seconds = Histogram(
            "driftgate_inference_compute_duration_seconds",
            "Time of the onnxruntime call that answered a request",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "driftgate_batch_size",
            "Rows in each onnxruntime call",
            _LABELS,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "driftgate_queue_depth",
            "Requests waiting in the batching queue",
            _LABELS,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.load_seconds = Histogram(
            "driftgate_model_load_duration_seconds",
            "Time to load and warm up a version",
            _LABELS,
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.load_failures = Counter(
            "driftgate_model_load_failures",
            "Versions that failed to load (corrupt ONNX, checksum mismatch, failed warm-up)",
            _LABELS,
            registry=registry,
        )
        self.loaded = Gauge(
            "driftgate_model_loaded",
            "1 for each version loaded in memory, with its role (stable, canary, shadow, standby)",
            (*_LABELS, "role"),
            registry=registry,
            multiprocess_mode="max",
        )

        self.traffic_weight = Gauge(
            "driftgate_traffic_weight",
            "Percentage of a model's traffic each version receives, by role",
            (*_LABELS, "role"),
            registry=registry,
            multiprocess_mode="max",
        )
        self.revision = Gauge(
            "driftgate_deployment_revision",
            "Revision of the deployment state this gateway serves",
            ("model",),
            registry=registry,
            multiprocess_mode="max",
        )
        self.rollbacks = Counter(
            "driftgate_rollbacks",
            "Rollbacks made through this gateway's control service, by reason",
            ("model", "reason"),
            registry=registry,
        )
        self.promotions = Counter(
            "driftgate_promotions",
            "Canary promotions made through this gateway's control service, by reason",
            ("model", "reason"),
            registry=registry,
        )
        self.shadow_requests = Counter(
            "driftgate_shadow_requests",
            "Request copies sent to a shadow version, by outcome (agree, disagree, error, dropped)",
            (*_LABELS, "outcome"),
            registry=registry,
        )
        self.shadow_agreement = Gauge(
            "driftgate_shadow_agreement_ratio",
            "Share of shadow answers whose first output agrees with the primary's",
            _LABELS,
            registry=registry,
            multiprocess_mode="max",
        )
        self.shadow_seconds = Histogram(
            "driftgate_shadow_duration_seconds",
            "Time a shadow version took to answer a request copy",
            _LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def for_version(self, model: str, version: int) -> VersionMetrics:
        labels = (model, str(version))
        return VersionMetrics(
            ok=self.requests.labels(*labels, "OK"),
            request_seconds=self.request_seconds.labels(*labels),
            queue_seconds=self.queue_seconds.labels(*labels),
            compute_seconds=self.compute_seconds.labels(*labels),
            batch_size=self.batch_size.labels(*labels),
            queue_depth=self.queue_depth.labels(*labels),
            family=self,
            labels=labels,
        )


@dataclass(slots=True)
class VersionMetrics:
    """Pre-labelled metric children for one loaded version."""

    ok: Counter
    request_seconds: Histogram
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    family: GatewayMetrics
    labels: tuple[str, str]

    def failed(self, status: str) -> None:
        self.family.requests.labels(*self.labels, status).inc()


def reason_label(reason: str) -> str:
    """A reason as a label value: short, one line, "unspecified" when empty."""
    line = " ".join(reason.split())[:64]
    return line or "unspecified"


def latency_quantiles(metrics: GatewayMetrics, model: str, version: int) -> tuple[float, float]:
    """p50 and p99 of a version's request latency in seconds, from its histogram buckets.

    Interpolated linearly within a bucket, as Prometheus' ``histogram_quantile`` does; 0.0
    when the version has answered nothing yet.
    """
    wanted = {"model": model, "version": str(version)}
    buckets: list[tuple[float, float]] = []
    for family in metrics.request_seconds.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and all(
                labels.get(k) == v for k, v in wanted.items()
            ):
                buckets.append((float(labels["le"]), sample.value))
    buckets.sort()
    return _quantile(buckets, 0.5), _quantile(buckets, 0.99)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound

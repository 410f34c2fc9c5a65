"""The gateway's Prometheus metrics, registered on a registry the caller owns.

Per-version serving figures are not kept in metric objects: ``ServingCollector`` reads the
live ``VersionRecord`` of every loaded version at scrape time (the documented way to export
state that comes and goes), so a retired version's series disappear with it and the figures
are the same ones ModelStatistics and ``driftgate status`` report. Events are ordinary
counters; those of a version (load time, load failures, shadow outcomes) are removed with
``forget`` once the version is released, so that no series outlives what it describes.
Promotions and rollbacks are counted by a bounded ``cause`` (``driftgate.core.telemetry``),
never by their free-text reason. Traffic is a ratio (0-1), as Prometheus recommends.

With ``--workers N`` each worker serves its own registry on a private loopback port and the
parent's ``/metrics`` merges them (``WorkerMetrics``): counters and histograms are summed,
gauges are summed where they count things (queue depth, in flight) and take the largest
value where they describe state (roles, weights, revisions).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from driftgate.core.errors import InvalidInput, quote
from driftgate.core.telemetry import (
    CAUSE_METADATA,
    OPERATOR,
    PROMOTION_CAUSES,
    ROLLBACK_CAUSES,
    register_process_metrics,
)
from driftgate.gateway.dataplane.record import LATENCY_BUCKETS, VersionRecord
from driftgate.gateway.dataplane.record import Histogram as Buckets

__all__ = [
    "GatewayMetrics",
    "GrpcCallsCollector",
    "ServingCollector",
    "ServingView",
    "WorkerMetrics",
    "cause_label",
    "latency_quantiles",
]

log = logging.getLogger(__name__)

_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABELS = ("model", "version")
#: gauges that count things: merged across workers by addition, the rest by maximum
SUMMED_GAUGES = frozenset(
    {
        "driftgate_queue_depth",
        "driftgate_inference_in_flight",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
    }
)
#: gauges where the oldest worker matters (a stuck worker's last scan must show)
MIN_GAUGES = frozenset(
    {"driftgate_repository_last_scan_timestamp_seconds", "process_start_time_seconds"}
)
_SHADOW_OUTCOMES = ("agree", "disagree", "error", "dropped")


class GrpcCallsCollector(Collector):
    """The calls gRPC's core started in this process and how many ended with a status, read
    from channelz when Prometheus scrapes.

    A call gRPC drops before the gateway takes it (``--max-queue-seconds``) or that its client
    abandons in gRPC's queue never reaches the gateway's own counters, and channelz counts it
    as started but neither succeeded nor failed: the rate of started minus the rates of the two
    endings is the rate of calls left unanswered (plus the change in those under way). Channelz
    is gRPC's own introspection, on by default; a gRPC build without it exports nothing here.
    """

    def collect(self) -> Iterator[Metric]:
        counts = _channelz_calls()
        if counts is None:
            return
        calls = CounterMetricFamily(
            "driftgate_grpc_server_calls",
            "Calls of every service that gRPC's core started in this process (started), and "
            "those that ended with a status (succeeded, failed); the rest were dropped or "
            "abandoned unanswered, or are under way",
            labels=("outcome",),
        )
        for outcome, count in zip(("started", "succeeded", "failed"), counts, strict=True):
            calls.add_metric([outcome], count)
        yield calls


def _channelz_calls() -> tuple[int, int, int] | None:
    """(started, succeeded, failed) summed over this process's gRPC servers."""
    try:
        from grpc._cython import cygrpc  # type: ignore[attr-defined]

        servers = json.loads(cygrpc.channelz_get_servers(0)).get("server", [])
    except Exception:  # no channelz in this gRPC build
        return None
    totals = [0, 0, 0]
    for server in servers:
        data = server.get("data", {})
        for i, key in enumerate(("callsStarted", "callsSucceeded", "callsFailed")):
            totals[i] += int(data.get(key, 0))
    return totals[0], totals[1], totals[2]


@dataclass(frozen=True, slots=True)
class ServingView:
    """One loaded version as the collector sees it at scrape time."""

    model: str
    version: int
    role: str
    weight: float  # percent of the model's traffic, as deployment.json holds it
    record: VersionRecord
    queue_depth: int
    in_flight: int
    bookkeeping_errors: int = 0


@dataclass
class ServingSnapshot:
    """What the manager serves right now: versions, and each model's deployment revision."""

    versions: list[ServingView] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)
    quarantined: list[tuple[str, int]] = field(default_factory=list)  # (model, version)


class ServingCollector(Collector):
    """Exports the live record of every loaded version, read when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], ServingSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        requests = CounterMetricFamily(
            "driftgate_inference_requests",
            "Inference requests answered, by gRPC status code",
            labels=(*_LABELS, "status"),
        )
        request_seconds = _histogram(
            "driftgate_inference_request_duration_seconds",
            "Time from receiving a request to its encoded response",
        )
        queue_seconds = _histogram(
            "driftgate_inference_queue_duration_seconds",
            "Time a request waited for the model (admission queue and batching)",
        )
        compute_seconds = _histogram(
            "driftgate_inference_compute_duration_seconds",
            "Time of the onnxruntime calls that answered a request",
        )
        batch_size = _histogram(
            "driftgate_batch_size", "Rows in each onnxruntime call (one sample per call)"
        )
        executions = CounterMetricFamily(
            "driftgate_executions", "onnxruntime calls (merged requests count once)", labels=_LABELS
        )
        bookkeeping = CounterMetricFamily(
            "driftgate_bookkeeping_errors",
            "Failures of statistics bookkeeping, logged and never raised into a request",
            labels=_LABELS,
        )
        depth = GaugeMetricFamily(
            "driftgate_queue_depth", "Requests waiting for the model", labels=_LABELS
        )
        in_flight = GaugeMetricFamily(
            "driftgate_inference_in_flight", "Requests being answered", labels=_LABELS
        )
        loaded = GaugeMetricFamily(
            "driftgate_model_loaded",
            "1 for each version loaded in memory, with its role (stable, canary, shadow, standby)",
            labels=(*_LABELS, "role"),
        )
        ratio = GaugeMetricFamily(
            "driftgate_traffic_ratio",
            "Share of a model's traffic (0-1) each version receives, by role",
            labels=(*_LABELS, "role"),
        )
        for view in snap.versions:
            labels = [view.model, str(view.version)]
            record = view.record
            requests.add_metric([*labels, "OK"], record.success.count)
            for status, count in sorted(record.failures.items()):
                requests.add_metric([*labels, status], count)
            _add(request_seconds, labels, record.request_seconds)
            _add(queue_seconds, labels, record.queue_seconds)
            _add(compute_seconds, labels, record.compute_seconds)
            _add(batch_size, labels, record.batch_rows)
            executions.add_metric(labels, record.execution_count)
            bookkeeping.add_metric(labels, view.bookkeeping_errors)
            depth.add_metric(labels, view.queue_depth)
            in_flight.add_metric(labels, view.in_flight)
            loaded.add_metric([*labels, view.role], 1)
            if view.role != "standby":
                ratio.add_metric([*labels, view.role], view.weight / 100.0)
        revision = GaugeMetricFamily(
            "driftgate_deployment_revision",
            "Revision of the deployment state this gateway serves",
            labels=("model",),
        )
        for model, number in sorted(snap.revisions.items()):
            revision.add_metric([model], number)
        quarantined = GaugeMetricFamily(
            "driftgate_version_quarantined",
            "1 for a version that hung or crashed onnxruntime in the load probe: not loaded "
            "until it is rewritten",
            labels=_LABELS,
        )
        for model, number in sorted(snap.quarantined):
            quarantined.add_metric([model, str(number)], 1)
        yield from (requests, request_seconds, queue_seconds, compute_seconds, batch_size)
        yield from (executions, bookkeeping, depth, in_flight, loaded, ratio, revision, quarantined)


def _histogram(name: str, documentation: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=_LABELS)


def _add(family: HistogramMetricFamily, labels: Sequence[str], buckets: Buckets) -> None:
    cumulative = [(_le(bound), float(count)) for bound, count in buckets.cumulative()]
    family.add_metric(list(labels), cumulative, buckets.total)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class GatewayMetrics:
    """Metric families of events; ``watch`` adds the live serving figures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.rollbacks = Counter(
            "driftgate_rollbacks",
            "Rollbacks made through this gateway's control service, by cause (operator, "
            "canary_failed, insufficient_evidence); the reason is in the history",
            ("model", "cause"),
            registry=registry,
        )
        self.promotions = Counter(
            "driftgate_promotions",
            "Canary promotions made through this gateway's control service, by cause "
            "(operator, canary_passed); the reason is in the history",
            ("model", "cause"),
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
        )
        self.admission_refusals = Counter(
            "driftgate_admission_refusals",
            "Inference requests refused before reaching a model by a server-wide limit "
            "(requests or bytes in progress, or calls pending, refused unread), answered "
            "RESOURCE_EXHAUSTED",
            ("limit",),
            registry=registry,
        )
        for limit in ("requests", "bytes", "pending"):  # at 0 from the start: rate() sees them
            self.admission_refusals.labels(limit)
        self.expired_requests = Counter(
            "driftgate_expired_requests",
            "ModelInfer calls whose deadline had passed by the time the gateway took them, "
            "dropped unrun and answered DEADLINE_EXCEEDED (a sign of overload)",
            registry=registry,
        )
        self.shadow_seconds = Histogram(
            "driftgate_shadow_duration_seconds",
            "Time a shadow version took to answer a request copy",
            _LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        registry.register(GrpcCallsCollector())
        register_process_metrics(registry)

    def watch(self, snapshot: Callable[[], ServingSnapshot]) -> None:
        """Export the serving figures that ``snapshot`` returns at every scrape."""
        self.registry.register(ServingCollector(snapshot))

    def forget(self, model: str, version: int) -> None:
        """Remove the series of a released version (its load time, load failures, shadow
        figures): Prometheus then marks them stale instead of showing the last value forever."""
        labels = (model, str(version))
        for family in (self.load_seconds, self.load_failures, self.shadow_agreement):
            family.remove(*labels)
        self.shadow_seconds.remove(*labels)
        for outcome in _SHADOW_OUTCOMES:
            self.shadow_requests.remove(*labels, outcome)


def cause_label(action: str, cause: str | None) -> str:
    """The ``cause`` label of a Promote or Rollback: ``operator`` when none was named, else
    the named cause, which must be in the action's vocabulary (InvalidInput otherwise)."""
    if not cause:
        return OPERATOR
    vocabulary = PROMOTION_CAUSES if action == "Promote" else ROLLBACK_CAUSES
    if cause not in vocabulary:
        raise InvalidInput(
            f"{action}: metadata {CAUSE_METADATA!r} must be one of {', '.join(vocabulary)}, "
            f"got {quote(cause, 64)}"
        )
    return cause


def latency_quantiles(record: VersionRecord) -> tuple[float, float]:
    """p50 and p99 of a version's request latency in seconds, from its histogram buckets.

    Interpolated linearly within a bucket, as Prometheus' ``histogram_quantile`` does; 0.0
    when the version has answered nothing yet.
    """
    buckets = [(bound, float(count)) for bound, count in record.request_seconds.cumulative()]
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


def _merge_rule(kind: str, name: str) -> Callable[[float, float], float]:
    if kind != "gauge" or name in SUMMED_GAUGES:
        return lambda a, b: a + b
    return min if name in MIN_GAUGES else max


class WorkerMetrics(Collector):
    """The merged ``/metrics`` of several worker processes, fetched at scrape time."""

    def __init__(self, urls: Callable[[], Iterable[str]], timeout: float = 2.0) -> None:
        self._urls = urls
        self._timeout = timeout

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for url in self._urls():
            try:
                with urllib.request.urlopen(url, timeout=self._timeout) as response:
                    text = response.read().decode("utf-8")
            except OSError as exc:
                log.warning("worker metrics at %s unavailable: %s", url, exc)
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type)
                merge = _merge_rule(family.type, family.name)
                for sample in family.samples:
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    old = values.get(key)
                    values[key] = sample.value if old is None else merge(old, sample.value)
        for (family_name, sample_name, labels), value in values.items():
            merged[family_name].add_sample(sample_name, dict(labels), value)
        yield from merged.values()

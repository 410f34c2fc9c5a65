"""Settings of the gateway process; each has a ``driftgate serve`` flag and a DRIFTGATE_ env var."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from driftgate.core.security import ServerSecurity
from driftgate.core.tls import ClientTLS
from driftgate.gateway.dataplane.batching import BatchingConfig

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    """How one gateway process serves a model repository."""

    #: the model repository: a directory or an s3:// URL (DRIFTGATE_REPOSITORY)
    repository: Path | str = Path("models")
    #: address the gRPC server binds (DRIFTGATE_HOST); beyond loopback, credentials are needed
    host: str = "127.0.0.1"
    #: gRPC port; 0 picks a free one (DRIFTGATE_GRPC_PORT)
    grpc_port: int = 8001
    #: Prometheus /metrics port; 0 picks a free one, -1 turns it off (DRIFTGATE_METRICS_PORT)
    metrics_port: int = 8002
    #: address /metrics binds: loopback unless told otherwise (DRIFTGATE_METRICS_HOST)
    metrics_host: str = "127.0.0.1"
    #: largest gRPC message accepted or sent, in bytes (DRIFTGATE_MAX_MESSAGE_BYTES)
    max_message_bytes: int = 64 * 1024 * 1024
    #: RPCs in progress at once, all services; more are refused with RESOURCE_EXHAUSTED
    #: by gRPC itself (DRIFTGATE_MAX_CONCURRENT_RPCS)
    max_concurrent_rpcs: int = 4096
    #: inference requests in progress at once (streamed ones included)
    #: (DRIFTGATE_MAX_IN_FLIGHT_REQUESTS)
    max_in_flight_requests: int = 4096
    #: bytes of inference requests in progress at once (DRIFTGATE_MAX_IN_FLIGHT_BYTES)
    max_in_flight_bytes: int = 512 * 1024 * 1024
    #: ModelInfer calls waiting or running at once, counted from the moment gRPC hands one to
    #: the server; more are refused with RESOURCE_EXHAUSTED before their message is read.
    #: 0: the batching max_queue_size (DRIFTGATE_MAX_PENDING_INFERS)
    max_pending_infers: int = 0
    #: seconds a call may wait in gRPC's accept queue, behind calls the gateway has not yet
    #: taken; older ones are dropped there, unread, and their clients see CANCELLED. This is
    #: what keeps an overloaded gateway answering fresh calls instead of ones whose clients
    #: gave up (DRIFTGATE_MAX_QUEUE_SECONDS; whole seconds, gRPC's granularity)
    max_queue_seconds: int = 1
    #: calls one method may have waiting in gRPC's accept queue, not yet taken by the gateway.
    #: Past half of it gRPC drops arriving calls at random, the more the fuller the queue, and
    #: past all of it every one: unread, in C++, their clients see CANCELLED at once. This
    #: bounds how long an admitted call waits when more arrive than the gateway can answer.
    #: A burst of concurrent calls waits there too, so the soft bound (256) is above the
    #: concurrency of ordinary clients: a load tester at 256 is never dropped
    #: (DRIFTGATE_MAX_QUEUED_CALLS)
    max_queued_calls: int = 512
    #: requests of one ModelStreamInfer stream answered concurrently
    stream_concurrency: int = 64
    #: most rows one request may carry; more than max_batch_size are run in chunks
    #: (DRIFTGATE_MAX_REQUEST_ROWS)
    max_request_rows: int = 65536
    #: batching defaults; a model's model.json "batching" entry overrides them
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    #: a model call estimated below this runs inline on the event loop, not on a thread
    inline_below_us: float = 150.0
    #: onnxruntime intra-op threads per session (DRIFTGATE_ORT_THREADS)
    ort_threads: int = 1
    #: threads that run onnxruntime calls too slow to run inline (DRIFTGATE_INFER_THREADS)
    infer_threads: int = 2
    #: seconds between scans of the repository for new versions and deployment changes
    poll_interval: float = 1.0
    #: previous stable versions kept loaded for an instant rollback (DRIFTGATE_STANDBY_VERSIONS)
    standby_versions: int = 1
    #: TLS and credentials of the listener (operator and ingest tokens, client subjects)
    security: ServerSecurity = field(default_factory=ServerSecurity)
    #: TLS for reaching the monitor; None: plaintext
    monitor_tls: ClientTLS | None = None
    #: shadow copies in flight at once per gateway; more are dropped (DRIFTGATE_SHADOW_IN_FLIGHT)
    shadow_in_flight: int = 16
    #: seconds a retired version may take to finish its in-flight requests
    drain_seconds: float = 30.0
    #: seconds SIGTERM waits for in-flight requests before the process exits
    grace_seconds: float = 10.0
    #: seconds between SIGTERM and the drain, answering requests while health says
    #: NOT_SERVING, so a load balancer stops routing first (DRIFTGATE_SHUTDOWN_DELAY)
    shutdown_delay: float = 0.0
    #: this process's index under ``--workers``, sent as ``driftgate-worker`` metadata with
    #: ModelStatistics and GetStatus (each worker counts its own requests); "" alone
    worker: str = ""
    #: seconds a new version may take to open and run one row in a child process before
    #: it is loaded; one that hangs or crashes there is quarantined; 0 turns the probe off
    #: (DRIFTGATE_LOAD_PROBE_TIMEOUT)
    load_probe_timeout: float = 30.0
    #: rows of the reference profile used to warm up a new version
    warmup_rows: int = 32
    #: the monitor's gRPC address; None turns statistics and prediction records off
    monitor: str | None = None
    #: seconds between reports to the monitor (DRIFTGATE_REPORT_INTERVAL)
    report_interval: float = 5.0
    #: seconds of one bucket of counts held while the monitor is away; must equal the
    #: monitor's --bucket-seconds, so that late counts land in the bucket they were observed
    #: in (DRIFTGATE_REPORT_BUCKET_SECONDS)
    report_bucket_seconds: int = 60
    #: buckets of counts held at most while the monitor is away (a day of minutes); past it
    #: the two oldest merge, no count lost (DRIFTGATE_REPORT_MAX_BUCKETS)
    report_max_buckets: int = 1440
    #: share of predictions kept as records for the label join (DRIFTGATE_RECORD_SAMPLE_RATE)
    record_sample_rate: float = 1.0
    #: most records kept per second and version, 0 for no cap; bounds what records cost a
    #: busy service while a quiet one keeps every prediction (DRIFTGATE_RECORD_MAX_PER_SECOND)
    record_max_per_second: float = 200.0
    #: labels held for the monitor before SendLabels answers RESOURCE_EXHAUSTED
    label_buffer: int = 100_000
    #: once serving, write {"grpc_port", "metrics_port", "pid"} here as JSON (for supervisors)
    ready_file: Path | None = None
    #: longest request id accepted, in bytes; a longer one is refused with INVALID_ARGUMENT
    #: (ids are echoed, hashed for routing and kept with prediction records)
    #: (DRIFTGATE_MAX_REQUEST_ID_BYTES)
    max_request_id_bytes: int = 256

    @property
    def pending_infers_limit(self) -> int:
        """The bound on ModelInfer calls in progress (``max_pending_infers`` or its default)."""
        return self.max_pending_infers or self.batching.max_queue_size

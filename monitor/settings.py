"""Settings of the monitor sidecar; each field has a ``driftgate monitor`` flag and env var."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from driftgate.core.security import ServerSecurity
from driftgate.core.tls import ClientTLS
from driftgate.monitor.thresholds import DriftThresholds

__all__ = ["MonitorSettings", "label_window"]


def label_window(label_delay: float) -> float:
    """Seconds records are kept at least for a stated label delay: the delay plus a margin."""
    return label_delay + max(3600.0, 0.1 * label_delay)


@dataclass(frozen=True)
class MonitorSettings:
    """Settings of one monitor process (``driftgate monitor --help`` lists the flags)."""

    data_dir: Path = Path("driftgate-data")
    """Directory of the embedded SQLite store (DRIFTGATE_DATA_DIR)."""
    store_url: str | None = None
    """Database URL; None means ``sqlite:///<data_dir>/monitor.db`` (DRIFTGATE_STORE_URL)."""
    repository: Path | str = Path("models")
    """Model repository the reference profiles are read from (DRIFTGATE_REPOSITORY)."""
    host: str = "127.0.0.1"
    """Address gRPC binds (DRIFTGATE_HOST); beyond loopback, credentials are needed."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics binds (DRIFTGATE_METRICS_HOST)."""
    security: ServerSecurity = field(default_factory=ServerSecurity)
    """TLS and credentials of the listener; its operator token is also sent to the gateway."""
    gateway_tls: ClientTLS | None = None
    """TLS for reaching the gateway's Control service; None: plaintext."""
    grpc_port: int = 8003
    """gRPC port; 0 picks a free one (DRIFTGATE_MONITOR_GRPC_PORT)."""
    metrics_port: int = 8004
    """Prometheus /metrics port; -1 disables it (DRIFTGATE_MONITOR_METRICS_PORT)."""
    bucket_seconds: int = 60
    """Length of a count bucket; windows are made of whole buckets."""
    default_window_seconds: float = 3600.0
    """Window of drift and accuracy queries that name none (DRIFTGATE_WINDOW_SECONDS)."""
    evaluate_interval: float = 60.0
    """Seconds between drift/accuracy evaluations that refresh the gauges."""
    max_records: int = 1_000_000
    """Prediction records kept at most; the oldest go first (DRIFTGATE_MAX_RECORDS)."""
    record_retention_seconds: float = 30 * 86400.0
    """Age after which records and held labels are deleted (DRIFTGATE_RECORD_RETENTION)."""
    label_delay_seconds: float = 86400.0
    """How late labels arrive after their prediction, at most (DRIFTGATE_LABEL_DELAY): records
    and held labels younger than ``label_window_seconds`` are kept whatever ``max_records``
    and ``record_retention_seconds`` say."""
    counts_retention_seconds: float = 90 * 86400.0
    """Age after which count buckets and report ids are deleted."""
    prune_interval: float = 600.0
    """Seconds between retention prunes."""
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    """Default drift thresholds."""
    drift_overrides: dict[str, DriftThresholds] = field(default_factory=dict)
    """Per-model drift thresholds, by model name."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest report or answer, bytes."""
    grace_seconds: float = 5.0
    """Seconds SIGTERM waits for in-flight calls."""
    ready_file: Path | None = None
    """Write the bound ports as JSON here once serving (DRIFTGATE_READY_FILE)."""
    gateway: str | None = None
    """The gateway whose Control service the policy acts on (DRIFTGATE_GATEWAY); None: the
    monitor evaluates and retrains but never changes a deployment."""
    scheduler: bool = True
    """Run the policy jobs: drift evaluation, canary analysis, retraining."""
    policy_sync_interval: float = 10.0
    """Seconds between re-reads of the policy files (DRIFTGATE_POLICY_SYNC_INTERVAL)."""
    leader_check_interval: float = 5.0
    """Seconds between leader-election checks (DRIFTGATE_LEADER_CHECK_INTERVAL): a follower
    takes over within this long after the leader's database connection closes (see
    ``monitor.leader`` for the bounds)."""
    monitor_id: str | None = None
    """This monitor's name in the election and its events (DRIFTGATE_MONITOR_ID); None:
    ``<host name>-<pid>``."""

    @property
    def url(self) -> str:
        """The store URL in effect."""
        if self.store_url:
            return self.store_url
        return f"sqlite:///{self.data_dir.resolve() / 'monitor.db'}"

    @property
    def label_window_seconds(self) -> float:
        """The label delay plus a margin (a tenth of it, at least an hour, for late gateway
        flushes and prune intervals): the age below which no record or held label is pruned."""
        return label_window(self.label_delay_seconds)

    def thresholds(self, model: str) -> DriftThresholds:
        """Drift thresholds of ``model``."""
        return self.drift_overrides.get(model, self.drift)

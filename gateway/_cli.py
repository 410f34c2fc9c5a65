"""``driftgate serve``: flags, their DRIFTGATE_ environment variables, and worker processes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from driftgate.core.auth import Role
from driftgate.core.cli import UsageError, add_command, env, serve_or_explain
from driftgate.core.objectstore import repository_location
from driftgate.core.security import (
    add_client_tls_flags,
    add_server_security_flags,
    client_tls,
    server_security,
)
from driftgate.gateway.dataplane.batching import BatchingConfig
from driftgate.gateway.settings import GatewaySettings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    defaults = GatewaySettings()
    batching = defaults.batching
    parser = add_command(
        subparsers,
        "serve",
        "serve a model repository over gRPC (KServe v2 / Triton protocol)",
        description="Serve every model in a repository over gRPC with the KServe v2 / Triton "
        "inference protocol, gRPC health and reflection, and Prometheus metrics. Each flag "
        "can also be set with the environment variable named in its help.",
    )
    add = parser.add_argument
    add(
        "--repository",
        type=repository_location,
        default=repository_location(env("REPOSITORY", str(defaults.repository))),
        help="model repository: a directory or s3://BUCKET/PREFIX, credentials and endpoint "
        "from the AWS_* variables (DRIFTGATE_REPOSITORY; default ./models)",
    )
    add(
        "--host",
        default=env("HOST", defaults.host),
        help="address gRPC binds (DRIFTGATE_HOST; default 127.0.0.1: loopback; beyond it, set "
        "credentials or --insecure)",
    )
    add(
        "--grpc-port",
        type=int,
        default=env("GRPC_PORT", defaults.grpc_port),
        help="gRPC port, 0 for a free one (DRIFTGATE_GRPC_PORT; default 8001)",
    )
    add(
        "--metrics-port",
        type=int,
        default=env("METRICS_PORT", defaults.metrics_port),
        help="Prometheus /metrics port, -1 to disable (DRIFTGATE_METRICS_PORT; default 8002)",
    )
    add(
        "--workers",
        type=int,
        default=env("WORKERS", 1),
        help="serving processes sharing the gRPC port (SO_REUSEPORT) (DRIFTGATE_WORKERS)",
    )
    add(
        "--max-message-bytes",
        type=int,
        default=env("MAX_MESSAGE_BYTES", defaults.max_message_bytes),
        help="largest request or response, bytes (DRIFTGATE_MAX_MESSAGE_BYTES; default 64 MiB)",
    )
    add(
        "--batching",
        choices=("on", "off"),
        default=env("BATCHING", "on"),
        help="adaptive batching default for models without their own setting (DRIFTGATE_BATCHING)",
    )
    add(
        "--max-batch-size",
        type=int,
        default=env("MAX_BATCH_SIZE", batching.max_batch_size),
        help="most rows per onnxruntime call; larger requests run in chunks "
        "(DRIFTGATE_MAX_BATCH_SIZE)",
    )
    add(
        "--max-concurrent-rpcs",
        type=int,
        default=env("MAX_CONCURRENT_RPCS", defaults.max_concurrent_rpcs),
        help="RPCs in progress at once, more get RESOURCE_EXHAUSTED "
        "(DRIFTGATE_MAX_CONCURRENT_RPCS)",
    )
    add(
        "--max-in-flight-requests",
        type=int,
        default=env("MAX_IN_FLIGHT_REQUESTS", defaults.max_in_flight_requests),
        help="inference requests in progress at once (DRIFTGATE_MAX_IN_FLIGHT_REQUESTS)",
    )
    add(
        "--max-in-flight-bytes",
        type=int,
        default=env("MAX_IN_FLIGHT_BYTES", defaults.max_in_flight_bytes),
        help="bytes of inference requests in progress at once (DRIFTGATE_MAX_IN_FLIGHT_BYTES)",
    )
    add(
        "--max-pending-infers",
        type=int,
        default=env("MAX_PENDING_INFERS", defaults.max_pending_infers),
        help="ModelInfer calls waiting or running before new ones are refused, unread "
        "(DRIFTGATE_MAX_PENDING_INFERS; 0, the default: --max-queue-size)",
    )
    add(
        "--max-queue-seconds",
        type=int,
        default=env("MAX_QUEUE_SECONDS", defaults.max_queue_seconds),
        help="seconds a call may wait in gRPC's queue before the gateway takes it; older ones "
        "are dropped unread and their clients see CANCELLED (DRIFTGATE_MAX_QUEUE_SECONDS)",
    )
    add(
        "--max-queued-calls",
        type=int,
        default=env("MAX_QUEUED_CALLS", defaults.max_queued_calls),
        help="calls a method may have waiting in gRPC's queue; past half of it new ones are "
        "dropped at random, past all of it every one, unread, and their clients see CANCELLED "
        "(DRIFTGATE_MAX_QUEUED_CALLS)",
    )
    add(
        "--stream-concurrency",
        type=int,
        default=env("STREAM_CONCURRENCY", defaults.stream_concurrency),
        help="requests of one stream answered concurrently (DRIFTGATE_STREAM_CONCURRENCY)",
    )
    add(
        "--max-request-rows",
        type=int,
        default=env("MAX_REQUEST_ROWS", defaults.max_request_rows),
        help="most rows one request may carry (DRIFTGATE_MAX_REQUEST_ROWS; default 65536)",
    )
    add(
        "--max-request-id-bytes",
        type=int,
        default=env("MAX_REQUEST_ID_BYTES", defaults.max_request_id_bytes),
        help="longest request id accepted, in bytes; longer ones get INVALID_ARGUMENT "
        "(DRIFTGATE_MAX_REQUEST_ID_BYTES; default 256)",
    )
    add(
        "--max-queue-delay-us",
        type=int,
        default=env("MAX_QUEUE_DELAY_US", batching.max_queue_delay_us),
        help="how long a queued request waits for others, µs (DRIFTGATE_MAX_QUEUE_DELAY_US)",
    )
    add(
        "--preferred-batch-sizes",
        default=env("PREFERRED_BATCH_SIZES", ""),
        help="comma-separated batch sizes worth waiting for (DRIFTGATE_PREFERRED_BATCH_SIZES)",
    )
    add(
        "--max-queue-size",
        type=int,
        default=env("MAX_QUEUE_SIZE", batching.max_queue_size),
        help="most queued requests before RESOURCE_EXHAUSTED (DRIFTGATE_MAX_QUEUE_SIZE)",
    )
    add(
        "--inline-below-us",
        type=float,
        default=env("INLINE_BELOW_US", defaults.inline_below_us),
        help="run model calls estimated below this on the event loop (DRIFTGATE_INLINE_BELOW_US)",
    )
    add(
        "--ort-threads",
        type=int,
        default=env("ORT_THREADS", defaults.ort_threads),
        help="onnxruntime intra-op threads per session (DRIFTGATE_ORT_THREADS; default 1)",
    )
    add(
        "--infer-threads",
        type=int,
        default=env("INFER_THREADS", defaults.infer_threads),
        help="threads for model calls too slow to run inline (DRIFTGATE_INFER_THREADS)",
    )
    add(
        "--poll-interval",
        type=float,
        default=env("POLL_INTERVAL", defaults.poll_interval),
        help="seconds between repository scans (DRIFTGATE_POLL_INTERVAL; default 1)",
    )
    add(
        "--grace",
        type=float,
        default=env("GRACE_SECONDS", defaults.grace_seconds),
        help="seconds SIGTERM waits for in-flight requests (DRIFTGATE_GRACE_SECONDS)",
    )
    add(
        "--shutdown-delay",
        type=float,
        default=env("SHUTDOWN_DELAY", defaults.shutdown_delay),
        help="seconds between SIGTERM and the drain, still answering requests while health "
        "says NOT_SERVING, so a load balancer stops routing first; a second signal ends it "
        "(DRIFTGATE_SHUTDOWN_DELAY; Kubernetes: about the readiness probe's period)",
    )
    add(
        "--load-probe-timeout",
        type=float,
        default=env("LOAD_PROBE_TIMEOUT", defaults.load_probe_timeout),
        help="seconds a new version may take to open and run one row in a child process "
        "before it is loaded; one that hangs or crashes there is quarantined in the "
        "repository; 0 turns the probe off (DRIFTGATE_LOAD_PROBE_TIMEOUT)",
    )
    add(
        "--standby-versions",
        type=int,
        default=env("STANDBY_VERSIONS", defaults.standby_versions),
        help="previous stable versions kept loaded for an instant rollback "
        "(DRIFTGATE_STANDBY_VERSIONS; default 1)",
    )
    add(
        "--shadow-in-flight",
        type=int,
        default=env("SHADOW_IN_FLIGHT", defaults.shadow_in_flight),
        help="shadow request copies in flight before copies are dropped "
        "(DRIFTGATE_SHADOW_IN_FLIGHT; default 16)",
    )
    add_server_security_flags(
        add,
        operator="required by Control's changes and RepositoryModelLoad/Unload",
        ingest="required by Feedback.SendLabels and sent with reports to the monitor",
    )
    add_client_tls_flags(add, "monitor-", "the monitor")
    add(
        "--metrics-host",
        default=env("METRICS_HOST", defaults.metrics_host),
        help="address /metrics binds (DRIFTGATE_METRICS_HOST; default 127.0.0.1)",
    )
    add(
        "--monitor",
        default=os.environ.get("DRIFTGATE_MONITOR"),
        help="the monitor's gRPC address (host:port); turns on input statistics, prediction "
        "records and label forwarding (DRIFTGATE_MONITOR; default off)",
    )
    add(
        "--report-interval",
        type=float,
        default=env("REPORT_INTERVAL", defaults.report_interval),
        help="seconds between reports to the monitor (DRIFTGATE_REPORT_INTERVAL; default 5)",
    )
    add(
        "--report-bucket-seconds",
        type=int,
        default=env("REPORT_BUCKET_SECONDS", defaults.report_bucket_seconds),
        help="seconds of one bucket of counts held while the monitor is away; must equal the "
        "monitor's --bucket-seconds (DRIFTGATE_REPORT_BUCKET_SECONDS; default 60)",
    )
    add(
        "--report-max-buckets",
        type=int,
        default=env("REPORT_MAX_BUCKETS", defaults.report_max_buckets),
        help="buckets of counts held at most while the monitor is away; past it the two oldest "
        "merge, no count lost (DRIFTGATE_REPORT_MAX_BUCKETS; default 1440, a day of minutes)",
    )
    add(
        "--record-sample-rate",
        type=float,
        default=env("RECORD_SAMPLE_RATE", defaults.record_sample_rate),
        help="share of predictions kept as records for the label join, 0-1 "
        "(DRIFTGATE_RECORD_SAMPLE_RATE; default 1)",
    )
    add(
        "--record-max-per-second",
        type=float,
        default=env("RECORD_MAX_PER_SECOND", defaults.record_max_per_second),
        help="most prediction records kept per second and version, 0 for no cap "
        "(DRIFTGATE_RECORD_MAX_PER_SECOND; default 200)",
    )
    add(
        "--ready-file",
        type=Path,
        default=os.environ.get("DRIFTGATE_READY_FILE"),
        help="write the bound ports as JSON to this file once serving (DRIFTGATE_READY_FILE)",
    )
    parser.set_defaults(handler=run)


#: the largest value a gRPC channel argument holds (a C int)
_GRPC_INT_MAX = 2**31 - 1


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    for flag in (
        "max_queue_size",
        "max_batch_size",
        "max_request_rows",
        "max_request_id_bytes",
        "stream_concurrency",
        "report_bucket_seconds",
        "report_max_buckets",
        "max_queue_seconds",
        "max_queued_calls",
    ):
        if getattr(args, flag) < 1:
            raise UsageError(
                f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}"
            )
    for flag in ("max_queue_seconds", "max_queued_calls"):  # handed to gRPC as a C int
        if getattr(args, flag) > _GRPC_INT_MAX:
            raise UsageError(
                f"--{flag.replace('_', '-')} must be at most {_GRPC_INT_MAX}, "
                f"got {getattr(args, flag)}"
            )
    if args.max_pending_infers < 0:
        raise UsageError(
            f"--max-pending-infers must be 0 (--max-queue-size) or more, got "
            f"{args.max_pending_infers}"
        )
    try:
        preferred = tuple(int(s) for s in str(args.preferred_batch_sizes).split(",") if s.strip())
    except ValueError:
        raise UsageError(
            "--preferred-batch-sizes: expected comma-separated integers, got "
            f"{args.preferred_batch_sizes!r}"
        ) from None
    return GatewaySettings(
        repository=args.repository,
        host=args.host,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_message_bytes=args.max_message_bytes,
        max_request_rows=args.max_request_rows,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_in_flight_requests=args.max_in_flight_requests,
        max_in_flight_bytes=args.max_in_flight_bytes,
        max_pending_infers=args.max_pending_infers,
        max_queue_seconds=args.max_queue_seconds,
        max_queued_calls=args.max_queued_calls,
        stream_concurrency=args.stream_concurrency,
        batching=BatchingConfig(
            enabled=args.batching == "on",
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            preferred_batch_sizes=preferred,
            max_queue_size=args.max_queue_size,
        ),
        inline_below_us=args.inline_below_us,
        ort_threads=args.ort_threads,
        infer_threads=args.infer_threads,
        poll_interval=args.poll_interval,
        standby_versions=args.standby_versions,
        shadow_in_flight=args.shadow_in_flight,
        security=server_security(args),
        monitor_tls=client_tls(args, "monitor-"),
        metrics_host=args.metrics_host,
        grace_seconds=args.grace,
        shutdown_delay=args.shutdown_delay,
        load_probe_timeout=args.load_probe_timeout,
        ready_file=args.ready_file,
        monitor=args.monitor,
        report_interval=args.report_interval,
        report_bucket_seconds=args.report_bucket_seconds,
        report_max_buckets=args.report_max_buckets,
        record_sample_rate=args.record_sample_rate,
        record_max_per_second=args.record_max_per_second,
        max_request_id_bytes=args.max_request_id_bytes,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    roles = (Role.OPERATOR, Role.INGEST) if settings.monitor else (Role.OPERATOR,)
    settings.security.check_bind("serve", settings.host, roles)
    if args.workers <= 1:
        return serve_or_explain("serve", lambda: asyncio.run(_serve(settings)))
    from driftgate.gateway.workers import WorkerSupervisor

    return WorkerSupervisor(settings, args.workers).run()


async def _serve(settings: GatewaySettings) -> None:
    from driftgate.gateway.server import GatewayServer

    await GatewayServer(settings).serve()

"""``driftgate monitor``: the sidecar's flags and their DRIFTGATE_ environment variables; the
duration syntax and the events table that the client commands and the demo share."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

from driftgate.core.auth import Role
from driftgate.core.cli import EXIT_REFUSED, UsageError, add_command, env, serve_or_explain
from driftgate.core.objectstore import repository_location
from driftgate.core.security import (
    add_client_tls_flags,
    add_server_security_flags,
    client_tls,
    server_security,
)
from driftgate.monitor.settings import MonitorSettings

__all__ = ["events_table", "parse_duration", "register", "store_url"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1h``, ``7d`` -> seconds; ``total`` or ``all`` -> 0."""
    if text.strip().lower() in {"total", "all"}:
        return 0.0
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(subparsers: Any) -> None:
    """Add ``driftgate monitor``; the monitor's client commands are ``driftgate.commands``."""
    _register_monitor(subparsers)


def _register_monitor(subparsers: Any) -> None:
    d = MonitorSettings()
    parser = add_command(
        subparsers,
        "monitor",
        "run the monitor sidecar (statistics ingest, labels, drift, accuracy)",
        description="Run the monitor sidecar: a gRPC server taking statistics reports and "
        "labels from gateways and answering drift and accuracy queries, with Prometheus "
        "metrics. Each flag can also be set with the environment variable in its help.",
    )
    add = parser.add_argument
    add(
        "--data-dir",
        type=Path,
        default=Path(env("DATA_DIR", str(d.data_dir))),
        help="embedded SQLite store directory (DRIFTGATE_DATA_DIR; default ./driftgate-data)",
    )
    add(
        "--store-url",
        default=os.environ.get("DRIFTGATE_STORE_URL"),
        help="database URL, e.g. postgresql+psycopg://... (DRIFTGATE_STORE_URL; default "
        "sqlite:///<data-dir>/monitor.db)",
    )
    add(
        "--store-url-file",
        type=Path,
        default=os.environ.get("DRIFTGATE_STORE_URL_FILE"),
        help="read the database URL from this file, read once at start: it holds a password, "
        "and Compose and Kubernetes secrets are files (DRIFTGATE_STORE_URL_FILE; instead of "
        "--store-url)",
    )
    add(
        "--repository",
        type=repository_location,
        default=repository_location(env("REPOSITORY", str(d.repository))),
        help="repository with the reference profiles: a directory or s3://BUCKET/PREFIX "
        "(DRIFTGATE_REPOSITORY; default ./models)",
    )
    add("--host", default=env("HOST", d.host), help="address gRPC binds (DRIFTGATE_HOST; "
        "default 127.0.0.1: loopback; beyond it, set credentials or --insecure)")  # fmt: skip
    add("--metrics-host", default=env("METRICS_HOST", d.metrics_host), help="address /metrics "
        "binds (DRIFTGATE_METRICS_HOST; default 127.0.0.1)")  # fmt: skip
    add(
        "--grpc-port",
        type=int,
        default=env("MONITOR_GRPC_PORT", d.grpc_port),
        help="gRPC port, 0 for a free one (DRIFTGATE_MONITOR_GRPC_PORT; default 8003)",
    )
    add(
        "--metrics-port",
        type=int,
        default=env("MONITOR_METRICS_PORT", d.metrics_port),
        help="/metrics port, -1 to disable (DRIFTGATE_MONITOR_METRICS_PORT; default 8004)",
    )
    add(
        "--window",
        type=parse_duration,
        default=env("WINDOW", "1h"),
        help="default drift/accuracy window (DRIFTGATE_WINDOW; default 1h)",
    )
    add(
        "--evaluate-interval",
        type=float,
        default=env("EVALUATE_INTERVAL", d.evaluate_interval),
        help="seconds between gauge refreshes (DRIFTGATE_EVALUATE_INTERVAL; default 60)",
    )
    add(
        "--max-records",
        type=int,
        default=env("MAX_RECORDS", d.max_records),
        help="prediction records kept at most (DRIFTGATE_MAX_RECORDS; default 1000000)",
    )
    add(
        "--record-retention",
        type=parse_duration,
        default=env("RECORD_RETENTION", "30d"),
        help="age at which records and held labels go (DRIFTGATE_RECORD_RETENTION; default 30d)",
    )
    add(
        "--label-delay",
        type=parse_duration,
        default=env("LABEL_DELAY", "24h"),
        help="longest delay of a label after its prediction; records and held labels are kept "
        "at least this long plus a margin (max(1h, a tenth)), whatever --max-records and "
        "--record-retention say (DRIFTGATE_LABEL_DELAY; default 24h)",
    )
    add(
        "--counts-retention",
        type=parse_duration,
        default=env("COUNTS_RETENTION", "90d"),
        help="age at which count buckets go (DRIFTGATE_COUNTS_RETENTION; default 90d)",
    )
    add(
        "--prune-interval",
        type=float,
        default=env("PRUNE_INTERVAL", d.prune_interval),
        help="seconds between retention prunes (DRIFTGATE_PRUNE_INTERVAL; default 600)",
    )
    add(
        "--grace",
        type=float,
        default=env("GRACE_SECONDS", d.grace_seconds),
        help="seconds SIGTERM waits for in-flight calls (DRIFTGATE_GRACE_SECONDS)",
    )
    add(
        "--ready-file",
        type=Path,
        default=os.environ.get("DRIFTGATE_READY_FILE"),
        help="write the bound ports as JSON here once serving (DRIFTGATE_READY_FILE)",
    )
    add(
        "--bucket-seconds",
        type=int,
        default=env("BUCKET_SECONDS", d.bucket_seconds),
        help="length of a count bucket; the finest window (DRIFTGATE_BUCKET_SECONDS; default 60)",
    )
    add(
        "--gateway",
        default=os.environ.get("DRIFTGATE_GATEWAY"),
        help="the gateway whose Control service canary analysis and retraining act on "
        "(DRIFTGATE_GATEWAY; default none: the monitor never changes a deployment)",
    )
    add_server_security_flags(
        add,
        operator="required by Retrain and sent with the monitor's commands to the gateway",
        ingest="required by Report and SendLabels (the gateways' reporters hold it)",
    )
    add_client_tls_flags(add, "gateway-", "the gateway")
    add(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        default=env("SCHEDULER", True),
        help="do not run the policy jobs (drift evaluation, canary analysis, retraining) "
        "(DRIFTGATE_SCHEDULER=0)",
    )
    add(
        "--policy-sync-interval",
        type=float,
        default=env("POLICY_SYNC_INTERVAL", d.policy_sync_interval),
        help="seconds between re-reads of the policy files (DRIFTGATE_POLICY_SYNC_INTERVAL)",
    )
    add(
        "--leader-check-interval",
        type=float,
        default=env("LEADER_CHECK_INTERVAL", d.leader_check_interval),
        help="seconds between leader-election checks: with several monitors on one PostgreSQL "
        "store, one runs the policy and another takes over within this long after it dies "
        "(DRIFTGATE_LEADER_CHECK_INTERVAL)",
    )
    add(
        "--monitor-id",
        default=os.environ.get("DRIFTGATE_MONITOR_ID"),
        help="this monitor's name in the leader election and its events (DRIFTGATE_MONITOR_ID; "
        "default <host name>-<pid>)",
    )
    parser.set_defaults(handler=_run_monitor)  # fmt: skip


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    window = args.window if isinstance(args.window, float) else parse_duration(args.window)
    return MonitorSettings(
        data_dir=args.data_dir,
        store_url=store_url(args),
        repository=args.repository,
        host=args.host,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        default_window_seconds=window,
        evaluate_interval=args.evaluate_interval,
        max_records=args.max_records,
        record_retention_seconds=_seconds(args.record_retention),
        label_delay_seconds=_seconds(args.label_delay),
        counts_retention_seconds=_seconds(args.counts_retention),
        prune_interval=args.prune_interval,
        grace_seconds=args.grace,
        ready_file=args.ready_file,
        bucket_seconds=args.bucket_seconds,
        gateway=args.gateway or None,
        metrics_host=args.metrics_host,
        security=server_security(args),
        gateway_tls=client_tls(args, "gateway-"),
        scheduler=args.scheduler,
        policy_sync_interval=args.policy_sync_interval,
        leader_check_interval=args.leader_check_interval,
        monitor_id=args.monitor_id or None,
    )


def store_url(args: argparse.Namespace) -> str | None:
    """The URL of ``--store-url`` or the one in ``--store-url-file`` (one of them at most)."""
    path = args.store_url_file
    if path is None:
        return args.store_url or None
    if args.store_url:
        raise UsageError(
            "give the database URL once: --store-url (DRIFTGATE_STORE_URL) or "
            "--store-url-file (DRIFTGATE_STORE_URL_FILE), not both"
        )
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"--store-url-file {path}: {reason}") from exc
    if not url:
        raise UsageError(f"--store-url-file {path} is empty: expected a database URL")
    return url


def _seconds(value: float | str) -> float:
    return value if isinstance(value, float) else parse_duration(value)


def _run_monitor(args: argparse.Namespace) -> int:
    from driftgate.monitor.leader import LeadershipRefused
    from driftgate.monitor.server import MonitorServer

    settings = settings_from(args)
    settings.security.check_bind("monitor", settings.host, (Role.OPERATOR, Role.INGEST))
    try:
        return serve_or_explain("monitor", lambda: asyncio.run(MonitorServer(settings).serve()))
    except LeadershipRefused as exc:  # SQLite: another monitor runs the policy on this file
        print(f"driftgate monitor: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def events_table(events: Any) -> str:
    """The events as a table, newest first (also used by the demo)."""
    import datetime as dt

    lines = [f"{'ID':>4}  {'TIME (UTC)':<19}  {'MODEL':<14} {'VER':>3}  {'KIND':<20} REASON"]
    for e in events:
        when = dt.datetime.fromtimestamp(e.time.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        reason = " ".join(e.reason.split())
        reason = reason if len(reason) <= 110 else reason[:107] + "..."
        lines.append(
            f"{e.id:>4}  {when:<19}  {e.model[:14]:<14} {e.version:>3}  {e.kind:<20} {reason}"
        )
    return "\n".join(lines)

"""``driftgate monitor``, ``driftgate drift`` and ``driftgate accuracy``: flags and env vars."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

from driftgate.core.auth import Role
from driftgate.core.cli import add_control_token_flags, control_token, env
from driftgate.core.security import (
    add_client_tls_flags,
    add_server_security_flags,
    client_tls,
    server_security,
)
from driftgate.monitor.settings import MonitorSettings

__all__ = ["parse_duration", "register"]

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
    _register_monitor(subparsers)
    _register_events_and_retrain(subparsers)
    for name, help_text in (
        ("drift", "drift of a model version against its reference profile"),
        ("accuracy", "accuracy of a model version from joined labels"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("model", help="model name")
        parser.add_argument("--version", type=int, help="model version (default: stable)")
        parser.add_argument(
            "--window",
            type=parse_duration,
            help="window ending now, e.g. 15m, 1h, 7d, or 'total' (default: the monitor's)",
        )
        parser.add_argument(
            "--monitor",
            default=os.environ.get("DRIFTGATE_MONITOR", "localhost:8003"),
            help="monitor gRPC address (DRIFTGATE_MONITOR; default localhost:8003)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_client_tls_flags(parser.add_argument, "", "the monitor")
        parser.set_defaults(handler=_query)


def _register_monitor(subparsers: Any) -> None:
    d = MonitorSettings()
    parser = subparsers.add_parser(
        "monitor",
        help="run the monitor sidecar (statistics ingest, labels, drift, accuracy)",
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
        "--repository",
        type=Path,
        default=Path(env("REPOSITORY", str(d.repository))),
        help="repository with the reference profiles (DRIFTGATE_REPOSITORY; default ./models)",
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
    parser.set_defaults(handler=_run_monitor)  # fmt: skip


def _register_events_and_retrain(subparsers: Any) -> None:
    monitor = os.environ.get("DRIFTGATE_MONITOR", "localhost:8003")
    monitor_help = "monitor gRPC address (DRIFTGATE_MONITOR; default localhost:8003)"
    parser = subparsers.add_parser(
        "events",
        help="list a model's policy events (drift alarms, retrains, promotions, rollbacks)",
        description="List the events the monitor recorded, newest first.",
    )
    parser.add_argument("model", nargs="?", default="", help="model name (default: all)")
    parser.add_argument("--limit", type=int, default=50, help="events to show (default 50)")
    parser.add_argument("--monitor", default=monitor, help=monitor_help)
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_client_tls_flags(parser.add_argument, "", "the monitor")
    parser.set_defaults(handler=_events)
    parser = subparsers.add_parser(
        "retrain",
        help="ask the monitor to retrain a model now",
        description="Queue a retraining of MODEL on the monitor: its stable version's "
        "training sample plus labelled production rows; an accepted result is deployed as "
        "a canary. Follow the outcome with `driftgate events MODEL`.",
    )
    parser.add_argument("model", help="model name")
    parser.add_argument("--reason", default="", help="why, recorded in the events")
    parser.add_argument("--monitor", default=monitor, help=monitor_help)
    add_control_token_flags(parser.add_argument, "required by the monitor's Retrain")
    add_client_tls_flags(parser.add_argument, "", "the monitor")
    parser.set_defaults(handler=_retrain)


def settings_from(args: argparse.Namespace) -> MonitorSettings:
    window = args.window if isinstance(args.window, float) else parse_duration(args.window)
    return MonitorSettings(
        data_dir=args.data_dir,
        store_url=args.store_url,
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
    )


def _seconds(value: float | str) -> float:
    return value if isinstance(value, float) else parse_duration(value)


def _run_monitor(args: argparse.Namespace) -> int:
    from driftgate.monitor.server import MonitorServer

    settings = settings_from(args)
    settings.security.check_bind("monitor", settings.host, (Role.OPERATOR, Role.INGEST))
    asyncio.run(MonitorServer(settings).serve())
    return 0


def _query(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc

    request: Any = pb.GetDriftRequest if args.command == "drift" else pb.GetAccuracyRequest
    message = request(model=args.model, version=args.version)
    if args.window is not None:
        message.window.FromNanoseconds(int(args.window * 1e9))
    from driftgate.core.rpc import channel as tls_channel

    with tls_channel(args.monitor, client_tls(args)) as channel:
        stub = pb_grpc.MonitorStub(channel)
        call = stub.GetDrift if args.command == "drift" else stub.GetAccuracy
        try:
            response = call(message, timeout=60)
        except grpc.RpcError as exc:
            print(f"driftgate {args.command}: {exc.code().name}: {exc.details()}")
            return 1
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
    elif args.command == "drift":
        print(_drift_table(response))
    else:
        print(_accuracy_table(response))
    return 0


def _stub(args: argparse.Namespace) -> Any:
    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as pb_grpc
    from driftgate.core.rpc import channel as tls_channel

    channel = tls_channel(args.monitor, client_tls(args))
    return channel, pb_grpc.MonitorStub(channel)


def _events(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb

    channel, stub = _stub(args)
    try:
        response = stub.ListEvents(
            pb.ListEventsRequest(model=args.model, limit=args.limit), timeout=30
        )
    except grpc.RpcError as exc:
        print(f"driftgate events: {exc.code().name}: {exc.details()}")
        return 3 if exc.code() == grpc.StatusCode.UNAVAILABLE else 1
    finally:
        channel.close()
    if args.json:
        events = []
        for e in response.events:
            item = MessageToDict(e, preserving_proto_field_name=True)
            item["figures"] = json.loads(item.pop("figures_json", "{}") or "{}")
            events.append(item)
        print(json.dumps(events, indent=2))
    else:
        print(events_table(response.events))
    return 0


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


def _retrain(args: argparse.Namespace) -> int:
    import grpc

    from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb

    channel, stub = _stub(args)
    token = control_token(args)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        request = pb.RetrainRequest(model=args.model, reason=args.reason)
        response = stub.Retrain(request, timeout=30, metadata=metadata)
    except grpc.RpcError as exc:
        print(f"driftgate retrain: {exc.code().name}: {exc.details()}")
        codes = {grpc.StatusCode.UNAVAILABLE: 3, grpc.StatusCode.NOT_FOUND: 2}
        return codes.get(exc.code(), 1)
    finally:
        channel.close()
    print(response.message)
    return 0


_VERDICTS = {0: "-", 1: "insufficient", 2: "ok", 3: "DRIFT"}


def _drift_table(r: Any) -> str:
    lines = [
        f"{r.model} version {r.version}: {r.rows} rows, dataset drift share "
        f"{r.dataset_drift_share:.0%} ({_VERDICTS[r.dataset_verdict]})",
        f"{'feature':<24} {'rows':>8} {'psi':>7} {'js':>6} {'ks':>6} {'chi2':>9} {'linf':>6} "
        f"{'stat':>12} {'thresh':>7} {'verdict':>12}  bar",
    ]
    every = [*r.features, *([r.prediction] if r.HasField("prediction") else [])]
    for f in every:
        # The bar's threshold: the floor counts only when it is on the statistic itself.
        floored = f.effect_statistic in ("", f.statistic)
        threshold = max(f.critical_value, f.effect_size_floor) if floored else f.critical_value
        value = getattr(f, f.statistic, 0.0)
        # Bar: the statistic against its threshold, '|' marks the threshold at 10 characters.
        filled = min(int(round(10 * value / threshold)) if threshold > 0 else 0, 20)
        bar = ("#" * filled).ljust(20)
        bar = bar[:10] + "|" + bar[10:]
        ks = f"{f.ks_statistic:.3f}" if f.HasField("ks_statistic") else "-"
        chi2 = f"{f.chi_square:.1f}" if f.HasField("chi_square") else "-"
        lines.append(
            f"{f.name[:24]:<24} {f.rows:>8} {f.psi:>7.4f} {f.js_distance:>6.3f} {ks:>6} "
            f"{chi2:>9} {f.l_infinity:>6.3f} {f.statistic:>12} {threshold:>7.4f} "
            f"{_VERDICTS[f.verdict]:>12}  {bar}"
        )
        lines.extend(
            f"  {q.kind}: {q.rate:.1%} of {q.rows} values, training {q.reference_rate:.1%} "
            f"of {q.reference_rows} ({q.test}, p={q.p_value:.2g} < {q.alpha:.2g})  DRIFT"
            for q in f.quality
            if q.verdict == 3
        )
    return "\n".join(lines)


def _accuracy_table(r: Any) -> str:
    lines = [f"{r.model} version {r.version}"]
    lines.append(
        f"  predictions {r.prediction_count}, labels {r.label_count}, coverage {r.coverage:.1%}"
    )
    for name in ("accuracy", "estimated_accuracy", "f1", "log_loss", "mae", "rmse"):
        if r.HasField(name):
            lines.append(f"  {name:<20} {getattr(r, name):.4f}")
    for label, recall in sorted(r.recall.items()):
        lines.append(f"  recall[{label}]{'':<{max(12 - len(label), 0)}} {recall:.4f}")
    for name in ("label_lag", "label_lag_p90", "label_lag_p99"):
        if r.HasField(name):
            lines.append(f"  {name:<20} {getattr(r, name).ToTimedelta().total_seconds():.1f} s")
    return "\n".join(lines)

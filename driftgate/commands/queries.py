"""The monitor's client commands: drift, accuracy, events, retrain (``--wait`` follows it)."""

from __future__ import annotations

import argparse
from typing import Any

from driftgate.client import Event, Monitor
from driftgate.commands.output import connection, guarded, print_json, stderr, to_json
from driftgate.core.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    add_command,
    client_flags,
    exit_codes,
    fail,
)
from driftgate.monitor._cli import events_table, parse_duration

__all__ = ["register"]

_QUERY_EXIT = exit_codes(
    refused="the monitor failed the call", unreachable="the monitor",
    usage="unknown model or version",
)  # fmt: skip
_DRIFT_EPILOG = (
    _QUERY_EXIT
    + """

--json prints GetDriftResponse (proto/driftgate/monitor/v1/monitor.proto): {"model",
"version", "window_start", "window_end", "rows", "dataset_drift_share", "dataset_verdict",
"features": [FEATURE], "prediction": FEATURE}, FEATURE being {"name", "categorical", "rows",
"psi", "js_distance", "ks_statistic" (numeric features), "chi_square" (categorical ones),
"l_infinity", "statistic", "critical_value", "verdict", "effect_size_floor", "quality",
"distribution_verdict", "test", "effect_statistic", "reference_rows", "alpha"}; verdicts
are INSUFFICIENT_DATA, NO_DRIFT or DRIFT; numbers are numbers, zeros kept."""
)
_ACCURACY_EPILOG = (
    _QUERY_EXIT
    + """

--json prints GetAccuracyResponse: {"model", "version", "window_start", "window_end",
"label_count", "prediction_count", "coverage", "label_lag", "label_lag_p90",
"label_lag_p99" (seconds), "recall": {class: recall}} and, where they apply to the task
and labels exist, "accuracy", "f1", "log_loss", "estimated_accuracy" (classifiers), "mae",
"rmse" (regressors)."""
)
_EVENTS_EPILOG = (
    _QUERY_EXIT
    + """

--json prints a list, newest first, of {"id", "time", "kind", "model", "version",
"reason", "figures": {...}}."""
)
_RETRAIN_EPILOG = (
    exit_codes(
        refused="a missing or wrong control token, a monitor without its scheduler; with "
        "--wait also a retrain that failed or was rejected, or no outcome within --wait-timeout",
        unreachable="the monitor",
        usage="a model with no version in the repository",
    )
    + """

--json prints {"job_id", "message"} and, with --wait, "outcome": the retrain's last event
(as `events --json` prints one); --wait prints the retrain's events on stderr as they come."""
)


def register(subparsers: Any) -> None:
    for name, text, epilog in (
        ("drift", "drift of a model version against its reference profile", _DRIFT_EPILOG),
        ("accuracy", "accuracy of a model version from joined labels", _ACCURACY_EPILOG),
    ):
        p = add_command(subparsers, name, text, epilog=epilog, parents=[client_flags("monitor")])
        p.add_argument("model", metavar="MODEL", help="model name")
        p.add_argument("--version", type=int, help="model version (default: the stable one)")
        p.add_argument("--window", type=parse_duration, help="window ending now, e.g. 15m, "
                       "1h, 7d, or 'total' (default: the monitor's --window)")  # fmt: skip
        p.set_defaults(handler=guarded("monitor", _query))
    p = add_command(
        subparsers, "events",
        "list a model's policy events (drift alarms, retrains, promotions, rollbacks)",
        description="List the events the monitor recorded, newest first.",
        epilog=_EVENTS_EPILOG, parents=[client_flags("monitor")],
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", nargs="?", default="",
                   help="model name (default: every model)")  # fmt: skip
    p.add_argument("--limit", type=int, default=50, help="events to show")
    p.set_defaults(handler=guarded("monitor", _events))
    _register_retrain(subparsers)


def _register_retrain(subparsers: Any) -> None:
    p = add_command(
        subparsers, "retrain", "ask the monitor to retrain a model now",
        description="Queue a retraining of MODEL on the monitor: its stable version's "
        "training sample plus labelled production rows; an accepted result is deployed as "
        "a canary. --wait follows it to its outcome; else follow it with `driftgate events`.",
        epilog=_RETRAIN_EPILOG, parents=[client_flags("monitor", token=True)],
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="model name")
    p.add_argument("--reason", default="", help="why, recorded in the events")
    p.add_argument("--wait", action="store_true", help="follow the retrain to its outcome "
                   "(exit 0 only when it succeeded), its events on stderr")  # fmt: skip
    p.add_argument("--wait-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="how long --wait follows the retrain")  # fmt: skip
    p.set_defaults(handler=guarded("monitor", _retrain))


def _query(args: argparse.Namespace) -> int:
    with Monitor(**connection(args, "monitor")) as monitor:
        call = monitor.drift if args.command == "drift" else monitor.accuracy
        result = call(args.model, version=args.version, window=args.window)
    if args.json:
        print_json(to_json(result.message))
    elif args.command == "drift":
        print(_drift_table(result.message))
    else:
        print(_accuracy_table(result.message))
    return EXIT_OK


def event_json(event: Event) -> dict[str, Any]:
    data = to_json(event.message)
    data.pop("figures_json", None)
    return data | {"figures": event.figures}


def _events(args: argparse.Namespace) -> int:
    with Monitor(**connection(args, "monitor")) as monitor:
        events = monitor.events(args.model, args.limit)
    if args.json:
        print_json([event_json(e) for e in events])
    else:
        print(events_table([e.message for e in events]))
    return EXIT_OK


def _progress(event: Event) -> None:
    when = event.time.strftime("%H:%M:%S") if event.time else "-"
    stderr(f"driftgate retrain: {when} {event.kind} (version {event.version}): {event.reason}")


def _retrain(args: argparse.Namespace) -> int:
    with Monitor(**connection(args, "monitor")) as monitor:
        queued = monitor.retrain(args.model, reason=args.reason)
        if not args.wait:
            outcome = None
        else:
            stderr(f"driftgate retrain: {queued.message}; waiting for the outcome")
            try:
                outcome = monitor.wait_for_retrain(
                    args.model, queued.after_event, timeout=args.wait_timeout,
                    progress=_progress,
                )  # fmt: skip
            except TimeoutError as exc:
                return fail(args, f"{exc}; follow it with `driftgate events`", EXIT_REFUSED)
    data: dict[str, Any] = {"job_id": queued.job_id, "message": queued.message}
    if outcome is not None:
        data["outcome"] = event_json(outcome)
    if args.json:
        print_json(data)
    else:
        print(queued.message if outcome is None else f"{outcome.kind}: {outcome.reason}")
    succeeded = outcome is None or outcome.kind == "retrain_succeeded"
    return EXIT_OK if succeeded else EXIT_REFUSED


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
        lines.append(_drift_row(f))
        lines.extend(
            f"  {q.kind}: {q.rate:.1%} of {q.rows} values, training {q.reference_rate:.1%} "
            f"of {q.reference_rows} ({q.test}, p={q.p_value:.2g} < {q.alpha:.2g})  DRIFT"
            for q in f.quality
            if q.verdict == 3
        )
    return "\n".join(lines)


def _drift_row(f: Any) -> str:
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
    return (
        f"{f.name[:24]:<24} {f.rows:>8} {f.psi:>7.4f} {f.js_distance:>6.3f} {ks:>6} "
        f"{chi2:>9} {f.l_infinity:>6.3f} {f.statistic:>12} {threshold:>7.4f} "
        f"{_VERDICTS[f.verdict]:>12}  {bar}"
    )


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

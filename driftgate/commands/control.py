"""Operator commands that talk to a gateway's Control service: deploy, traffic, shadow,
promote, rollback, status, history."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from driftgate.client import Control, Deployment, HistoryEntry, ModelStatus
from driftgate.commands.output import connection, guarded, print_json, table, to_json
from driftgate.core.cli import EXIT_OK, UsageError, add_command, client_flags, exit_codes

__all__ = ["register"]

_CHANGE_EPILOG = (
    exit_codes(
        refused="stale --expected-revision, a transition the state does not allow (promote "
        "without a canary), or a missing or wrong control token",
        unreachable="the gateway",
        usage="unknown model, version not in the repository",
    )
    + """

--json prints {"state": DEPLOYMENT}: DEPLOYMENT is {"model", "revision", "stable",
"shadow" (0: none), "previous": [versions], "updated_at", "updated_by", and "canary":
{"version", "weight"} when there is one}; numbers are numbers."""
)

_STATUS_EPILOG = (
    exit_codes(
        refused="the gateway failed the call", unreachable="the gateway", usage="unknown model"
    )
    + """

--json prints {"models": [{"state": DEPLOYMENT (as `deploy --help` says), "versions":
[{"version", "role" (ROLE_STABLE, ROLE_CANARY, ROLE_SHADOW, ROLE_STANDBY), "ready",
"requests", "errors", "latency_p50_ms", "latency_p99_ms", "loaded_at", "weight",
"shadow_compared", "shadow_agreement", "shadow_dropped"}]}]}. No token needed."""
)

_HISTORY_EPILOG = (
    exit_codes(
        refused="the gateway failed the call", unreachable="the gateway", usage="unknown model"
    )
    + """

--json prints {"entries": [{"revision", "time", "action", "actor", "reason", "before":
DEPLOYMENT, "after": DEPLOYMENT}]}, newest first. No token needed."""
)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text}")
    return value


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a version number >= 1, got {text!r}")
    return int(text)


def _changes() -> argparse.ArgumentParser:
    parent = client_flags("gateway", token=True)
    parent.add_argument("--reason", default="", help="why, recorded in the history")
    parent.add_argument(
        "--expected-revision",
        type=int,
        metavar="REVISION",
        help="refuse (exit 1) unless the deployment is at this revision",
    )
    return parent


def register(subparsers: Any) -> None:
    change, read = _changes(), client_flags("gateway")

    def add(name: str, text: str, parent: argparse.ArgumentParser, epilog: str) -> Any:
        parser = add_command(subparsers, name, text, epilog=epilog, parents=[parent])
        parser.add_argument("model", metavar="MODEL", help="model name")
        return parser

    p = add("deploy", "deploy a version as the stable version, or as a canary", change,
            _CHANGE_EPILOG)  # fmt: skip
    p.add_argument("version", metavar="VERSION", type=_version, help="the version to deploy")
    p.add_argument("--canary", type=_percent, metavar="PCT", help="deploy as a canary with PCT%%")
    p.set_defaults(handler=_handler(_deploy))

    p = add("traffic", "change the canary's share of traffic", change, _CHANGE_EPILOG)
    p.add_argument("--canary", type=_percent, metavar="PCT", required=True,
                   help="the canary's share of traffic, 0 to 100")  # fmt: skip
    p.set_defaults(handler=_handler(_traffic))

    p = add("shadow", "mirror traffic to a version (answers recorded, never returned)", change,
            _CHANGE_EPILOG)  # fmt: skip
    p.add_argument("version", metavar="VERSION", type=_version, nargs="?",
                   help="the version to mirror traffic to (or --off)")  # fmt: skip
    p.add_argument("--off", action="store_true", help="stop mirroring")
    p.set_defaults(handler=_handler(_shadow))

    p = add("promote", "make the canary the stable version", change, _CHANGE_EPILOG)
    p.set_defaults(handler=_handler(_promote))

    p = add("rollback", "drop the canary, or go back to the previous stable version (or --to "
            "VERSION)", change, _CHANGE_EPILOG)  # fmt: skip
    p.add_argument("--to", type=_version, metavar="VERSION", help="the version to serve")
    p.set_defaults(handler=_handler(_rollback))

    p = add_command(subparsers, "status", "show versions, roles, weights and live figures",
                    epilog=_STATUS_EPILOG, parents=[read])  # fmt: skip
    p.add_argument("model", metavar="MODEL", nargs="?", default="",
                   help="model name (default: every model)")  # fmt: skip
    p.set_defaults(handler=_handler(_status))

    p = add("history", "show the changes of a model's deployment, newest first", read,
            _HISTORY_EPILOG)  # fmt: skip
    p.add_argument("--limit", type=int, default=20, help="entries to show")
    p.set_defaults(handler=_handler(_history))


Command = Callable[[Control, argparse.Namespace], Any]


def _handler(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with Control(**connection(args, "gateway")) as control:
            result = command(control, args)
        _print(result, args)
        return EXIT_OK

    return guarded("gateway", run)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {"reason": args.reason, "expected_revision": args.expected_revision}


def _deploy(control: Control, args: argparse.Namespace) -> Deployment:
    return control.deploy(args.model, args.version, canary=args.canary, **_common(args))


def _traffic(control: Control, args: argparse.Namespace) -> Deployment:
    return control.traffic(args.model, args.canary, **_common(args))


def _shadow(control: Control, args: argparse.Namespace) -> Deployment:
    if args.off == (args.version is not None):
        raise UsageError("give either a VERSION to shadow or --off")
    return control.shadow(args.model, None if args.off else args.version, **_common(args))


def _promote(control: Control, args: argparse.Namespace) -> Deployment:
    return control.promote(args.model, **_common(args))


def _rollback(control: Control, args: argparse.Namespace) -> Deployment:
    return control.rollback(args.model, to=args.to, **_common(args))


def _status(control: Control, args: argparse.Namespace) -> list[ModelStatus]:
    return control.status(args.model)


def _history(control: Control, args: argparse.Namespace) -> list[HistoryEntry]:
    return control.history(args.model, args.limit)


# -- output -------------------------------------------------------------------------------


def _print(result: Any, args: argparse.Namespace) -> None:
    if args.command == "status":
        if args.json:
            print_json({"models": [to_json(m.message) for m in result]})
        else:
            print(_status_table(result))
    elif args.command == "history":
        if args.json:
            print_json({"entries": [to_json(e.message) for e in result]})
        else:
            print(_history_table(result))
    elif args.json:
        print_json({"state": to_json(result.message)})
    else:
        header = ["MODEL", "REVISION", "STABLE", "CANARY", "SHADOW", "PREVIOUS"]
        print(table(header, [_state_row(result)]))


def _state_row(state: Deployment) -> list[str]:
    return [
        state.model,
        str(state.revision),
        str(state.stable or "-"),
        _canary(state),
        str(state.shadow or "-"),
        ",".join(map(str, state.previous)) or "-",
    ]


def _canary(state: Deployment) -> str:
    return "-" if state.canary is None else f"{state.canary} ({state.canary_weight:g}%)"


def _status_table(models: list[ModelStatus]) -> str:
    header = ["MODEL", "REV", "VERSION", "ROLE", "WEIGHT", "REQUESTS", "ERRORS", "P50 MS"]
    header += ["P99 MS", "SHADOW AGREEMENT"]
    rows = []
    for model in models:
        for v in model.versions:
            agreement = "-"
            if v.role == "shadow":
                agreement = f"{v.shadow_agreement:.1%} of {v.shadow_compared}"
            rows.append(
                [
                    model.deployment.model,
                    str(model.deployment.revision),
                    str(v.version),
                    v.role or "-",
                    f"{v.weight:g}%" if v.role in ("stable", "canary") else "-",
                    str(v.requests),
                    str(v.errors),
                    f"{v.latency_p50_ms:.2f}",
                    f"{v.latency_p99_ms:.2f}",
                    agreement,
                ]
            )
    return table(header, rows) if rows else "no models loaded"


def _history_table(entries: list[HistoryEntry]) -> str:
    rows = [
        [
            str(e.revision),
            e.time.strftime("%Y-%m-%d %H:%M:%S") if e.time else "-",
            e.action,
            _describe_change(e.before, e.after),
            e.actor,
            e.reason or "-",
        ]
        for e in entries
    ]
    header = ["REV", "TIME (UTC)", "ACTION", "CHANGE", "ACTOR", "REASON"]
    return table(header, rows) if rows else "no changes recorded"


def _describe_change(before: Deployment, after: Deployment) -> str:
    parts = []
    for name, old, new in (
        ("stable", str(before.stable or "-"), str(after.stable or "-")),
        ("canary", _canary(before), _canary(after)),
        ("shadow", str(before.shadow or "-"), str(after.shadow or "-")),
    ):
        if old != new:
            parts.append(f"{name} {old} -> {new}")
    return "; ".join(parts) or "-"

"""Operator commands that talk to a gateway's Control service: deploy, traffic, shadow,
promote, rollback, status, history."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from driftgate.core.security import add_client_tls_flags, client_tls

__all__ = ["EXIT_CODES", "register"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

EXIT_CODES = """exit codes:
  0  done (a command that changes nothing also succeeds)
  1  refused: stale --expected-revision, a transition the state does not allow
     (promote without a canary), or a missing/wrong control token
  2  usage: bad arguments, unknown model, version not in the repository
  3  the gateway is unreachable (or did not answer in time)

environment:
  DRIFTGATE_GATEWAY        gateway address (default localhost:8001)
  DRIFTGATE_CONTROL_TOKEN  control token for commands that change state"""

_REFUSED = {"FAILED_PRECONDITION", "ABORTED", "UNAUTHENTICATED", "PERMISSION_DENIED"}
_USAGE = {"NOT_FOUND", "INVALID_ARGUMENT", "OUT_OF_RANGE", "UNIMPLEMENTED"}
_UNREACHABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
_ROLE_NAMES = {1: "stable", 2: "canary", 3: "shadow", 4: "standby"}


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


def _common(mutating: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--gateway",
        default=os.environ.get("DRIFTGATE_GATEWAY", "localhost:8001"),
        help="gateway address host:port (DRIFTGATE_GATEWAY; default localhost:8001)",
    )
    parent.add_argument("--json", action="store_true", help="print JSON for scripts")
    parent.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the gateway"
    )
    add_client_tls_flags(parent.add_argument, "", "the gateway")
    if mutating:
        parent.add_argument(
            "--token",
            default=os.environ.get("DRIFTGATE_CONTROL_TOKEN"),
            help="control token (DRIFTGATE_CONTROL_TOKEN)",
        )
        parent.add_argument("--reason", default="", help="why, recorded in the history")
        parent.add_argument(
            "--expected-revision",
            type=int,
            help="refuse (exit 1) unless the deployment is at this revision",
        )
    return parent


def register(subparsers: Any) -> None:
    change, read = _common(True), _common(False)

    def add(name: str, helptext: str, parent: argparse.ArgumentParser) -> Any:
        parser = subparsers.add_parser(
            name,
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + ".",
            parents=[parent],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    p = add("deploy", "deploy a version as the stable version, or as a canary", change)
    p.add_argument("model")
    p.add_argument("version", type=_version)
    p.add_argument("--canary", type=_percent, metavar="PCT", help="deploy as a canary with PCT%%")
    p.set_defaults(handler=_run(_deploy))

    p = add("traffic", "change the canary's share of traffic", change)
    p.add_argument("model")
    p.add_argument("--canary", type=_percent, metavar="PCT", required=True)
    p.set_defaults(handler=_run(_traffic))

    p = add("shadow", "mirror traffic to a version (answers recorded, never returned)", change)
    p.add_argument("model")
    p.add_argument("version", type=_version, nargs="?")
    p.add_argument("--off", action="store_true", help="stop mirroring")
    p.set_defaults(handler=_run(_shadow))

    p = add("promote", "make the canary the stable version", change)
    p.add_argument("model")
    p.set_defaults(handler=_run(_promote))

    p = add(
        "rollback",
        "drop the canary, or go back to the previous stable version (or --to VERSION)",
        change,
    )
    p.add_argument("model")
    p.add_argument("--to", type=_version, metavar="VERSION", help="the version to serve")
    p.set_defaults(handler=_run(_rollback))

    p = add("status", "show versions, roles, weights and live figures", read)
    p.add_argument("model", nargs="?", default="")
    p.set_defaults(handler=_run(_status))

    p = add("history", "show the changes of a model's deployment, newest first", read)
    p.add_argument("model")
    p.add_argument("--limit", type=int, default=20, help="entries to show (default 20)")
    p.set_defaults(handler=_run(_history))


# -- talking to the gateway ---------------------------------------------------------------


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        from driftgate.core._proto.driftgate.control.v1 import control_pb2, control_pb2_grpc
        from driftgate.core.rpc import channel

        self.pb = control_pb2
        self.channel = channel(args.gateway, client_tls(args))
        self.stub = control_pb2_grpc.ControlStub(self.channel)
        self.args = args

    def call(self, method: str, request: Any) -> Any:
        metadata = [("driftgate-actor", _user())]
        token = getattr(self.args, "token", None)
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        return getattr(self.stub, method)(request, timeout=self.args.timeout, metadata=metadata)

    def mutation(self, cls: Any, **fields: Any) -> Any:
        if self.args.expected_revision is not None:
            fields["expected_revision"] = self.args.expected_revision
        return cls(reason=self.args.reason, **fields)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


Command = Callable[[_Client, argparse.Namespace], Any]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        import grpc

        client = _Client(args)
        try:
            response = command(client, args)
        except grpc.RpcError as exc:
            return _failed(exc, args)
        except _Usage as exc:
            print(f"driftgate {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            client.channel.close()
        _print(response, args)
        return EXIT_OK

    return handler


class _Usage(Exception):
    pass


def _failed(exc: Any, args: argparse.Namespace) -> int:
    code = exc.code().name if exc.code() is not None else "UNKNOWN"
    if code in _UNREACHABLE:
        print(
            f"driftgate {args.command}: cannot reach the gateway at {args.gateway} ({code}); "
            "is `driftgate serve` running there? Set --gateway or DRIFTGATE_GATEWAY.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    print(f"driftgate {args.command}: {exc.details()}", file=sys.stderr)
    if code in _REFUSED:
        return EXIT_REFUSED
    if code in _USAGE:
        return EXIT_USAGE
    return EXIT_REFUSED


# -- the commands ---------------------------------------------------------------------------


def _deploy(client: _Client, args: argparse.Namespace) -> Any:
    pb = client.pb
    if args.canary is None:
        request = client.mutation(
            pb.DeployRequest, model=args.model, version=args.version, role=pb.ROLE_STABLE
        )
    else:
        request = client.mutation(
            pb.DeployRequest,
            model=args.model,
            version=args.version,
            role=pb.ROLE_CANARY,
            canary_weight=args.canary,
        )
    return client.call("Deploy", request)


def _traffic(client: _Client, args: argparse.Namespace) -> Any:
    request = client.mutation(
        client.pb.SetTrafficRequest, model=args.model, canary_weight=args.canary
    )
    return client.call("SetTraffic", request)


def _shadow(client: _Client, args: argparse.Namespace) -> Any:
    pb = client.pb
    if args.off == (args.version is not None):
        raise _Usage("give either a VERSION to shadow or --off")
    if args.off:
        return client.call("StopShadow", client.mutation(pb.StopShadowRequest, model=args.model))
    request = client.mutation(pb.StartShadowRequest, model=args.model, version=args.version)
    return client.call("StartShadow", request)


def _promote(client: _Client, args: argparse.Namespace) -> Any:
    return client.call("Promote", client.mutation(client.pb.PromoteRequest, model=args.model))


def _rollback(client: _Client, args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {"model": args.model}
    if args.to is not None:
        fields["version"] = args.to
    return client.call("Rollback", client.mutation(client.pb.RollbackRequest, **fields))


def _status(client: _Client, args: argparse.Namespace) -> Any:
    return client.call("GetStatus", client.pb.GetStatusRequest(model=args.model))


def _history(client: _Client, args: argparse.Namespace) -> Any:
    request = client.pb.GetHistoryRequest(model=args.model, limit=max(args.limit, 0))
    return client.call("GetHistory", request)


# -- output -------------------------------------------------------------------------------


def _print(response: Any, args: argparse.Namespace) -> None:
    if args.json:
        from google.protobuf.json_format import MessageToDict

        data = MessageToDict(
            response,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        print(json.dumps(data, indent=2))
        return
    if args.command == "status":
        print(_status_table(response))
    elif args.command == "history":
        print(_history_table(response))
    else:
        print(
            _table(
                ["MODEL", "REVISION", "STABLE", "CANARY", "SHADOW", "PREVIOUS"],
                [_state_row(response.state)],
            )
        )


def _state_row(state: Any) -> list[str]:
    return [
        state.model,
        str(state.revision),
        str(state.stable or "-"),
        _canary(state),
        str(state.shadow or "-"),
        ",".join(map(str, state.previous)) or "-",
    ]


def _canary(state: Any) -> str:
    if not state.HasField("canary"):
        return "-"
    return f"{state.canary.version} ({state.canary.weight:g}%)"


def _status_table(response: Any) -> str:
    header = ["MODEL", "REV", "VERSION", "ROLE", "WEIGHT", "REQUESTS", "ERRORS", "P50 MS"]
    header += ["P99 MS", "SHADOW AGREEMENT"]
    rows = []
    for model in response.models:
        for version in model.versions:
            role = _ROLE_NAMES.get(version.role, "-")
            agreement = "-"
            if role == "shadow":
                agreement = f"{version.shadow_agreement:.1%} of {version.shadow_compared}"
            rows.append(
                [
                    model.state.model,
                    str(model.state.revision),
                    str(version.version),
                    role,
                    f"{version.weight:g}%" if role in ("stable", "canary") else "-",
                    str(version.requests),
                    str(version.errors),
                    f"{version.latency_p50_ms:.2f}",
                    f"{version.latency_p99_ms:.2f}",
                    agreement,
                ]
            )
    return _table(header, rows) if rows else "no models loaded"


def _history_table(response: Any) -> str:
    rows = []
    for entry in response.entries:
        when = dt.datetime.fromtimestamp(entry.time.ToNanoseconds() / 1e9, tz=dt.UTC)
        rows.append(
            [
                str(entry.revision),
                when.strftime("%Y-%m-%d %H:%M:%S"),
                entry.action,
                _describe_change(entry.before, entry.after),
                entry.actor,
                entry.reason or "-",
            ]
        )
    header = ["REV", "TIME (UTC)", "ACTION", "CHANGE", "ACTOR", "REASON"]
    return _table(header, rows) if rows else "no changes recorded"


def _describe_change(before: Any, after: Any) -> str:
    parts = []
    for name, old, new in (
        ("stable", str(before.stable or "-"), str(after.stable or "-")),
        ("canary", _canary(before), _canary(after)),
        ("shadow", str(before.shadow or "-"), str(after.shadow or "-")),
    ):
        if old != new:
            parts.append(f"{name} {old} -> {new}")
    return "; ".join(parts) or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)

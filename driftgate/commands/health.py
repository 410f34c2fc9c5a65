"""``driftgate health``: ask a gateway's or a monitor's gRPC health service, for probes.

Exit 0 when the service answers SERVING, 1 when it answers otherwise (NOT_SERVING, an
unknown service), 3 when it cannot be reached: every non-zero status fails Docker's
HEALTHCHECK and Kubernetes exec probes alike.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from driftgate.commands.output import print_json
from driftgate.core.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_command,
    env,
    exit_codes,
    fail,
)

__all__ = ["register"]

_EPILOG = (
    exit_codes(refused="the server answers, but not SERVING", unreachable="the server")
    + """

--json prints {"address", "service", "status"} (status: SERVING, NOT_SERVING,
SERVICE_UNKNOWN, UNKNOWN)."""
)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "health",
        "check a gateway or monitor through grpc.health.v1.Health (exit 0 when serving)",
        description="Call grpc.health.v1.Health/Check on a gateway (--gateway, the default) "
        "or a monitor (--monitor) and exit 0 when it answers SERVING: a container health "
        "check.",
        epilog=_EPILOG,
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        help="a gateway's address (DRIFTGATE_GATEWAY; default localhost:8001)",
    )
    target.add_argument("--monitor", metavar="HOST:PORT", help="a monitor's address")
    target.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=os.environ.get("DRIFTGATE_HEALTH_ADDRESS"),
        help="either's address (DRIFTGATE_HEALTH_ADDRESS; kept for existing probes)",
    )
    parser.add_argument(
        "--service", default="", help="service name; empty (the default) for the whole server"
    )
    parser.add_argument(
        "--timeout", type=float, default=env("TIMEOUT", 3.0), help="seconds (DRIFTGATE_TIMEOUT)"
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    from driftgate.core.security import add_client_tls_flags

    add_client_tls_flags(parser.add_argument, "", "the server")
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from driftgate.core.rpc import channel as open_channel
    from driftgate.core.security import client_tls

    fallback = os.environ.get("DRIFTGATE_GATEWAY") or "localhost:8001"
    address = args.gateway or args.monitor or args.address or fallback
    try:
        tls = client_tls(args)
    except SystemExit as exc:
        return fail(args, str(exc.code), EXIT_USAGE)
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code()
            message = f"{address}: {code.name}: {exc.details()}"
            unreachable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return fail(args, message, EXIT_UNREACHABLE if unreachable else EXIT_REFUSED)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if args.json:
        print_json({"address": address, "service": args.service, "status": status})
    else:
        print(f"{address} {args.service or '(server)'}: {status}")
    return EXIT_OK if answer.status == health_pb2.HealthCheckResponse.SERVING else EXIT_REFUSED

"""``driftgate health``: ask a gateway's or a monitor's gRPC health service, for probes.

Exit 0 when the service answers SERVING, 1 otherwise (not serving, unknown service,
unreachable), as Docker's HEALTHCHECK and exec probes expect.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from driftgate.core.security import add_client_tls_flags, client_tls

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check a gateway or monitor through grpc.health.v1.Health (exit 0 when serving)",
        description="Call grpc.health.v1.Health/Check on a gateway or a monitor and exit 0 "
        "when it answers SERVING, 1 otherwise: a container health check.",
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("DRIFTGATE_HEALTH_ADDRESS", "localhost:8001"),
        help="gRPC address (DRIFTGATE_HEALTH_ADDRESS; default localhost:8001, the gateway; "
        "the monitor listens on 8003)",
    )
    parser.add_argument(
        "--service", default="", help="service name; empty (the default) for the whole server"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    add_client_tls_flags(parser.add_argument, "", "the server")
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from driftgate.core.rpc import channel as open_channel

    with open_channel(args.address, client_tls(args)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"driftgate health: {args.address}: {exc.code().name}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1

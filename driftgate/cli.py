"""The ``driftgate`` command: one entry point, a subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function, and
the heavy imports (scikit-learn, onnxruntime) happen only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from prometheus_client import disable_created_metrics

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftgate",
        description="Serve scikit-learn models as ONNX over gRPC (KServe v2 / Triton "
        "protocol), route canaries, and watch them for drift.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("DRIFTGATE_LOG_LEVEL", "INFO"),
        help="logging level (env DRIFTGATE_LOG_LEVEL; default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from driftgate.converter import _cli as converter_cli
    from driftgate.gateway import _cli as gateway_cli
    from driftgate.gateway import _control_cli as control_cli
    from driftgate.gateway import _health_cli as health_cli
    from driftgate.monitor import _cli as monitor_cli
    from driftgate.monitor import demo, up

    for module in (demo, up, converter_cli, gateway_cli, monitor_cli, control_cli, health_cli):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # One sample per counter is what dashboards read; the *_created series only add weight.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

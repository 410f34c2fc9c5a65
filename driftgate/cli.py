"""The ``driftgate`` command: one entry point, a subcommand per job.

Each package contributes its subcommands through a ``register(subparsers)`` function (with
``driftgate.core.cli.add_command``), and the heavy imports (scikit-learn, onnxruntime) happen
only when a subcommand runs. Every command shares one contract: ``--log-level`` before or
after the subcommand, defaults shown in ``--help``, a bad DRIFTGATE_ variable reported as a
usage error, and the exit codes 0 ok, 1 refused, 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from prometheus_client import disable_created_metrics

from driftgate import __version__
from driftgate.core.cli import (
    EXIT_USAGE,
    HelpFormatter,
    UsageError,
    add_global_flags,
    check_environment,
    configure_logging,
    log_level,
)

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftgate",
        description="Serve scikit-learn models as ONNX over gRPC (KServe v2 / Triton "
        "protocol), route canaries, and watch them for drift.",
        epilog="`driftgate COMMAND --help` describes a command. Exit codes of every command: "
        "0 ok, 1 refused, 2 usage, 3 unreachable.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftgate {__version__}")
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=os.environ.get("DRIFTGATE_LOG_LEVEL", "INFO"),
        help="logging level on stderr, here or after the command (DRIFTGATE_LOG_LEVEL; "
        "default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from driftgate.commands import control, health, queries, report
    from driftgate.converter import _cli as converter_cli
    from driftgate.gateway import _cli as gateway_cli
    from driftgate.monitor import _cli as monitor_cli
    from driftgate.monitor import demo, up

    commands = (demo, up, converter_cli, gateway_cli, monitor_cli, queries, report, control, health)
    for module in commands:
        module.register(subparsers)
    for command in subparsers.choices.values():
        # Commands registered without ``add_command`` get the shared contract too.
        command.formatter_class = HelpFormatter
        add_global_flags(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``driftgate`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, a usage error (on stderr)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        check_environment(args)
        # One sample per counter is what dashboards read; the *_created series only add weight.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        configure_logging(args.log_level)
        handler: Handler = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"driftgate {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

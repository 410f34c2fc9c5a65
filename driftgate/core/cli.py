"""What every ``driftgate`` subcommand shares: registration, flags, environment, exit codes.

A subcommand registers with ``add_command(subparsers, name, ...)``, which gives it the help
formatter (defaults shown), ``--log-level`` and, with ``parents=[client_flags("monitor")]``
(or ``"gateway"``), the contract of every client command: ``--monitor``/``--gateway``,
``--timeout``, ``--json``, the TLS flags and, for calls that need one, ``--token`` and
``--token-file``. Its handler returns one of the exit codes below; ``fail`` prints to stderr.

    def register(subparsers):
        parser = add_command(subparsers, "report", "write a drift report",
                             parents=[client_flags("monitor")])
        parser.add_argument("model", metavar="MODEL", help="model name")
        parser.set_defaults(handler=run)
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "BadEnvironment",
    "HelpFormatter",
    "UsageError",
    "add_command",
    "add_control_token_flags",
    "add_global_flags",
    "add_token_flags",
    "check_environment",
    "client_flags",
    "client_token",
    "configure_logging",
    "control_token",
    "env",
    "exit_codes",
    "fail",
    "log_level",
    "serve_or_explain",
    "server_hint",
    "token",
]

#: the exit codes of every command
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

_ADDRESSES = {"gateway": "localhost:8001", "monitor": "localhost:8003"}
_SERVERS = {"gateway": "driftgate serve", "monitor": "driftgate monitor"}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A bad argument or environment variable: printed on stderr, exit code 2."""


class BadEnvironment:
    """The default of a flag whose DRIFTGATE_ variable does not parse.

    Reported (``check_environment``) only when the command that reads it runs and the flag
    is not given, so that one bad variable does not break ``--help`` or other commands."""

    def __init__(self, variable: str, raw: str, expected: str) -> None:
        self.variable, self.raw, self.expected = variable, raw, expected

    def __str__(self) -> str:
        return f"{self.variable}={self.raw!r} (invalid)"

    def message(self) -> str:
        return f"{self.variable}={self.raw!r}: expected {self.expected}"


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_EXPECTED = {bool: "true or false (1/0, yes/no, on/off)", int: "an integer", float: "a number"}


def env(name: str, default: Any) -> Any:
    """The value of DRIFTGATE_<name> converted to the type of ``default``; a value that does
    not convert becomes a ``BadEnvironment`` that ``check_environment`` reports."""
    variable = f"DRIFTGATE_{name}"
    raw = os.environ.get(variable)
    if raw is None:
        return default
    kind = type(default)
    if kind is bool:
        text = raw.strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        return BadEnvironment(variable, raw, _EXPECTED[bool])
    try:
        return kind(raw)
    except ValueError:
        return BadEnvironment(variable, raw, _EXPECTED.get(kind, kind.__name__))


def check_environment(args: argparse.Namespace) -> None:
    """Raise ``UsageError`` for a flag of this command left at a bad environment value."""
    for value in vars(args).values():
        if isinstance(value, BadEnvironment):
            raise UsageError(value.message())


def log_level(text: str) -> str:
    """``--log-level``'s type: a logging level name, in any case."""
    level = text.strip().upper()
    if level not in _LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(_LEVELS)} (or DRIFTGATE_LOG_LEVEL), got {text!r}"
        )
    return level


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every flag's default shown unless its help
    already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or action.dest.endswith("token")  # a secret from the environment stays unprinted
            or default in (None, False, "", argparse.SUPPRESS)
            or isinstance(default, BadEnvironment)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def exit_codes(refused: str, unreachable: str | None = None, usage: str = "") -> str:
    """The exit-code section of a command's help; the command says what each code means."""
    meanings = [
        "0  done",
        f"1  refused: {refused}",
        "2  usage: bad arguments or environment" + (f", {usage}" if usage else ""),
    ]
    if unreachable:
        meanings.append(f"3  {unreachable} is unreachable (or did not answer within --timeout)")
    wrapped = (
        textwrap.fill(m, 88, initial_indent="  ", subsequent_indent="     ", break_on_hyphens=False)
        for m in meanings
    )
    return "\n".join(["exit codes:", *wrapped])


def add_command(
    subparsers: Any,
    name: str,
    help: str,
    *,
    description: str | None = None,
    epilog: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` with the shared formatter and ``--log-level``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        parents=parents or [],
        formatter_class=HelpFormatter,
    )
    add_global_flags(parser)
    return parser


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` after the subcommand too (its default is the top-level value)."""
    if "--log-level" not in parser._option_string_actions:
        parser.add_argument(
            "--log-level",
            type=log_level,
            default=argparse.SUPPRESS,
            help="logging level on stderr: DEBUG, INFO, WARNING, ERROR, CRITICAL "
            "(DRIFTGATE_LOG_LEVEL; default INFO)",
        )


def client_flags(
    service: str, *, token: bool = False, timeout: float = 30.0
) -> argparse.ArgumentParser:
    """The parent parser of a command that calls ``service`` ("gateway" or "monitor")."""
    # Imported here: driftgate.core.security builds its server flags with this module.
    from driftgate.core.security import add_client_tls_flags

    parent = argparse.ArgumentParser(add_help=False)
    variable = f"DRIFTGATE_{service.upper()}"
    parent.add_argument(
        f"--{service}",
        metavar="HOST:PORT",
        default=os.environ.get(variable) or _ADDRESSES[service],
        help=f"the {service}'s gRPC address ({variable}; default {_ADDRESSES[service]})",
    )
    parent.add_argument(
        "--timeout",
        type=float,
        default=env("TIMEOUT", timeout),
        help=f"seconds to wait for the {service}'s answer (DRIFTGATE_TIMEOUT)",
    )
    parent.add_argument(
        "--json", action="store_true", help="print the answer as JSON on stdout, for scripts"
    )
    add_client_tls_flags(parent.add_argument, "", f"the {service}")
    if token:
        parent.add_argument(
            "--token",
            "--control-token",
            dest="token",
            default=os.environ.get("DRIFTGATE_CONTROL_TOKEN"),
            help="the control token (DRIFTGATE_CONTROL_TOKEN); prefer --token-file: "
            "flags show in ps",
        )
        parent.add_argument(
            "--token-file",
            "--control-token-file",
            dest="token_file",
            type=Path,
            default=os.environ.get("DRIFTGATE_CONTROL_TOKEN_FILE"),
            help="read the control token from this file (DRIFTGATE_CONTROL_TOKEN_FILE)",
        )
    return parent


def client_token(args: argparse.Namespace) -> str | None:
    """The token of ``--token-file`` (read now, not empty) or ``--token``; None without."""
    path = getattr(args, "token_file", None)
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {path}: {exc.strerror}") from exc
        if not value:
            raise UsageError(f"--token-file {path} is empty")
        return value
    return getattr(args, "token", None) or None


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    """Print ``driftgate <command>: message`` on stderr; returns ``code``."""
    print(f"driftgate {args.command}: {message}", file=sys.stderr)
    return code


def server_hint(service: str) -> str:
    """What to check when ``service`` cannot be reached."""
    flag = f"--{service}"
    return f"is `{_SERVERS[service]}` running there? Set {flag} or DRIFTGATE_{service.upper()}"


def serve_or_explain(process: str, serve: Callable[[], None]) -> int:
    """Run a server until it stops; a port that cannot be bound is explained, exit 1."""
    try:
        serve()
    except (RuntimeError, OSError) as exc:
        bound = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
        if not (bound or str(exc).startswith("Failed to bind")):
            raise
        reason = str(exc).split(";")[0]
        print(
            f"driftgate {process}: cannot listen ({reason}): the port is in use by another "
            "process, or not allowed; choose other ports (0 picks a free one)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return EXIT_OK


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def add_token_flags(add: Any, name: str, what: str, purpose: str, reread: bool = False) -> None:
    """``--<name>-token`` and ``--<name>-token-file`` (DRIFTGATE_<NAME>_TOKEN[_FILE]).

    ``what`` names the token in the help, ``purpose`` says what it guards or is sent with;
    ``reread`` says the file is read again when it changes (servers), not once (commands).
    """
    variable = f"DRIFTGATE_{name.upper()}_TOKEN"
    add(
        f"--{name}-token",
        default=os.environ.get(variable),
        help=f"the {what}, {purpose} ({variable}). Prefer --{name}-token-file: flags show in ps",
    )
    again = ", again when it changes" if reread else ""
    add(
        f"--{name}-token-file",
        type=Path,
        default=os.environ.get(f"{variable}_FILE"),
        help=f"read the {what} from this file{again} ({variable}_FILE)",
    )


def add_control_token_flags(add: Any, purpose: str) -> None:
    """``--control-token`` and ``--control-token-file``, for every command that needs one."""
    add_token_flags(add, "control", "control token", purpose)


def token(args: argparse.Namespace, name: str) -> str | None:
    """The token from ``--<name>-token-file`` (which must not be empty) or ``--<name>-token``."""
    path = getattr(args, f"{name}_token_file")
    if path is not None:
        value = Path(path).read_text(encoding="utf-8").strip()
        if not value:
            raise SystemExit(f"driftgate {args.command}: the token file {path} is empty")
        return value
    return getattr(args, f"{name}_token") or None


def control_token(args: argparse.Namespace) -> str | None:
    """The token from ``--control-token-file`` (which must not be empty) or ``--control-token``."""
    return token(args, "control")

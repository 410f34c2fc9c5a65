"""Helpers every ``driftgate`` subcommand shares: environment defaults and credentials."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_control_token_flags", "add_token_flags", "control_token", "env", "token"]


def env(name: str, default: Any) -> Any:
    """The value of DRIFTGATE_<name> converted to the type of ``default``."""
    raw = os.environ.get(f"DRIFTGATE_{name}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return type(default)(raw)


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

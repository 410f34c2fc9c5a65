"""Helpers every ``driftgate`` subcommand shares: environment defaults and credentials."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_control_token_flags", "control_token", "env"]


def env(name: str, default: Any) -> Any:
    """The value of DRIFTGATE_<name> converted to the type of ``default``."""
    raw = os.environ.get(f"DRIFTGATE_{name}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return type(default)(raw)


def add_control_token_flags(add: Any, purpose: str) -> None:
    """``--control-token`` and ``--control-token-file``, for every command that needs one."""
    add(
        "--control-token",
        default=os.environ.get("DRIFTGATE_CONTROL_TOKEN"),
        help=f"the Control service's bearer token, {purpose} (DRIFTGATE_CONTROL_TOKEN). "
        "Prefer --control-token-file: flags show in ps",
    )
    add(
        "--control-token-file",
        type=Path,
        default=os.environ.get("DRIFTGATE_CONTROL_TOKEN_FILE"),
        help="read the control token from this file (DRIFTGATE_CONTROL_TOKEN_FILE)",
    )


def control_token(args: argparse.Namespace) -> str | None:
    """The token from ``--control-token-file`` (which must not be empty) or ``--control-token``."""
    if args.control_token_file is not None:
        token = Path(args.control_token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise SystemExit(
                f"driftgate {args.command}: the token file {args.control_token_file} is empty"
            )
        return token
    return args.control_token or None

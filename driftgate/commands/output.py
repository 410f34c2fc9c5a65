"""What every client command prints: JSON with numbers as numbers, tables, and failures on
stderr with the exit code of their kind."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict

from driftgate.client.errors import (
    ClientError,
    InvalidArgument,
    NotFound,
    Unreachable,
    Unsupported,
)
from driftgate.core.cli import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    fail,
    server_hint,
)

__all__ = ["exit_code", "guarded", "print_json", "table", "to_json"]

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def to_json(message: Any) -> dict[str, Any]:
    """A protobuf message as JSON data: proto field names, every field kept (zeros too),
    64-bit integers as numbers (proto3 JSON prints them as strings), durations in seconds,
    timestamps as RFC 3339 strings, enums by name; unset optional fields are left out."""
    data = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message.DESCRIPTOR, data)


def _converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    kind = field.message_type
    if kind is None:
        return int if field.type in _INT64 else None
    if kind.full_name == "google.protobuf.Duration":
        return lambda text: float(text.rstrip("s"))
    if kind.GetOptions().map_entry or kind.full_name.startswith("google.protobuf."):
        return None
    return lambda value: _numbers(kind, value)


def _numbers(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        convert = _converter(field)
        if convert is None or field.name not in data:
            continue
        value = data[field.name]
        data[field.name] = (
            [convert(v) for v in value] if isinstance(value, list) else convert(value)
        )
    return data


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def exit_code(error: ClientError) -> int:
    """3 unreachable; 2 for what the caller got wrong (unknown model or version, a bad
    argument); 1 for a refusal (token, state, revision) or a server failure."""
    if isinstance(error, Unreachable):
        return EXIT_UNREACHABLE
    if isinstance(error, NotFound | InvalidArgument | Unsupported):
        return EXIT_USAGE
    return EXIT_REFUSED


def guarded(service: str, run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A handler that turns the client's errors into a message on stderr and an exit code."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except Unreachable as exc:
            address = getattr(args, service, exc.address)
            message = f"cannot reach the {service} at {address} ({exc.code.name}: {exc.details})"
            return fail(args, f"{message}; {server_hint(service)}", EXIT_UNREACHABLE)
        except ClientError as exc:
            return fail(args, exc.details or exc.code.name, exit_code(exc))
        except UsageError as exc:
            return fail(args, str(exc), EXIT_USAGE)

    return handler


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def connection(args: argparse.Namespace, service: str) -> dict[str, Any]:
    """The client's keyword arguments from the command's flags: address, TLS, token, timeout."""
    from driftgate.core.cli import client_token
    from driftgate.core.security import client_tls

    try:
        tls = client_tls(args)
    except SystemExit as exc:  # a certificate without its key, or the reverse
        raise UsageError(str(exc.code)) from None
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be above 0 seconds, got {args.timeout:g}")
    return {
        "address": getattr(args, service),
        "tls": tls,
        "token": client_token(args),
        "timeout": args.timeout,
    }

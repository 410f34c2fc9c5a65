"""The driftgate error hierarchy: every error carries the gRPC status it maps to.

``driftgate.core.rpc.Guarded`` turns these into statuses on every server, so no RPC can
forget; anything else becomes INTERNAL with a generic message and a logged traceback.
"""

from __future__ import annotations

import enum

__all__ = [
    "Internal",
    "Status",
    "AlreadyExists",
    "DriftgateError",
    "FailedPrecondition",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "quote",
]

#: characters of a client's string that an error message repeats
QUOTE_LIMIT = 64


def quote(text: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """``text`` for an error message: its repr, or the repr of a prefix and its size in bytes.

    A client's string of any length (a model name, an input name, a request id) becomes at
    most about ``limit`` characters, so an answer never grows with what a client sent:
    ``quote("x" * 100_000)`` is ``'xxx…x'… (100000 bytes)``.
    """
    if len(text) <= limit:
        return repr(text)
    if isinstance(text, bytes):
        size = len(text)
    else:
        # isascii() is a flag check in CPython; only other strings are encoded to be measured.
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return f"{text[:limit]!r}… ({size} bytes)"


class Status(enum.Enum):
    """gRPC status codes by their gRPC names; ``driftgate.core.rpc`` maps them to grpc's.

    Kept apart from grpc so that offline code (the converter) raises the same errors without
    importing a transport.
    """

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class DriftgateError(Exception):
    """Base class; ``code`` is the gRPC status the error is answered with."""

    code: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DriftgateError):
    """A request or argument is malformed; the message names the field and what was expected."""

    code = Status.INVALID_ARGUMENT


class ModelNotFound(DriftgateError):
    """An unknown model, or a version that is not in the repository or not loaded."""

    code = Status.NOT_FOUND


class ModelNotReady(DriftgateError):
    """The model exists but has no version ready to serve."""

    code = Status.UNAVAILABLE


class Unavailable(DriftgateError):
    """A peer (the gateway, the monitor) cannot be reached."""

    code = Status.UNAVAILABLE


class ResourceExhausted(DriftgateError):
    """A queue is full or a message is over the size limit."""

    code = Status.RESOURCE_EXHAUSTED


class FailedPrecondition(DriftgateError):
    """The state does not allow the operation (for example a stale expected revision)."""

    code = Status.FAILED_PRECONDITION


class AlreadyExists(DriftgateError):
    """The thing to create exists already."""

    code = Status.ALREADY_EXISTS


class Unauthenticated(DriftgateError):
    """A mutating control call without the configured bearer token."""

    code = Status.UNAUTHENTICATED


class Internal(DriftgateError):
    """The server failed for a reason that is not the caller's; the cause is logged."""

    code = Status.INTERNAL

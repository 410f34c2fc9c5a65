"""One exception tree for every client call, each error with the gRPC status attached.

::

    try:
        control.promote("churn")
    except Conflict as exc:          # FAILED_PRECONDITION: no canary, a stale revision
        print(exc.code.name, exc.details)
    except Unreachable:              # UNAVAILABLE or DEADLINE_EXCEEDED
        ...
    except ClientError:              # anything else the server answered
        ...
"""

from __future__ import annotations

import grpc

__all__ = [
    "ClientError",
    "Conflict",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "Refused",
    "ServerError",
    "Unauthenticated",
    "Unreachable",
    "Unsupported",
    "error_from_rpc",
]


class ClientError(Exception):
    """A call failed. ``code`` is its gRPC status, ``details`` the server's message,
    ``address`` the server it was sent to."""

    def __init__(self, code: grpc.StatusCode, details: str, address: str = "") -> None:
        super().__init__(f"{code.name}: {details}" + (f" ({address})" if address else ""))
        self.code = code
        self.details = details
        self.address = address


class Unreachable(ClientError):
    """The server could not be reached or did not answer in time (UNAVAILABLE,
    DEADLINE_EXCEEDED); also a model with no version ready yet."""


class Refused(ClientError):
    """The server understood the call and refused it."""


class Unauthenticated(Refused):
    """The call needs a token (or a client certificate) it did not carry
    (UNAUTHENTICATED, PERMISSION_DENIED)."""


class Conflict(Refused):
    """The state does not allow the call: a stale expected revision, promote without a
    canary (FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS)."""


class NotFound(ClientError):
    """An unknown model, or a version that is not in the repository (NOT_FOUND)."""


class InvalidArgument(ClientError):
    """The call's arguments are malformed; ``details`` names the field (INVALID_ARGUMENT,
    OUT_OF_RANGE). Also raised before sending, for inputs that cannot match the model."""


class Overloaded(ClientError):
    """A queue or a buffer of the server is full; retry later (RESOURCE_EXHAUSTED, or CANCELLED:
    gRPC drops a call unread when the gateway's accept queue is full, ``--max-queued-calls``,
    and this client never cancels a call it waits for)."""


class Unsupported(ClientError):
    """The server does not implement the call (UNIMPLEMENTED)."""


class ServerError(ClientError):
    """The server failed for a reason of its own (INTERNAL, UNKNOWN, DATA_LOSS...)."""


_CLASSES: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.UNAVAILABLE: Unreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unreachable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.CANCELLED: Overloaded,
    grpc.StatusCode.UNIMPLEMENTED: Unsupported,
}


def error_from_rpc(exc: grpc.RpcError, address: str) -> ClientError:
    """The ``ClientError`` subclass of a failed call's status."""
    code: grpc.StatusCode = exc.code() or grpc.StatusCode.UNKNOWN
    details: str = exc.details() or ""
    return _CLASSES.get(code, ServerError)(code, details, address)

"""The driftgate error hierarchy: every error carries the gRPC status it maps to.

One server interceptor (``gateway.server``) turns these into statuses, so no RPC can
forget; anything else becomes INTERNAL with a generic message and a logged traceback.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExists",
    "DriftgateError",
    "FailedPrecondition",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class DriftgateError(Exception):
    """Base class; ``code`` is the gRPC status the error is answered with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DriftgateError):
    """A request or argument is malformed; the message names the field and what was expected."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(DriftgateError):
    """An unknown model, or a version that is not in the repository or not loaded."""

    code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(DriftgateError):
    """The model exists but has no version ready to serve."""

    code = grpc.StatusCode.UNAVAILABLE


class Unavailable(DriftgateError):
    """A peer (the gateway, the monitor) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DriftgateError):
    """A queue is full or a message is over the size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(DriftgateError):
    """The state does not allow the operation (for example a stale expected revision)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(DriftgateError):
    """The thing to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(DriftgateError):
    """A mutating control call without the configured bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED

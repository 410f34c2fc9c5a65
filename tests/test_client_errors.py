"""Which error a failed call raises in the client library, by its gRPC status."""

from __future__ import annotations

import grpc
import pytest

from driftgate.client.errors import (
    ClientError,
    Overloaded,
    ServerError,
    Unreachable,
    error_from_rpc,
)


def _failed(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # the gateway's own refusal, and gRPC's drop of a call from a full accept queue
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Overloaded),
        (grpc.StatusCode.CANCELLED, Overloaded),
        (grpc.StatusCode.UNAVAILABLE, Unreachable),
        (grpc.StatusCode.INTERNAL, ServerError),
    ],
)
def test_a_status_raises_its_class_with_the_details(
    code: grpc.StatusCode, expected: type[ClientError]
) -> None:
    error = error_from_rpc(_failed(code, "queue full"), "127.0.0.1:8001")
    assert type(error) is expected
    assert (error.code, error.details, error.address) == (code, "queue full", "127.0.0.1:8001")

"""The batching queue: requests are merged, and a bad request never fails its batch mates.

The gateway runs with ``--inline-below-us 0 --max-queue-delay-us 20000``: every request takes
the queue, and the first one waits 20 ms for others, so concurrent requests share a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import Zoo, message_of, run_gateway, send_all, status_of, tensor

pytestmark = pytest.mark.integration

TABLE = np.arange(20, dtype=np.float32).reshape(10, 2)


@pytest.fixture(scope="module")
def queued_gateway(
    zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(
        zoo.repo,
        tmp_path_factory.mktemp("queued"),
        "--inline-below-us",
        "0",
        "--max-queue-delay-us",
        "20000",
    )


def batch_sizes(address: str, model: str) -> dict[int, int]:
    with grpcclient.InferenceServerClient(address) as triton:
        stats = triton.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {
        int(b["batch_size"]): int(b["compute_infer"].get("count", 0))
        for b in stats.get("batch_stats", [])
    }


def test_concurrent_requests_share_one_call(queued_gateway: DriftgateProcess) -> None:
    indices = [np.array([[i]], dtype=np.int64) for i in range(8)]
    requests = [("gather", [tensor("idx", idx, "INT64")]) for idx in indices]
    results = asyncio.run(send_all(queued_gateway.address, requests))
    for idx, result in zip(indices, results, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.as_numpy("y"), TABLE[idx])
    assert max(batch_sizes(queued_gateway.address, "gather")) > 1


def test_a_request_that_fails_in_the_model_fails_alone(queued_gateway: DriftgateProcess) -> None:
    indices = [np.array([[i], [9 - i]], dtype=np.int64) for i in range(6)]
    bad = np.array([[3], [42]], dtype=np.int64)  # 42 is outside the 10-row table
    requests = [("gather", [tensor("idx", idx, "INT64")]) for idx in indices]
    requests.insert(3, ("gather", [tensor("idx", bad, "INT64")]))
    results = asyncio.run(send_all(queued_gateway.address, requests))
    error = results.pop(3)
    assert isinstance(error, InferenceServerException)
    assert status_of(error) == "INVALID_ARGUMENT"
    assert "could not run on this input" in message_of(error)
    for idx, result in zip(indices, results, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.as_numpy("y"), TABLE[idx])


def test_requests_that_cannot_be_merged_still_succeed(queued_gateway: DriftgateProcess) -> None:
    # row_sum has a free width: rows of width 3 and 5 are each valid, but cannot be stacked.
    arrays = [np.full((2, 3 + 2 * (i % 2)), i, dtype=np.float32) for i in range(6)]
    requests = [("row_sum", [tensor("x", a, "FP32")]) for a in arrays]
    requests.append(("row_sum", [tensor("x", np.ones((2, 3), np.float64), "FP64")]))
    results = asyncio.run(send_all(queued_gateway.address, requests))
    rejected = results.pop()
    assert isinstance(rejected, InferenceServerException)
    assert status_of(rejected) == "INVALID_ARGUMENT"
    assert "expected datatype FP32, got FP64" in message_of(rejected)
    for array, result in zip(arrays, results, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_allclose(result.as_numpy("y"), array.sum(axis=1))

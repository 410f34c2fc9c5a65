"""Throughput paths: a request larger than max_batch_size, a stream answered concurrently, and
the bounds (queue size, bytes in flight) that refuse work with RESOURCE_EXHAUSTED instead of
queueing it without end.

Two gateways serve a repository of their own:

- ``threaded``: ``--inline-below-us 0 --max-queue-delay-us 0 --infer-threads 2``: every call
  runs on a worker thread, without waiting for batch mates, so requests merge only when they
  arrive while both threads are busy;
- ``bounded``: ``--max-queue-size 4 --infer-threads 1 --max-in-flight-bytes 20000`` (and
  ``--inline-below-us 0``): a model queues at most four requests, and the gateway holds at
  most 20 000 bytes of requests. A request of the flood on ``slow_fixed`` is ~1.1 kB and at
  most five are in progress (four queued, one running), so the flood meets only the queue
  bound; a 16 kB request meets the byte bound as soon as another one is in progress.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import (
    SLOW_WIDTH,
    Zoo,
    message_of,
    run_gateway,
    sample,
    scrape,
    send_all,
    slow_identity_model,
    status_of,
    tensor,
    write_version,
)

pytestmark = pytest.mark.integration

# ~1 ms per one-row call here: slow next to the ~0.1 ms it takes to receive a request.
SLOW_LAYERS = 100
# ~3 ms per call: a flood arrives several times faster than one thread answers it.
FLOOD_LAYERS = 300


@pytest.fixture(scope="module")
def repository(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("throughput-repository")
    write_version(repo, "lr", 1, zoo.logistic.onnx)
    write_version(repo, "slow", 1, slow_identity_model(SLOW_LAYERS))
    write_version(repo, "slow_fixed", 1, slow_identity_model(FLOOD_LAYERS, rows=1))
    return repo


@pytest.fixture(scope="module")
def threaded(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(
        repository,
        tmp_path_factory.mktemp("threaded"),
        "--inline-below-us",
        "0",
        "--max-queue-delay-us",
        "0",
        "--infer-threads",
        "2",
    )


@pytest.fixture(scope="module")
def bounded(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(
        repository,
        tmp_path_factory.mktemp("bounded"),
        "--inline-below-us",
        "0",
        "--infer-threads",
        "1",
        "--max-queue-size",
        "4",
        "--max-in-flight-bytes",
        "20000",
        # The floods here meet the model's queue, not the calls pending before it, nor gRPC's
        # queue bound (a flood of 300 at once passes the default's soft bound, 256).
        "--max-pending-infers",
        "1000",
        "--max-queued-calls",
        "100000",
    )


def statistics(address: str, model: str) -> dict:
    with grpcclient.InferenceServerClient(address) as triton:
        return triton.get_inference_statistics(model, as_json=True)["model_stats"][0]


def count(entry: dict, *path: str) -> int:
    """A counter of a ModelStatistics entry; JSON leaves out the zeros."""
    for key in path:
        entry = entry.get(key, {})
    return int(entry or 0)


def executions_by_size(stats: dict) -> dict[int, int]:
    return {
        int(b["batch_size"]): count(b, "compute_infer", "count")
        for b in stats.get("batch_stats", [])
    }


def slow_rows(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, SLOW_WIDTH)).astype(np.float32)


# -- a request larger than max_batch_size --------------------------------------------------


def test_a_4096_row_request_runs_in_16_calls_and_answers_once(
    zoo: Zoo, threaded: DriftgateProcess
) -> None:
    X = np.random.default_rng(11).normal(size=(4096, 4)).astype(np.float32)
    with grpcclient.InferenceServerClient(threaded.address) as triton:
        config = triton.get_model_config("lr", as_json=True)["config"]
        assert config["max_batch_size"] == 256
        before = statistics(threaded.address, "lr")
        result = triton.infer("lr", [tensor("X", X, "FP32")], request_id="big")
        after = statistics(threaded.address, "lr")
        singles = {
            i: triton.infer("lr", [tensor("X", X[i : i + 1], "FP32")])
            for i in (0, 255, 256, 2047, 2048, 4095)  # the edges of chunks
        }
        assert triton.get_model_config("lr", as_json=True)["config"]["max_batch_size"] == 256

    assert result.get_response().id == "big"
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    assert labels.shape == (4096,)
    assert probabilities.shape == (4096, 2)
    # the chunks come back in order: every row matches the estimator and its own one-row answer
    np.testing.assert_array_equal(labels, zoo.logistic.estimator.predict(X))
    np.testing.assert_allclose(probabilities, zoo.logistic.estimator.predict_proba(X), atol=1e-5)
    for i, single in singles.items():
        assert single.as_numpy("label")[0] == labels[i], i
        np.testing.assert_allclose(single.as_numpy("probabilities")[0], probabilities[i], atol=1e-6)

    assert count(after, "execution_count") - count(before, "execution_count") == 16
    assert count(after, "inference_count") - count(before, "inference_count") == 4096
    success = ("inference_stats", "success", "count")
    assert count(after, *success) - count(before, *success) == 1
    grown = {
        size: n - executions_by_size(before).get(size, 0)
        for size, n in executions_by_size(after).items()
    }
    assert {size: n for size, n in grown.items() if n} == {256: 16}


# -- a stream answered concurrently ---------------------------------------------------------


def test_a_stream_of_100_requests_is_answered_concurrently(threaded: DriftgateProcess) -> None:
    sent = {f"req-{i}": slow_rows(1 + i % 3, seed=i) for i in range(100)}
    answers: queue.Queue = queue.Queue()
    before = statistics(threaded.address, "slow")
    with grpcclient.InferenceServerClient(threaded.address) as triton:
        triton.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for request_id, x in sent.items():
                triton.async_stream_infer("slow", [tensor("x", x, "FP32")], request_id=request_id)
            received = [answers.get(timeout=30) for _ in sent]
        finally:
            triton.stop_stream()
    after = statistics(threaded.address, "slow")

    errors = [error for _, error in received if error is not None]
    assert errors == []
    order = [result.get_response().id for result, _ in received]
    assert sorted(order) == sorted(sent)  # each id exactly once
    for result, _ in received:
        response = result.get_response()
        np.testing.assert_array_equal(result.as_numpy("y"), sent[response.id], err_msg=response.id)

    requests = count(after, "inference_stats", "success", "count") - count(
        before, "inference_stats", "success", "count"
    )
    rows = count(after, "inference_count") - count(before, "inference_count")
    executions = count(after, "execution_count") - count(before, "execution_count")
    assert (requests, rows) == (100, sum(len(x) for x in sent.values()))
    # Requests merge into one call only when several are in progress at once: the stream
    # did not wait for one answer before it took the next request.
    assert executions < 100, f"{executions} calls for 100 requests: none merged"
    assert max(executions_by_size(after)) > 3


# -- bounds --------------------------------------------------------------------------------


def test_a_flood_on_a_model_that_does_not_batch_is_refused_past_max_queue_size(
    bounded: DriftgateProcess,
) -> None:
    with grpcclient.InferenceServerClient(bounded.address) as triton:
        config = triton.get_model_config("slow_fixed").config
        assert config.max_batch_size == 0  # the model does not batch
        assert list(config.input[0].dims) == [1, SLOW_WIDTH]
    rows = [slow_rows(1, seed=i) for i in range(300)]
    results = asyncio.run(
        send_all(bounded.address, [("slow_fixed", [tensor("x", x, "FP32")]) for x in rows])
    )

    refused = [r for r in results if isinstance(r, Exception)]
    served = [(x, r) for x, r in zip(rows, results, strict=True) if not isinstance(r, Exception)]
    assert refused, "300 concurrent requests, four queued at most, and none refused"
    assert served
    for error in refused:
        assert isinstance(error, InferenceServerException), repr(error)
        assert status_of(error) == "RESOURCE_EXHAUSTED", message_of(error)
        assert "max_queue_size 4" in message_of(error)
    for x, result in served:
        np.testing.assert_array_equal(result.as_numpy("y"), x)

    with grpcclient.InferenceServerClient(bounded.address) as triton:
        assert triton.is_server_live()
        assert triton.is_model_ready("slow_fixed")
        x = slow_rows(1, seed=1000)
        np.testing.assert_array_equal(
            triton.infer("slow_fixed", [tensor("x", x, "FP32")]).as_numpy("y"), x
        )
    stats = statistics(bounded.address, "slow_fixed")
    assert count(stats, "inference_stats", "fail", "count") == len(refused)
    assert count(stats, "inference_stats", "success", "count") == len(served) + 1
    assert count(stats, "execution_count") == len(served) + 1  # it cannot merge
    samples = scrape(bounded.metrics_port)
    labels = {"model": "slow_fixed", "version": "1"}
    requests = "driftgate_inference_requests_total"
    assert sample(samples, requests, status="RESOURCE_EXHAUSTED", **labels) == len(refused)
    assert sample(samples, requests, status="OK", **labels) == len(served) + 1
    assert sample(samples, "driftgate_queue_depth", **labels) == 0


def test_a_request_of_more_chunks_than_max_queue_size_is_served_when_nothing_waits(
    zoo: Zoo, bounded: DriftgateProcess
) -> None:
    # 1200 rows: five chunks of at most 256 rows, one more than --max-queue-size 4
    X = np.random.default_rng(5).normal(size=(1200, 4)).astype(np.float32)
    before = statistics(bounded.address, "lr")
    with grpcclient.InferenceServerClient(bounded.address) as triton:
        labels = triton.infer("lr", [tensor("X", X, "FP32")]).as_numpy("label")
    after = statistics(bounded.address, "lr")
    np.testing.assert_array_equal(labels, zoo.logistic.estimator.predict(X))
    assert count(after, "execution_count") - count(before, "execution_count") == 5


def test_requests_past_max_in_flight_bytes_are_refused(bounded: DriftgateProcess) -> None:
    # 16 rows of 256 FP32: 16 kB each, so a second one in progress would pass 20 000 bytes
    rows = [slow_rows(16, seed=i) for i in range(12)]
    results = asyncio.run(
        send_all(bounded.address, [("slow", [tensor("x", x, "FP32")]) for x in rows])
    )

    refused = [r for r in results if isinstance(r, Exception)]
    served = [(x, r) for x, r in zip(rows, results, strict=True) if not isinstance(r, Exception)]
    assert refused, "12 concurrent requests of 16 kB under a 20 000-byte bound, none refused"
    assert served
    for error in refused:
        assert isinstance(error, InferenceServerException), repr(error)
        assert status_of(error) == "RESOURCE_EXHAUSTED", message_of(error)
        assert "--max-in-flight-bytes 20000" in message_of(error)
    for x, result in served:
        np.testing.assert_array_equal(result.as_numpy("y"), x)

    with grpcclient.InferenceServerClient(bounded.address) as triton:
        assert triton.is_server_live()
        x = slow_rows(16, seed=99)
        np.testing.assert_array_equal(
            triton.infer("slow", [tensor("x", x, "FP32")]).as_numpy("y"), x
        )

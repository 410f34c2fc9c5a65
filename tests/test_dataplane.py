"""The data plane without sockets: the version runtime's lifecycle, admission, chunking and
the record every figure is read from."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core.errors import Internal, InvalidInput, ResourceExhausted, Status, Unavailable
from driftgate.core.repository import Repository
from driftgate.gateway.dataplane.batching import Batcher, BatchingConfig
from driftgate.gateway.dataplane.record import VersionRecord
from driftgate.gateway.dataplane.session import run_error
from driftgate.gateway.dataplane.version import State, VersionRuntime, load_version
from driftgate.gateway.settings import GatewaySettings
from tests.triton.helpers import logistic_model, write_version

Feed = Mapping[str, np.ndarray]


class Model:
    """A real model function (rows -> one output per row) that remembers its calls."""

    def __init__(self, seconds: float = 0.0, barrier: threading.Barrier | None = None) -> None:
        self.calls: list[int] = []
        self.seconds = seconds
        self.barrier = barrier

    def __call__(self, feed: Feed) -> list[np.ndarray]:
        x = feed["x"]
        self.calls.append(len(x))
        if self.barrier is not None:
            self.barrier.wait(timeout=5)
        if self.seconds:
            time.sleep(self.seconds)
        return [x.sum(axis=1)]


def batcher(
    model: Model,
    record: VersionRecord,
    executor: ThreadPoolExecutor,
    *,
    inline: bool = False,
    batched: bool = True,
    concurrency: int = 1,
    **config: int,
) -> Batcher:
    return Batcher(
        model,
        lambda rows: 0.0 if inline else 1.0,
        BatchingConfig(**config),  # type: ignore[arg-type]
        executor,
        inline_below_seconds=0.5,
        record=record,
        batched_model=batched,
        concurrency=concurrency,
    )


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(4)
    yield pool  # type: ignore[misc]
    pool.shutdown(wait=True)


def rows(n: int, start: int = 0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + 2 * n, dtype=np.float32).reshape(n, 2)}


# -- the batcher ------------------------------------------------------------------------


def test_a_request_larger_than_max_batch_size_runs_in_chunks_and_answers_once(
    executor: ThreadPoolExecutor,
) -> None:
    model, record = Model(), VersionRecord()

    async def main() -> np.ndarray:
        b = batcher(model, record, executor, inline=True, max_batch_size=8)
        result = await b.infer(rows(20), 20)
        return result.outputs[0]

    out = asyncio.run(main())
    assert model.calls == [8, 8, 4]
    assert out.tolist() == rows(20)["x"].sum(axis=1).tolist()  # in order, all 20 rows
    assert record.execution_count == 3
    assert {size: b.compute_infer.count for size, b in record.batches.items()} == {8: 2, 4: 1}


def test_a_request_of_many_chunks_keeps_every_inference_thread_busy(
    executor: ThreadPoolExecutor,
) -> None:
    # Each call waits at a barrier of two: the request can only finish if two threads take
    # its chunks at once, and a request behind it is answered too.
    model, record = Model(barrier=threading.Barrier(2)), VersionRecord()

    async def main() -> tuple[np.ndarray, np.ndarray]:
        b = batcher(model, record, executor, concurrency=2, max_batch_size=4)
        first, second = await asyncio.wait_for(
            asyncio.gather(b.infer(rows(24), 24), b.infer(rows(8, 100), 8)), 20
        )
        return first.outputs[0], second.outputs[0]

    first, second = asyncio.run(main())
    assert first.tolist() == rows(24)["x"].sum(axis=1).tolist()  # chunks put back in order
    assert second.tolist() == rows(8, 100)["x"].sum(axis=1).tolist()
    assert model.calls == [4] * 8
    assert record.execution_count == 8


def test_a_failing_chunk_fails_its_request_alone_and_stops_its_other_chunks(
    executor: ThreadPoolExecutor,
) -> None:
    record = VersionRecord()
    calls: list[float] = []

    def model(feed: Feed) -> list[np.ndarray]:
        calls.append(float(feed["x"][0, 0]))
        if (feed["x"] < 0).any():
            raise InvalidInput("negative")
        return [feed["x"].sum(axis=1)]

    async def main() -> list[object]:
        b = Batcher(model, lambda r: 1.0, BatchingConfig(max_batch_size=2), executor, 0.5, record)
        bad = rows(10)
        bad["x"][4, 0] = -1.0  # the third chunk
        return await asyncio.gather(
            b.infer(bad, 10), b.infer(rows(1, 50), 1), return_exceptions=True
        )

    failed, answered = asyncio.run(main())
    assert isinstance(failed, InvalidInput)
    assert not isinstance(answered, BaseException)
    assert answered.outputs[0].tolist() == [101.0]  # type: ignore[union-attr]
    assert calls == [0.0, 4.0, -1.0, 50.0]  # chunks four and five never ran


def test_a_request_of_many_chunks_given_up_on_runs_no_more_of_them(
    executor: ThreadPoolExecutor,
) -> None:
    model, record = Model(seconds=0.05), VersionRecord()

    async def main() -> np.ndarray:
        b = batcher(model, record, executor, max_batch_size=2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.infer(rows(20), 20), 0.12)  # ten chunks of 50 ms
        after = await asyncio.wait_for(b.infer(rows(1, 7), 1), 5)
        await asyncio.wait_for(b.close(), 5)
        return after.outputs[0]

    assert asyncio.run(main()).tolist() == [15.0]
    assert model.calls[-1] == 1
    assert len(model.calls) <= 5  # at most the chunks started before the deadline, then ours
    assert record.execution_count == len(model.calls)


def test_a_queued_request_of_many_chunks_counts_as_its_chunks_against_max_queue_size(
    executor: ThreadPoolExecutor,
) -> None:
    model, record = Model(seconds=0.1), VersionRecord()

    async def main() -> list[object]:
        b = batcher(model, record, executor, max_batch_size=4, max_queue_size=3)
        running = asyncio.ensure_future(b.infer(rows(1), 1))
        await asyncio.sleep(0.02)  # the model is busy with it
        bulk = asyncio.ensure_future(b.infer(rows(12), 12))  # three chunks wait
        await asyncio.sleep(0)
        assert b.queue_depth == 3
        refused = b.infer(rows(1), 1)
        return await asyncio.gather(running, bulk, refused, return_exceptions=True)

    running, bulk, refused = asyncio.run(main())
    assert isinstance(refused, ResourceExhausted)
    assert "3 waiting, max_queue_size 3" in refused.message
    assert not isinstance(bulk, BaseException)
    assert model.calls == [1, 4, 4, 4]


def test_requests_waiting_while_the_model_is_busy_share_one_call(
    executor: ThreadPoolExecutor,
) -> None:
    model, record = Model(seconds=0.05), VersionRecord()

    async def main() -> list[list[float]]:
        b = batcher(model, record, executor, max_batch_size=64)
        results = await asyncio.gather(*(b.infer(rows(1, 2 * i), 1) for i in range(5)))
        return [r.outputs[0].tolist() for r in results]

    outputs = asyncio.run(main())
    assert outputs == [[4 * i + 1.0] for i in range(5)]  # each caller gets its own row
    assert model.calls == [1, 4]  # the first runs alone, the four that waited run together
    assert record.execution_count == 2
    assert sorted(record.batches) == [1, 4]


@pytest.mark.parametrize(
    ("batched", "enabled"), [(True, 1), (True, 0), (False, 1)], ids=["merged", "off", "unbatched"]
)
def test_a_full_queue_answers_resource_exhausted_on_every_path(
    executor: ThreadPoolExecutor, batched: bool, enabled: int
) -> None:
    model, record = Model(seconds=0.05), VersionRecord()

    async def main() -> list[object]:
        b = batcher(model, record, executor, batched=batched, enabled=enabled, max_queue_size=2)
        calls = [b.infer(rows(1), 1) for _ in range(6)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, ResourceExhausted)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert refused
    assert "max_queue_size 2" in refused[0].message
    assert len(answered) + len(refused) == 6
    assert len(answered) >= 2
    assert record.failures == {}  # the batcher refuses; the runtime records the request


def test_calls_on_threads_run_concurrently_up_to_the_concurrency(
    executor: ThreadPoolExecutor,
) -> None:
    # Both calls must be inside the model at once to pass the barrier.
    model, record = Model(barrier=threading.Barrier(2)), VersionRecord()

    async def main() -> None:
        b = batcher(model, record, executor, batched=False, concurrency=2)
        await asyncio.wait_for(asyncio.gather(b.infer(rows(1), 1), b.infer(rows(1), 1)), 10)

    asyncio.run(main())
    assert model.calls == [1, 1]


def test_one_bad_request_does_not_fail_the_requests_merged_with_it(
    executor: ThreadPoolExecutor,
) -> None:
    record = VersionRecord()

    def picky(feed: Feed) -> list[np.ndarray]:
        time.sleep(0.02)
        if (feed["x"] < 0).any():
            raise InvalidInput("negative")
        return [feed["x"].sum(axis=1)]

    async def main() -> list[object]:
        b = Batcher(picky, lambda r: 1.0, BatchingConfig(), executor, 0.5, record, concurrency=1)
        inputs = [rows(1), rows(1), {"x": -np.ones((1, 2), np.float32)}, rows(1)]
        return await asyncio.gather(*(b.infer(f, 1) for f in inputs), return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[2], InvalidInput)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)


# -- onnxruntime errors ----------------------------------------------------------------


def test_only_errors_onnxruntime_blames_on_the_input_are_invalid_argument() -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

    assert isinstance(run_error(InvalidArgument("bad shape")), InvalidInput)
    assert run_error(Fail("kernel broke")).code is Status.INTERNAL
    assert isinstance(run_error(Fail("kernel broke")), Internal)
    assert "kernel broke" not in run_error(Fail("kernel broke")).message
    oom = run_error(Fail("std::bad_alloc"))
    assert oom.code is Status.RESOURCE_EXHAUSTED
    assert run_error(MemoryError()).code is Status.RESOURCE_EXHAUSTED


# -- the version runtime ---------------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_version(root, "lr", 1, logistic_model(0).onnx, driftgate=True)
    return root


def runtime(repository: Path, executor: ThreadPoolExecutor) -> VersionRuntime:
    loaded = load_version(Repository(repository), "lr", 1, GatewaySettings(), executor)
    loaded.start_serving()
    return loaded


def request(n: int = 2) -> pb.ModelInferRequest:
    x = np.ones((n, 4), np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=[n, 4])
    return pb.ModelInferRequest(model_name="lr", inputs=[tensor], raw_input_contents=[x.tobytes()])


def test_a_request_is_recorded_once_with_equal_phase_counts(
    repository: Path, executor: ThreadPoolExecutor
) -> None:
    async def main() -> VersionRuntime:
        loaded = runtime(repository, executor)
        for n in (1, 3, 5):
            await loaded.infer(request(n), "r")
        with pytest.raises(InvalidInput):
            bad = request(1)
            bad.inputs[0].datatype = "FP64"
            await loaded.infer(bad, "r")
        return loaded

    r = asyncio.run(main()).record
    assert r.success.count == r.queue.count == r.compute_input.count == 3
    assert r.compute_infer.count == r.compute_output.count == 3
    assert r.inference_count == 9
    assert r.execution_count == 3
    assert r.fail.count == 1
    assert r.failures == {"INVALID_ARGUMENT": 1}
    assert r.success.ns >= r.compute_infer.ns > 0


def test_lifecycle_leases_drain_and_reclaim(repository: Path, executor: ThreadPoolExecutor) -> None:
    async def main() -> None:
        loaded = runtime(repository, executor)
        assert loaded.state is State.SERVING
        with loaded.lease():
            loaded.begin_drain()
            assert loaded.state is State.DRAINING
            # New work is refused while draining, with a retryable status.
            with pytest.raises(Unavailable) as refused:
                await loaded.infer(request(), "r")
            assert refused.value.code is Status.UNAVAILABLE
            assert "draining" in refused.value.message
            drain = asyncio.create_task(loaded.drain(5.0))
            await asyncio.sleep(0.05)
            assert not drain.done()  # waits for the lease it found
            # Loaded again while draining: the same instance serves again.
            assert loaded.reclaim()
        assert await drain is False  # the drain gave up; nothing was released
        assert loaded.state is State.SERVING
        assert (await loaded.infer(request(), "r")).outputs[0].shape == (2,)

        loaded.begin_drain()
        assert await loaded.drain(5.0) is True
        assert loaded.state is State.CLOSED
        assert not loaded.reclaim()  # too late: a new load makes a new generation
        with pytest.raises(Unavailable):
            await loaded.infer(request(), "r")
        second = runtime(repository, executor)
        assert second.generation > loaded.generation

    asyncio.run(main())

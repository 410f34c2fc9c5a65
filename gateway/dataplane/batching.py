"""Admission, chunking and adaptive batching for one loaded version, with Triton's knobs.

Every call passes one admission step, whatever path it then takes: at most
``max_queue_size`` requests (or chunks) wait at once, and one more is refused with
RESOURCE_EXHAUSTED. A call cheaper than a hop to a worker thread (about 100 µs here) runs
inline on the event loop when nothing waits and nothing runs: batching then costs nothing.
Otherwise the request joins the queue; a dispatcher takes whatever is waiting (up to
``max_batch_size`` rows when the model batches and batching is on, optionally waiting
``max_queue_delay_us`` for a preferred size) into one onnxruntime call, and keeps up to
``concurrency`` calls in flight on worker threads, so requests that arrive while the model is
busy share the next call. When the model merges requests, a second call starts beside a
running one only once a full ``max_batch_size`` of rows waits (a heavy model gains more
from one large batch than from two small ones); calls that are not merged run side by side.

A request with more rows than ``max_batch_size`` is split into chunks of at most that many
rows, queued like requests, and answered as one; an empty queue admits it even with more
chunks than ``max_queue_size``. If a merged call fails, each request in it is retried alone,
so one bad request never fails the good ones batched with it.

Each onnxruntime call is recorded once in the version's ``VersionRecord``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from driftgate.core.errors import ResourceExhausted
from driftgate.gateway.dataplane.record import VersionRecord

__all__ = ["BatchResult", "Batcher", "BatchingConfig"]

Feed = Mapping[str, np.ndarray]
Runner = Callable[[Feed], list[np.ndarray]]


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings of one model (Triton's ``dynamic_batching`` knobs)."""

    enabled: bool = True
    #: most rows merged into one onnxruntime call; larger requests are split into chunks
    max_batch_size: int = 256
    #: how long the first queued request may wait for more to arrive, in microseconds
    max_queue_delay_us: int = 0
    #: batch sizes worth waiting for (only with a queue delay)
    preferred_batch_sizes: tuple[int, ...] = ()
    #: most requests (or chunks) waiting; more are refused with RESOURCE_EXHAUSTED
    max_queue_size: int = 1024


@dataclass(slots=True)
class BatchResult:
    """A request's outputs and where its time went, in nanoseconds."""

    outputs: list[np.ndarray]
    queue_ns: int
    infer_ns: int
    executions: int = 1


@dataclass(slots=True)
class _Pending:
    feed: Feed
    rows: int
    future: asyncio.Future[BatchResult]
    enqueued: int = field(default_factory=time.perf_counter_ns)


class Batcher:
    """Runs feeds through ``runner``, merging concurrent requests when the model is busy."""

    def __init__(
        self,
        runner: Runner,
        estimate_seconds: Callable[[int], float],
        config: BatchingConfig,
        executor: Executor,
        inline_below_seconds: float,
        record: VersionRecord,
        batched_model: bool = True,
        concurrency: int = 1,
    ) -> None:
        self._run = runner
        self._estimate = estimate_seconds
        self.config = config
        self._executor = executor
        self._inline_below = inline_below_seconds
        self._record = record
        self._batched = batched_model
        self._merge = config.enabled and batched_model
        self._slots = max(concurrency, 1)
        self._queue: deque[_Pending] = deque()
        self._rows_waiting = 0
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def _inline(self, rows: int) -> bool:
        return self._estimate(rows) < self._inline_below

    async def infer(self, feed: Feed, rows: int) -> BatchResult:
        limit = self.config.max_batch_size
        if self._batched and rows > limit:
            return await self._chunked(feed, rows, limit)
        if not self._queue and not self._running and self._inline(rows):
            start = time.perf_counter_ns()
            outputs = self._run(feed)
            elapsed = time.perf_counter_ns() - start
            self._record.executed(rows, 0, elapsed, 0)
            return BatchResult(outputs, 0, elapsed)
        self._admit(1)
        return await self._enqueue(feed, rows)

    def _admit(self, entries: int) -> None:
        # Not when empty: a request of more chunks than max_queue_size would never pass.
        if self._queue and len(self._queue) + entries > self.config.max_queue_size:
            raise ResourceExhausted(
                f"the queue of this model is full ({len(self._queue)} waiting, "
                f"max_queue_size {self.config.max_queue_size}); retry later"
            )

    async def _chunked(self, feed: Feed, rows: int, limit: int) -> BatchResult:
        starts = range(0, rows, limit)
        self._admit(len(starts))
        futures = [
            self._enqueue({k: v[s : s + limit] for k, v in feed.items()}, min(limit, rows - s))
            for s in starts
        ]
        results = await asyncio.gather(*futures)
        outputs = [
            np.concatenate([r.outputs[i] for r in results]) for i in range(len(results[0].outputs))
        ]
        return BatchResult(
            outputs,
            max(r.queue_ns for r in results),
            sum(r.infer_ns for r in results),
            len(results),
        )

    def _enqueue(self, feed: Feed, rows: int) -> asyncio.Future[BatchResult]:
        pending = _Pending(feed, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._rows_waiting += rows
        self._idle.clear()
        self._dispatch()
        return pending.future

    def _dispatch(self) -> None:
        """Start calls while requests wait and slots are free (never awaits)."""
        while self._queue and self._running < self._slots:
            if self._merge and not self._ready_to_take():
                return
            if self._merge and self._running and self._rows_waiting < self.config.max_batch_size:
                # A call is running: let the queue grow into the next batch rather than
                # start a small one beside it; a full batch's worth starts at once.
                return
            batch = self._take()
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running -= 1
        self._dispatch()
        if not self._queue and not self._running:
            self._idle.set()

    def _ready_to_take(self) -> bool:
        """With a queue delay, wait for a preferred size until the first request's deadline."""
        delay_ns = self.config.max_queue_delay_us * 1000
        if delay_ns <= 0 or self._enough():
            return True
        remaining = self._queue[0].enqueued + delay_ns - time.perf_counter_ns()
        if remaining <= 0:
            return True
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(remaining / 1e9, self._timer_fired)
        return False

    def _timer_fired(self) -> None:
        self._timer = None
        self._dispatch()

    def _enough(self) -> bool:
        rows = sum(p.rows for p in self._queue)
        preferred = self.config.preferred_batch_sizes
        if rows >= self.config.max_batch_size:
            return True
        return bool(preferred) and rows >= min(preferred)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while (
            self._merge and self._queue and rows + self._queue[0].rows <= self.config.max_batch_size
        ):
            pending = self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        self._rows_waiting -= rows
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # callers that gave up
        if not batch:
            return
        started = time.perf_counter_ns()
        rows = sum(p.rows for p in batch)
        try:
            # Merging can fail too (inputs whose free dimensions differ between requests).
            feed = batch[0].feed if len(batch) == 1 else _merge([p.feed for p in batch])
            merged = time.perf_counter_ns()
            outputs, ran, called = await self._call(feed, rows)
            if len(batch) > 1 and any(len(o) != rows for o in outputs):
                raise ValueError("outputs are not aligned with the batch dimension")
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
                return
            for pending in batch:  # isolate the request that broke the merged call
                await self._execute([pending])
            return
        offset = 0
        for pending in batch:
            part = (
                outputs if len(batch) == 1 else [o[offset : offset + pending.rows] for o in outputs]
            )
            offset += pending.rows
            if not pending.future.done():
                pending.future.set_result(BatchResult(part, ran - pending.enqueued, called - ran))
        self._record.executed(rows, merged - started, called - ran, time.perf_counter_ns() - called)

    async def _call(self, feed: Feed, rows: int) -> tuple[list[np.ndarray], int, int]:
        """The outputs, and when the model started and finished (waiting for a thread is
        queue time, not compute time)."""
        if self._inline(rows):
            return self._timed(feed)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, feed)

    def _timed(self, feed: Feed) -> tuple[list[np.ndarray], int, int]:
        start = time.perf_counter_ns()
        outputs = self._run(feed)
        return outputs, start, time.perf_counter_ns()

    async def close(self) -> None:
        """Wait until every queued request has been answered."""
        await self._idle.wait()
        # Only when nothing waits: a reclaimed version may have queued a request meanwhile.
        if self._timer is not None and not self._queue:
            self._timer.cancel()
            self._timer = None


def _merge(feeds: list[Feed]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def _settle(future: asyncio.Future[BatchResult], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

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

A request with more rows than ``max_batch_size`` waits in the queue as one entry that counts
as its chunks (of at most that many rows) against ``max_queue_size``; an empty queue admits it
even with more chunks than that. When its turn comes it takes every free slot, and each slot's
worker thread claims the next chunk itself as soon as its last one is done: one hand-off
through the event loop per thread and request, not per chunk, so the threads never sit idle
waiting for a busy loop between chunks. A slot that frees while chunks are left joins in
before anything queued behind. If a merged call fails, each request in it is retried alone,
so one bad request never fails the good ones batched with it.

Each onnxruntime call is recorded once in the version's ``VersionRecord``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

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
    weight = 1  # entries it counts as against max_queue_size


class _Bulk:
    """A request of more rows than ``max_batch_size``, run in chunks by one or more lanes.

    A lane runs on a worker thread and claims chunks in order until none is left, so a
    request of many chunks crosses the event loop once per lane, not once per chunk. Only
    ``claim`` and the chunk results are touched from the threads; everything else belongs to
    the event loop.
    """

    __slots__ = (
        "feed", "rows", "limit", "future", "enqueued", "weight", "lanes", "outputs",
        "started", "infer_ns", "error", "_next", "_stopped", "_lock",
    )  # fmt: skip

    def __init__(
        self, feed: Feed, rows: int, limit: int, future: asyncio.Future[BatchResult]
    ) -> None:
        self.feed = feed
        self.rows = rows
        self.limit = limit
        self.future = future
        self.enqueued = time.perf_counter_ns()
        self.weight = -(-rows // limit)  # its chunks
        self.lanes = 0  # lanes started and not yet finished (counted by the event loop)
        self.outputs: list[list[np.ndarray] | None] = [None] * self.weight
        self.started = 0  # when its first chunk started
        self.infer_ns = 0
        self.error: Exception | None = None
        self._next = 0
        self._stopped = False
        self._lock = threading.Lock()
        future.add_done_callback(self._abandoned)

    def _abandoned(self, future: asyncio.Future[BatchResult]) -> None:
        self._stopped = True  # answered, failed or given up on: claim nothing more

    @property
    def unclaimed(self) -> bool:
        return not self._stopped and self._next < self.weight

    def claim(self) -> int | None:
        """The next chunk's index, or None when none is left or the request failed."""
        with self._lock:
            if self._stopped or self._next >= self.weight:
                return None
            self._next += 1
            return self._next - 1

    def run(self, runner: Runner, most: int) -> list[tuple[int, int, int]]:
        """Claim and run up to ``most`` chunks; each call's rows, start and end."""
        calls = []
        while len(calls) < most and (index := self.claim()) is not None:
            first = index * self.limit
            part = {name: array[first : first + self.limit] for name, array in self.feed.items()}
            start = time.perf_counter_ns()
            try:
                self.outputs[index] = runner(part)
            except Exception as exc:
                self.fail(exc)
                break
            calls.append((min(self.limit, self.rows - first), start, time.perf_counter_ns()))
        return calls

    def fail(self, exc: Exception) -> None:
        """Stop claiming chunks; the request fails with the first error."""
        with self._lock:
            self._stopped = True
            self.error = self.error or exc

    def settle(self) -> None:
        """Answer the request once its last lane has finished."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
            return
        parts = [part for part in self.outputs if part is not None]  # every chunk ran
        outputs = [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
        self.future.set_result(
            BatchResult(outputs, self.started - self.enqueued, self.infer_ns, self.weight)
        )


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
        self._queue: deque[_Pending | _Bulk] = deque()
        self._waiting = 0  # entries waiting, a bulk request counted as its chunks
        self._rows_waiting = 0
        self._helping: deque[_Bulk] = deque()  # bulk requests taken with chunks unclaimed
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue_depth(self) -> int:
        """Requests waiting, a request of many chunks counted as its chunks."""
        return self._waiting

    def _inline(self, rows: int) -> bool:
        return self._estimate(rows) < self._inline_below

    async def infer(self, feed: Feed, rows: int) -> BatchResult:
        limit = self.config.max_batch_size
        if self._batched and rows > limit:
            bulk = _Bulk(feed, rows, limit, asyncio.get_running_loop().create_future())
            self._admit(bulk.weight)
            self._enter(bulk)
            return await bulk.future
        if not self._queue and not self._running and self._inline(rows):
            start = time.perf_counter_ns()
            outputs = self._run(feed)
            elapsed = time.perf_counter_ns() - start
            self._record.executed(rows, 0, elapsed, 0)
            return BatchResult(outputs, 0, elapsed)
        self._admit(1)
        pending = _Pending(feed, rows, asyncio.get_running_loop().create_future())
        self._enter(pending)
        return await pending.future

    def _admit(self, entries: int) -> None:
        # Not when empty: a request of more chunks than max_queue_size would never pass.
        if self._queue and self._waiting + entries > self.config.max_queue_size:
            raise ResourceExhausted(
                f"the queue of this model is full ({self._waiting} waiting, "
                f"max_queue_size {self.config.max_queue_size}); retry later"
            )

    def _enter(self, entry: _Pending | _Bulk) -> None:
        self._queue.append(entry)
        self._waiting += entry.weight
        self._rows_waiting += entry.rows
        self._idle.clear()
        self._dispatch()

    def _dispatch(self) -> None:
        """Start calls while requests wait and slots are free (never awaits)."""
        while self._running < self._slots:
            if self._helping:  # a bulk request taken earlier goes first while chunks are left
                bulk = self._helping[0]
                if bulk.unclaimed and bulk.lanes < bulk.weight:
                    bulk.lanes += 1
                    self._start(self._lane(bulk))
                else:
                    self._helping.popleft()
                continue
            if not self._queue:
                return
            if self._merge and not self._ready_to_take():
                return
            if self._merge and self._running and self._rows_waiting < self.config.max_batch_size:
                # A call is running: let the queue grow into the next batch rather than
                # start a small one beside it; a full batch's worth starts at once.
                return
            batch = self._take()
            if isinstance(batch, _Bulk):
                self._helping.append(batch)
            else:
                self._start(self._execute(batch))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self._running += 1
        task = asyncio.get_running_loop().create_task(work)
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
        rows = self._rows_waiting
        preferred = self.config.preferred_batch_sizes
        if rows >= self.config.max_batch_size:
            return True
        return bool(preferred) and rows >= min(preferred)

    def _take(self) -> list[_Pending] | _Bulk:
        """The next call's requests, or the bulk request at the head (never merged)."""
        head = self._queue.popleft()
        self._rows_waiting -= head.rows
        self._waiting -= head.weight
        if isinstance(head, _Bulk):
            return head
        batch, rows = [head], head.rows
        while self._merge and self._queue:
            pending = self._queue[0]
            if isinstance(pending, _Bulk) or rows + pending.rows > self.config.max_batch_size:
                break
            self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        self._rows_waiting -= rows - head.rows
        self._waiting -= len(batch) - 1
        return batch

    async def _lane(self, bulk: _Bulk) -> None:
        """One slot's share of a bulk request: chunks claimed until none is left."""
        if not bulk.started:
            bulk.started = time.perf_counter_ns()
        try:
            if self._inline(bulk.limit):  # cheap chunks: on the loop, one per turn
                while bulk.unclaimed:
                    self._recorded(bulk, bulk.run(self._run, 1))
                    await asyncio.sleep(0)
            else:
                loop = asyncio.get_running_loop()
                calls = await loop.run_in_executor(self._executor, bulk.run, self._run, bulk.weight)
                self._recorded(bulk, calls)
        except Exception as exc:  # the executor refused the work (it is shutting down)
            bulk.fail(exc)
        finally:
            bulk.lanes -= 1
            if not bulk.lanes and not bulk.unclaimed:
                bulk.settle()

    def _recorded(self, bulk: _Bulk, calls: list[tuple[int, int, int]]) -> None:
        for rows, start, end in calls:
            bulk.infer_ns += end - start
            self._record.executed(rows, 0, end - start, 0)

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

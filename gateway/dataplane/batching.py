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
even with more chunks than that. When its turn comes it is staged and takes every free slot;
each slot's worker thread (a lane) claims the next chunk itself as soon as its last one is
done, and goes on to the next staged request's chunks, so the threads never sit idle waiting
for a busy event loop between chunks. A slot that frees while chunks are left joins in before
anything queued behind. If a merged call fails, each request in it is retried alone,
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
    """A request of more rows than ``max_batch_size``, run in chunks by the batcher's lanes.

    Its counters and results are written under the batcher's lock by whichever lane runs a
    chunk; its future belongs to the event loop.
    """

    __slots__ = (
        "feed", "rows", "limit", "future", "enqueued", "weight", "outputs", "calls", "started",
        "claimed", "finished", "stopped", "error", "settled",
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
        self.outputs: list[list[np.ndarray] | None] = [None] * self.weight
        self.calls: list[tuple[int, int, int]] = []  # each chunk's rows, start and end
        self.started = 0  # when its first chunk started
        self.claimed = 0  # chunks taken by a lane; the next one to take
        self.finished = 0  # chunks run, or failed
        self.stopped = False  # failed, answered or given up on: take no more chunks
        self.error: Exception | None = None
        self.settled = False

    @property
    def unclaimed(self) -> bool:
        return not self.stopped and self.claimed < self.weight

    @property
    def idle(self) -> bool:
        """No chunk runs and none will: the request can be answered."""
        return self.finished == self.claimed and not self.unclaimed

    def chunk(self, index: int) -> tuple[dict[str, np.ndarray], int]:
        first = index * self.limit
        rows = min(self.limit, self.rows - first)
        return {name: array[first : first + rows] for name, array in self.feed.items()}, rows

    def result(self) -> BatchResult:
        parts = [part for part in self.outputs if part is not None]  # every chunk ran
        outputs = [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
        infer_ns = sum(end - start for _, start, end in self.calls)
        return BatchResult(outputs, self.started - self.enqueued, infer_ns, self.weight)


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
        # Bulk requests taken from the queue, in order, whose chunks lanes claim. A lane is a
        # slot's worker thread claiming chunks until none is left in any of them: it goes
        # from one request to the next without waiting for the event loop.
        self._staged: deque[_Bulk] = deque()
        self._lock = threading.Lock()  # the staged requests and their counters
        self._lanes = 0
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
            bulk.future.add_done_callback(lambda _: self._abandon(bulk))
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
        while True:
            self._stage()
            if self._running >= self._slots:
                return
            if self._staged and self._unclaimed():  # only lanes remove: empty is exact
                self._lanes += 1
                self._start(self._lane())
                continue
            if not self._queue or isinstance(self._queue[0], _Bulk):
                return
            if self._merge and not self._ready_to_take():
                return
            if self._merge and self._running and self._rows_waiting < self.config.max_batch_size:
                # A call is running: let the queue grow into the next batch rather than
                # start a small one beside it; a full batch's worth starts at once.
                return
            self._start(self._execute(self._take()))

    def _stage(self) -> None:
        """Hand bulk requests at the head of the queue to the lanes, in order.

        While a lane runs, this happens at once, free slot or not: the lane that finishes
        the request before goes straight on to the next one's chunks.
        """
        while self._queue and (self._lanes or self._running < self._slots):
            bulk = self._queue[0]
            if not isinstance(bulk, _Bulk):
                return
            self._queue.popleft()
            self._rows_waiting -= bulk.rows
            self._waiting -= bulk.weight
            with self._lock:
                self._staged.append(bulk)

    def _unclaimed(self) -> bool:
        with self._lock:
            return any(bulk.unclaimed for bulk in self._staged)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a slot."""
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

    def _take(self) -> list[_Pending]:
        """The requests of the next call (never a bulk request: those are staged)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            pending = self._queue[0]
            if isinstance(pending, _Bulk) or (
                batch and (not self._merge or rows + pending.rows > self.config.max_batch_size)
            ):
                break
            self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        self._rows_waiting -= rows
        self._waiting -= len(batch)
        return batch

    async def _lane(self) -> None:
        """A slot running chunks of the staged bulk requests until none is left."""
        loop = asyncio.get_running_loop()
        try:
            if self._inline(self.config.max_batch_size):  # cheap chunks: one per loop turn
                while self._run_chunk(loop):
                    await asyncio.sleep(0)
            else:
                await loop.run_in_executor(self._executor, self._run_chunks, loop)
        except Exception as exc:  # the executor refused the work (it is shutting down)
            self._fail_staged(exc)
        finally:
            self._lanes -= 1

    def _run_chunks(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._run_chunk(loop):
            pass

    def _run_chunk(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Claim the next chunk of the staged requests and run it; False when none is left.

        Runs on a worker thread (or the loop, for cheap chunks); the request is answered on
        the loop once its last chunk is done.
        """
        with self._lock:
            while self._staged and not self._staged[0].unclaimed:
                self._staged.popleft()  # every chunk taken (or the request stopped)
            if not self._staged:
                return False
            bulk = self._staged[0]
            index = bulk.claimed
            bulk.claimed += 1
            if not bulk.started:
                bulk.started = time.perf_counter_ns()
        feed, rows = bulk.chunk(index)
        start = time.perf_counter_ns()
        error: Exception | None = None
        try:
            outputs = self._run(feed)
        except Exception as exc:
            error = exc
        end = time.perf_counter_ns()
        with self._lock:
            bulk.finished += 1
            if error is None:
                bulk.outputs[index] = outputs
                bulk.calls.append((rows, start, end))
            else:
                bulk.stopped = True
                bulk.error = bulk.error or error
            last = self._settling(bulk)
        if last:
            loop.call_soon_threadsafe(self._settle, bulk)
        return True

    @staticmethod
    def _settling(bulk: _Bulk) -> bool:
        """Whether ``bulk`` is to be answered now (true once; call with the lock held)."""
        if bulk.settled or not bulk.idle:
            return False
        bulk.settled = True
        return True

    def _settle(self, bulk: _Bulk) -> None:
        """Record a bulk request's calls and answer it (on the event loop)."""
        for rows, start, end in bulk.calls:
            self._record.executed(rows, 0, end - start, 0)
        if bulk.future.done():
            return
        if bulk.error is not None:
            bulk.future.set_exception(bulk.error)
        else:
            bulk.future.set_result(bulk.result())

    def _abandon(self, bulk: _Bulk) -> None:
        """A bulk request answered or given up on: run no more of its chunks."""
        with self._lock:
            bulk.stopped = True
            last = self._settling(bulk)
        if last:
            self._settle(bulk)

    def _fail_staged(self, exc: Exception) -> None:
        with self._lock:
            failed = []
            for bulk in self._staged:
                if bulk.unclaimed:
                    bulk.stopped = True
                    bulk.error = bulk.error or exc
                    if self._settling(bulk):
                        failed.append(bulk)
        for bulk in failed:
            self._settle(bulk)

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

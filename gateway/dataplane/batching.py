"""Adaptive batching for one loaded version, with Triton's knobs.

A request whose model call is cheaper than a hop to a worker thread (about 100 µs here) runs
inline on the event loop when nothing is queued: batching then costs nothing. Otherwise the
request joins a queue; one drain task merges whatever is waiting (up to ``max_batch_size``
rows, optionally waiting ``max_queue_delay_us`` for a preferred size) into a single
onnxruntime call on a worker thread, so requests that arrive while the model is busy share the
next call. A full queue answers RESOURCE_EXHAUSTED. If a merged call fails, each request is
retried alone, so one bad request never fails the good ones batched with it.
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

__all__ = ["BatchResult", "Batcher", "BatchingConfig"]

Feed = Mapping[str, np.ndarray]
Runner = Callable[[Feed], list[np.ndarray]]


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings of one model (Triton's ``dynamic_batching`` knobs)."""

    enabled: bool = True
    #: most rows merged into one onnxruntime call, and the largest batch a request may carry
    max_batch_size: int = 256
    #: how long the first queued request may wait for more to arrive, in microseconds
    max_queue_delay_us: int = 0
    #: batch sizes worth waiting for (only with a queue delay)
    preferred_batch_sizes: tuple[int, ...] = ()
    #: most requests waiting; more are refused with RESOURCE_EXHAUSTED
    max_queue_size: int = 1024


@dataclass(slots=True)
class BatchResult:
    outputs: list[np.ndarray]
    queue_seconds: float
    compute_seconds: float
    batch_rows: int


@dataclass(slots=True)
class _Pending:
    feed: Feed
    rows: int
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Runs feeds through ``runner``, merging concurrent requests when the model is busy."""

    def __init__(
        self,
        runner: Runner,
        estimate_seconds: Callable[[int], float],
        config: BatchingConfig,
        executor: Executor,
        inline_below_seconds: float,
        batched_model: bool = True,
        report_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._run = runner
        self._estimate = estimate_seconds
        self.config = config
        self._executor = executor
        self._inline_below = inline_below_seconds
        self._merge = config.enabled and batched_model
        self._queue: deque[_Pending] = deque()
        self._drain_task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._report_depth = report_depth  # e.g. the driftgate_queue_depth gauge's ``set``

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def _inline(self, rows: int) -> bool:
        return self._estimate(rows) < self._inline_below

    async def infer(self, feed: Feed, rows: int) -> BatchResult:
        if self._drain_task is None and self._inline(rows):
            start = time.perf_counter()
            outputs = self._run(feed)
            return BatchResult(outputs, 0.0, time.perf_counter() - start, rows)
        if not self._merge:
            start = time.perf_counter()
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._run, feed)
            return BatchResult(outputs, 0.0, time.perf_counter() - start, rows)
        return await self._enqueue(feed, rows)

    async def _enqueue(self, feed: Feed, rows: int) -> BatchResult:
        if len(self._queue) >= self.config.max_queue_size:
            raise ResourceExhausted(
                f"the batching queue is full ({self.config.max_queue_size} requests waiting); "
                "retry later"
            )
        pending = _Pending(feed, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._depth_changed()
        self._arrived.set()
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return await pending.future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._wait_for_preferred()
                batch = self._take()
                try:
                    await self._execute(batch)
                except Exception as exc:  # never leave a caller waiting
                    for pending in batch:
                        _settle(pending.future, exc)
        finally:
            self._drain_task = None

    async def _wait_for_preferred(self) -> None:
        delay = self.config.max_queue_delay_us / 1e6
        if delay <= 0:
            return
        deadline = self._queue[0].enqueued + delay
        while (remaining := deadline - time.perf_counter()) > 0 and not self._enough():
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break

    def _enough(self) -> bool:
        rows = sum(p.rows for p in self._queue)
        preferred = self.config.preferred_batch_sizes
        if rows >= self.config.max_batch_size:
            return True
        return bool(preferred) and rows >= min(preferred)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.config.max_batch_size:
            pending = self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        self._depth_changed()
        return batch

    def _depth_changed(self) -> None:
        if self._report_depth is not None:
            self._report_depth(len(self._queue))

    async def _execute(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # callers that gave up
        if not batch:
            return
        start = time.perf_counter()
        rows = sum(p.rows for p in batch)
        try:
            # Merging can fail too (inputs whose free dimensions differ between requests).
            feed = batch[0].feed if len(batch) == 1 else _merge([p.feed for p in batch])
            outputs = await self._call(feed, rows)
            if len(batch) > 1 and any(len(o) != rows for o in outputs):
                raise ValueError("outputs are not aligned with the batch dimension")
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
                return
            for pending in batch:  # isolate the request that broke the merged call
                await self._execute([pending])
            return
        elapsed = time.perf_counter() - start
        offset = 0
        for pending in batch:
            part = [o[offset : offset + pending.rows] for o in outputs]
            offset += pending.rows
            result = BatchResult(part, start - pending.enqueued, elapsed, rows)
            if not pending.future.done():
                pending.future.set_result(result)

    async def _call(self, feed: Feed, rows: int) -> list[np.ndarray]:
        if self._inline(rows):
            return self._run(feed)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, feed)

    async def close(self) -> None:
        """Wait until every queued request has been answered."""
        while self._drain_task is not None:
            await asyncio.shield(self._drain_task)


def _merge(feeds: list[Feed]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def _settle(future: asyncio.Future[BatchResult], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)

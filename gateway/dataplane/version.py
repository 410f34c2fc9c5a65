"""One loaded model version: the runtime that owns its session, batcher and record.

``load_version`` does the slow part (checksum, session, warm-up) and runs on a loader thread,
off the request path. The ``VersionRuntime`` it returns is the one owner of that version in
this process, with explicit states::

    LOADING -> SERVING -> DRAINING -> CLOSED
                  ^           |
                  +-----------+   reclaim: loaded again while still draining

Work enters through ``lease()``: a lease is refused with UNAVAILABLE (retryable) once the
version drains or is closed, never with an error about a missing session. A drain waits for
the leases it finds, then closes the batcher and releases the session; it releases only what
its own generation owns, and stops at once if the version is reclaimed meanwhile.

``infer`` is the request path: decode (compute_input), batcher (queue and compute_infer),
encode (compute_output), each request recorded once in ``record``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from driftgate.core.errors import DriftgateError, Unavailable
from driftgate.core.repository import Repository
from driftgate.gateway.dataplane.batching import Batcher, BatchingConfig
from driftgate.gateway.dataplane.codec import decode_inputs, encode_outputs, requested_outputs
from driftgate.gateway.dataplane.record import VersionRecord
from driftgate.gateway.dataplane.session import OnnxModel, TensorSpec
from driftgate.gateway.dataplane.warmup import warmup_feeds
from driftgate.gateway.settings import GatewaySettings
from driftgate.gateway.statistics import VersionCollector

__all__ = ["Answer", "State", "VersionRuntime", "load_version"]

log = logging.getLogger(__name__)

_generations = itertools.count(1)


class State(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(slots=True)
class Answer:
    """A request's encoded outputs, and the arrays they came from (the shadow compares them)."""

    tensors: list[Any]
    raw: list[bytes]
    outputs: list[np.ndarray]


class VersionRuntime:
    """A version in memory: the one owner of its session, batcher, record and collector."""

    def __init__(
        self,
        model: str,
        version: int,
        session: OnnxModel,
        metadata: Mapping[str, Any],
        reference: Mapping[str, Any] | None,
        batching: BatchingConfig,
        batcher: Batcher,
        record: VersionRecord,
        collector: VersionCollector | None = None,
        max_request_rows: int = 1 << 16,
    ) -> None:
        self.model = model
        self.version = version
        self.generation = next(_generations)
        self.session = session
        self.metadata = metadata
        self.reference = reference
        self.batching = batching
        self.batcher = batcher
        self.record = record
        self.collector = collector
        self.max_request_rows = max_request_rows
        self.state = State.LOADING
        self.in_flight = 0
        self.loaded_at = time.time()
        self._released = asyncio.Event()
        #: bookkeeping errors (statistics), logged and counted, never raised to a request
        self.bookkeeping_errors = 0

    def __repr__(self) -> str:
        return f"<{self.model} v{self.version} gen {self.generation} {self.state.value}>"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.session.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.session.outputs

    @property
    def batched(self) -> bool:
        return self.session.batched

    @property
    def max_batch_size(self) -> int:
        """Rows per onnxruntime call, as ModelConfig reports it (0: the model does not batch)."""
        return self.batching.max_batch_size if self.session.batched else 0

    # -- lifecycle ----------------------------------------------------------------------

    def start_serving(self) -> None:
        if self.state is State.LOADING:
            self.state = State.SERVING

    def begin_drain(self) -> None:
        if self.state is State.SERVING:
            self.state = State.DRAINING

    def reclaim(self) -> bool:
        """Serve again a version that is draining; False if it is already closed."""
        if self.state is State.DRAINING:
            self.state = State.SERVING
            return True
        return self.state is State.SERVING

    async def drain(self, deadline_seconds: float, release: Executor | None = None) -> bool:
        """Wait for in-flight work, then release; False if reclaimed before the end."""
        deadline = time.monotonic() + deadline_seconds
        while self.in_flight > 0 and time.monotonic() < deadline:
            if self.state is not State.DRAINING:
                return False
            await asyncio.sleep(0.01)
        if self.state is not State.DRAINING:
            return False
        await self.batcher.close()
        if self.state is not State.DRAINING:
            return False
        self.state = State.CLOSED
        loop = asyncio.get_running_loop()
        # Free the onnxruntime session on the loader thread, not on the event loop.
        await loop.run_in_executor(release, self.session.release)
        return True

    def lease(self) -> _Lease:
        """Count work in, for the length of a ``with`` block; refused unless serving."""
        if self.state is not State.SERVING:
            raise Unavailable(
                f"version {self.version} of model '{self.model}' is {self.state.value}; retry"
            )
        self.in_flight += 1
        return _Lease(self)

    # -- the request path ---------------------------------------------------------------

    async def infer(
        self, request: Any, request_id: str, wanted: Sequence[str] = (), observe: bool = True
    ) -> Answer:
        """Decode, run and encode one request; recorded once, success or failure.

        ``observe`` hands the arrays to the monitor's statistics (not for shadow copies).
        """
        start = time.perf_counter_ns()
        with self.lease():
            try:
                wanted = requested_outputs(wanted, self.outputs, self.model)
                feed, rows = decode_inputs(
                    request, self.inputs, self.session.batched, self.max_request_rows
                )
                decoded = time.perf_counter_ns()
                result = await self.batcher.infer(feed, rows)
                ran = time.perf_counter_ns()
                tensors, raw = encode_outputs(self.outputs, result.outputs, wanted, self.model)
            except DriftgateError as exc:
                self.record.request_failed(time.perf_counter_ns() - start, exc.code.name)
                raise
            except Exception:
                self.record.request_failed(time.perf_counter_ns() - start, "INTERNAL")
                raise
        end = time.perf_counter_ns()
        self.record.request_succeeded(
            rows,
            end - start,
            result.queue_ns,
            decoded - start,
            result.infer_ns,
            end - ran,
        )
        if observe and self.collector is not None:
            self._observe(feed, result.outputs, request_id)
        return Answer(tensors, raw, result.outputs)

    def _observe(self, feed: Mapping[str, np.ndarray], outputs: list[np.ndarray], rid: str) -> None:
        assert self.collector is not None
        try:
            self.collector.observe(feed, outputs, rid)
        except Exception:
            self.bookkeeping_errors += 1
            log.exception("%s version %d: statistics bookkeeping failed", self.model, self.version)


class _Lease:
    """Work in progress on a version; leaving the ``with`` block counts it out.

    A plain class rather than ``contextlib.contextmanager``, whose generator costs about
    three times as much on every request.
    """

    __slots__ = ("_runtime",)

    def __init__(self, runtime: VersionRuntime) -> None:
        self._runtime = runtime

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self._runtime.in_flight -= 1


def batching_config(metadata: Mapping[str, Any], default: BatchingConfig) -> BatchingConfig:
    """The model's own ``batching`` entry in model.json over the gateway's defaults."""
    entry = metadata.get("batching") or {}
    known = {k: v for k, v in entry.items() if k in BatchingConfig.__dataclass_fields__}
    if "preferred_batch_sizes" in known:
        known["preferred_batch_sizes"] = tuple(known["preferred_batch_sizes"])
    return replace(default, **known)


def load_version(
    repository: Repository,
    model: str,
    version: int,
    settings: GatewaySettings,
    executor: Executor,
) -> VersionRuntime:
    """Read, verify, load and warm one version. Raises on any failure; nothing is half-loaded.

    Runs on the loader thread; the runtime it returns is LOADING until the manager routes it.
    """
    metadata = repository.metadata(model, version)
    reference = repository.reference(model, version)
    session = OnnxModel(repository.read_model_bytes(model, version), settings.ort_threads)
    if session.batched:
        feeds = warmup_feeds(session.inputs, reference, rows=settings.warmup_rows)
    else:
        feeds = [{s.name: np.zeros([max(d, 1) for d in s.shape], s.dtype) for s in session.inputs}]
    session.warm_up(feeds)
    config = batching_config(metadata, settings.batching)
    record = VersionRecord()
    batcher = Batcher(
        session.run,
        session.estimated_seconds,
        config,
        executor,
        inline_below_seconds=settings.inline_below_us / 1e6,
        record=record,
        batched_model=session.batched,
        concurrency=settings.infer_threads,
    )
    inline = session.call_seconds * 1e6 < settings.inline_below_us
    log.info(
        "loaded %s version %d: one-row call %.1f µs, %s",
        model,
        version,
        session.call_seconds * 1e6,
        "inline" if inline else "on a thread",
    )
    collector = None
    if settings.monitor is not None:
        columns = {s.name: (s.shape[-1] if s.shape else 1) for s in session.inputs}
        collector = VersionCollector(
            reference,
            columns,
            [o.name for o in session.outputs],
            record_rate=settings.record_sample_rate,
            record_max_per_second=settings.record_max_per_second,
            record=record,
        )
    return VersionRuntime(
        model,
        version,
        session,
        metadata,
        reference,
        config,
        batcher,
        record,
        collector,
        max_request_rows=settings.max_request_rows,
    )

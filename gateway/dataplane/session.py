"""onnxruntime sessions for one model version: load, describe, warm up, measure, run.

Session options are chosen for a small machine where the gRPC event loop needs a core of its
own: one intra-op and one inter-op thread by default (``GatewaySettings.ort_threads``), no
spinning of idle worker threads (spinning steals the loop's core for a few microseconds of
latency that a 6-9 µs model cannot use), full graph optimisation, sequential execution.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as _ORT_INVALID_ARGUMENT

from driftgate.core.errors import (
    DriftgateError,
    Internal,
    InvalidInput,
    ResourceExhausted,
    Unavailable,
)

__all__ = [
    "NUMPY_DTYPES",
    "OnnxModel",
    "TensorSpec",
    "VersionLoadError",
    "run_error",
]

log = logging.getLogger(__name__)

# ONNX tensor element types as onnxruntime names them, to KServe v2 datatypes.
_V2_FROM_ORT = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# v2 datatype -> little-endian numpy dtype of the wire format (BYTES decode to str objects).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


def run_error(exc: Exception) -> DriftgateError:
    """What an onnxruntime failure means for the caller.

    Only onnxruntime's InvalidArgument blames the input (a shape or type the graph refuses);
    an allocation failure is RESOURCE_EXHAUSTED; anything else is the server's fault, logged
    with its cause and answered INTERNAL without leaking it.
    """
    if isinstance(exc, _ORT_INVALID_ARGUMENT):
        return InvalidInput(f"the model could not run on this input: {exc}")
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text:
        log.error("onnxruntime ran out of memory: %s", exc)
        return ResourceExhausted("the server ran out of memory for this request; retry later")
    log.error("onnxruntime failed: %r", exc)
    return Internal("the model failed on this request; see the server log")


class VersionLoadError(DriftgateError):
    """A version could not be loaded (corrupt ONNX, unsupported types, failed warm-up)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its v2 datatype and its shape without the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 marks a free dimension

    @property
    def dtype(self) -> np.dtype[Any]:
        return NUMPY_DTYPES[self.datatype]


def _spec(arg: Any, batched: bool) -> TensorSpec:
    datatype = _V2_FROM_ORT.get(arg.type)
    if datatype is None:
        raise VersionLoadError(f"tensor '{arg.name}' has type {arg.type}, which is not served")
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]
    return TensorSpec(arg.name, datatype, tuple(dims[1:] if batched else dims))


def _is_batched(session: ort.InferenceSession) -> bool:
    """A model batches on its first dimension when every input leaves that dimension free."""
    return all(
        len(arg.shape) > 0 and not (isinstance(arg.shape[0], int) and arg.shape[0] >= 0)
        for arg in session.get_inputs()
    )


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def return_freed_memory() -> None:
    """Give the memory a released session freed back to the operating system.

    glibc keeps freed memory in each thread's arena for reuse. A session is built on the
    loader thread and run on the inference threads, so without this every hot swap left
    some of the old session's pages resident. Measured at about 0.1 ms on the loader thread,
    once per retired version; does nothing where the C library is not glibc.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxModel:
    """An onnxruntime session with its signature and measured call cost.

    ``run`` takes arrays already validated against ``inputs`` and returns every output, in
    the order of ``outputs``.
    """

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        try:
            self._session = ort.InferenceSession(
                model_bytes, session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise VersionLoadError(f"onnxruntime refused the model: {exc}") from exc
        self.batched = _is_batched(self._session)
        self.inputs = tuple(_spec(a, self.batched) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a, self.batched) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        # One RunOptions for every call (read-only, so shared by the inference threads):
        # passing None makes onnxruntime build a default one per call, 0.75 of the 7.7 µs a
        # one-row forest call costs in a tight loop.
        self._run_options = ort.RunOptions()
        # Cost model of one call: fixed part plus a per-row part, in seconds.
        self.call_seconds = 0.0
        self.row_seconds = 0.0

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session
        if session is None:
            raise Unavailable("this version has been released; retry")
        try:
            outputs: list[np.ndarray] = session.run(self._output_names, feed, self._run_options)
        except Exception as exc:
            raise run_error(exc) from exc
        return outputs

    def release(self) -> None:
        """Drop the onnxruntime session (and its memory); the version must be retired."""
        self._session = None
        return_freed_memory()

    def estimated_seconds(self, rows: int) -> float:
        return self.call_seconds + self.row_seconds * max(rows - 1, 0)

    def warm_up(self, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Run the samples (one-row feeds, then a larger batch) and measure the call cost."""
        if not samples:
            return
        try:
            for feed in samples:
                self._session.run(self._output_names, feed)
            one = samples[0]
            timings = []
            for _ in range(20):
                start = time.perf_counter()
                self._session.run(self._output_names, one)
                timings.append(time.perf_counter() - start)
            self.call_seconds = statistics.median(timings)
            if self.batched and len(samples) > 1:
                big = {k: np.concatenate([s[k] for s in samples]) for k in one}
                start = time.perf_counter()
                self._session.run(self._output_names, big)
                elapsed = time.perf_counter() - start
                self.row_seconds = max(elapsed - self.call_seconds, 0.0) / (len(samples) - 1)
        except Exception as exc:
            raise VersionLoadError(f"warm-up failed: {exc}") from exc

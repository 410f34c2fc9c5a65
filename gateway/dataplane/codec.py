"""KServe v2 tensors on the wire <-> numpy arrays, with validation that names what is wrong.

The fast path is ``raw_input_contents``: ``np.frombuffer`` over the request's bytes, no copy.
Typed ``contents`` are accepted for every datatype that has a field for them. BYTES elements
are a 4-byte little-endian length followed by the bytes; the model sees them as ``str``.
Responses always carry ``raw_output_contents``, as Triton's do.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core.errors import InvalidInput
from driftgate.gateway.dataplane.session import NUMPY_DTYPES, TensorSpec

__all__ = ["decode_bytes", "decode_inputs", "encode_bytes", "encode_outputs"]

# Which InferTensorContents field carries each datatype.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")


def decode_inputs(
    request: pb.ModelInferRequest,
    specs: Sequence[TensorSpec],
    batched: bool,
    max_rows: int,
) -> tuple[dict[str, np.ndarray], int]:
    """The request's input arrays by name, and the number of rows they carry.

    ``max_rows`` bounds the rows one request may carry; a batcher splits what exceeds a
    model's ``max_batch_size`` into chunks.
    """
    tensors = request.inputs
    _check_names(tensors, specs, request.model_name)
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has {len(tensors)} "
            "inputs; send one entry per input, in the order of inputs"
        )
    by_name = {spec.name: spec for spec in specs}
    feed: dict[str, np.ndarray] = {}
    rows = -1
    for index, tensor in enumerate(tensors):
        spec = by_name[tensor.name]
        shape = _check_shape(tensor, spec, batched, max_rows)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input '{tensor.name}' carries contents although the request uses "
                    "raw_input_contents; use one or the other for all inputs"
                )
            array = _from_raw(raw[index], spec, shape)
        else:
            array = _from_contents(tensor, spec, shape)
        if batched:
            if rows >= 0 and shape[0] != rows:
                raise InvalidInput(
                    f"input '{tensor.name}' has batch size {shape[0]} but other inputs have "
                    f"{rows}; every input must carry the same number of rows"
                )
            rows = shape[0]
        feed[tensor.name] = array
    return feed, max(rows, 1)


def _check_names(tensors: Sequence[Any], specs: Sequence[TensorSpec], model: str) -> None:
    if len(tensors) == len(specs) == 1 and tensors[0].name == specs[0].name:
        return
    expected = [spec.name for spec in specs]
    got = [tensor.name for tensor in tensors]
    if sorted(got) == sorted(expected):
        return
    missing = [name for name in expected if name not in got]
    extra = [name for name in got if name not in expected]
    if len(set(got)) != len(got):
        problem = f"duplicate inputs {sorted({n for n in got if got.count(n) > 1})}"
    elif missing:
        problem = f"missing input {', '.join(repr(n) for n in missing)}"
    else:
        problem = f"unexpected input {', '.join(repr(n) for n in extra)}"
    raise InvalidInput(f"model '{model}' expects inputs {expected}; {problem}")


def _check_shape(tensor: Any, spec: TensorSpec, batched: bool, max_rows: int) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if tensor.datatype != spec.datatype:
        raise InvalidInput(
            f"input '{spec.name}': expected datatype {spec.datatype}, got "
            f"{tensor.datatype or '(empty)'}"
        )
    dims = shape[1:] if batched else shape
    fits = len(dims) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, dims, strict=True)
    )
    if not fits or any(d < 0 for d in shape) or (batched and not shape):
        expected = ["-1", *map(str, spec.shape)] if batched else list(map(str, spec.shape))
        raise InvalidInput(
            f"input '{spec.name}': expected shape [{', '.join(expected)}], got {list(shape)}"
        )
    if batched and (shape[0] < 1 or shape[0] > max_rows):
        raise InvalidInput(
            f"input '{spec.name}': batch size {shape[0]} is outside 1..{max_rows} "
            "(the gateway's --max-request-rows)"
        )
    return shape


def _from_raw(buffer: bytes, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        return np.array(decode_bytes(buffer, count, spec.name), dtype=object).reshape(shape)
    dtype = NUMPY_DTYPES[spec.datatype]
    if len(buffer) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{spec.name}': raw_input_contents holds {len(buffer)} bytes, but shape "
            f"{list(shape)} of {spec.datatype} needs {count * dtype.itemsize} bytes"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _from_contents(tensor: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    field = _CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidInput(
            f"input '{spec.name}': {spec.datatype} has no typed contents field; send it in "
            "raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInput(
            f"input '{spec.name}': contents.{field} holds {len(values)} values, but shape "
            f"{list(shape)} needs {count}"
        )
    if spec.datatype == "BYTES":
        strings = [_utf8(value, spec.name) for value in values]
        return np.array(strings, dtype=object).reshape(shape)
    try:
        return np.asarray(values, dtype=NUMPY_DTYPES[spec.datatype]).reshape(shape)
    except OverflowError as exc:
        raise InvalidInput(
            f"input '{spec.name}': a value in contents.{field} does not fit {spec.datatype}"
        ) from exc


def _utf8(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input '{name}': BYTES element is not valid UTF-8 ({exc})") from exc


def decode_bytes(buffer: bytes, count: int, name: str) -> list[str]:
    """Split a v2 BYTES buffer into ``count`` strings, refusing anything malformed."""
    out: list[str] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(
                f"input '{name}': malformed BYTES: {end - offset} trailing bytes where a "
                "4-byte length prefix was expected"
            )
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input '{name}': malformed BYTES: element {len(out)} claims {length} bytes "
                f"but only {end - offset} remain"
            )
        out.append(_utf8(buffer[offset : offset + length], name))
        offset += length
    if len(out) != count:
        raise InvalidInput(
            f"input '{name}': BYTES holds {len(out)} elements, but the shape needs {count}"
        )
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_outputs(
    specs: Sequence[TensorSpec],
    outputs: Sequence[np.ndarray],
    requested: Sequence[str],
    model: str,
) -> tuple[list[pb.ModelInferResponse.InferOutputTensor], list[bytes]]:
    """Output tensors and their raw contents, filtered to ``requested`` when it is not empty."""
    if requested:
        known = {spec.name for spec in specs}
        for name in requested:
            if name not in known:
                raise InvalidInput(
                    f"requested output '{name}' is not an output of model '{model}'; "
                    f"outputs: {sorted(known)}"
                )
    tensors, raw = [], []
    for spec, array in zip(specs, outputs, strict=True):
        if requested and spec.name not in requested:
            continue
        tensors.append(
            pb.ModelInferResponse.InferOutputTensor(
                name=spec.name, datatype=spec.datatype, shape=array.shape
            )
        )
        if spec.datatype == "BYTES":
            raw.append(encode_bytes(array))
        else:
            raw.append(np.ascontiguousarray(array, dtype=spec.dtype).tobytes())
    return tensors, raw

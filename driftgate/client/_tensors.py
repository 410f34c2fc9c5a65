"""numpy arrays <-> KServe v2 tensors, by the names, datatypes and shapes of ModelMetadata."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from driftgate.client.errors import InvalidArgument
from driftgate.core._proto.inference import grpc_service_pb2 as pb

__all__ = ["TensorSpec", "decode_outputs", "encode_inputs"]

_DTYPES = {
    "BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
_LENGTH = struct.Struct("<I")

Inputs = npt.ArrayLike | Mapping[str, npt.ArrayLike]


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model: its name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, message)


def _by_name(model: str, specs: tuple[TensorSpec, ...], inputs: Inputs) -> dict[str, Any]:
    names = [s.name for s in specs]
    if not isinstance(inputs, Mapping):
        if len(specs) != 1:
            raise _invalid(
                f"model {model!r} takes {len(specs)} inputs ({', '.join(names)}): pass a "
                "mapping of input name to array"
            )
        return {specs[0].name: inputs}
    unknown = sorted(set(inputs) - set(names))
    missing = [n for n in names if n not in inputs]
    if unknown or missing:
        raise _invalid(
            f"model {model!r} takes the inputs {', '.join(names)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    return dict(inputs)


def _array(spec: TensorSpec, value: Any) -> np.ndarray[Any, Any]:
    if spec.datatype == "BYTES":
        array = np.asarray(value, dtype=object)
    else:
        try:
            array = np.asarray(value).astype(_DTYPES[spec.datatype], copy=False)
        except (KeyError, ValueError, TypeError) as exc:
            expected = f"input {spec.name!r}: expected {spec.datatype} values"
            raise _invalid(f"{expected} ({exc})") from None
    if array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis]  # one row without its batch dimension
    fits = array.ndim == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not fits:
        raise _invalid(
            f"input {spec.name!r}: expected shape {list(spec.shape)} (-1: any size), got "
            f"{list(array.shape)}"
        )
    return array


def _raw(array: np.ndarray[Any, Any]) -> bytes:
    if array.dtype != object:
        return np.ascontiguousarray(array).tobytes()
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(data)) + data)
    return b"".join(parts)


def encode_inputs(
    request: pb.ModelInferRequest, specs: tuple[TensorSpec, ...], inputs: Inputs
) -> None:
    """Add ``inputs`` to ``request`` as raw tensors, cast to the model's datatypes."""
    values = _by_name(request.model_name, specs, inputs)
    for spec in specs:
        array = _array(spec, values[spec.name])
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
        request.raw_input_contents.append(_raw(array))


def _decode_bytes(raw: bytes) -> list[str]:
    items, offset = [], 0
    while offset < len(raw):
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        items.append(raw[offset : offset + size].decode("utf-8", "surrogateescape"))
        offset += size
    return items


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray[Any, Any]]:
    """The response's outputs by name; BYTES outputs as arrays of ``str``."""
    outputs = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        shape = tuple(tensor.shape)
        if tensor.datatype == "BYTES":
            array = np.array(_decode_bytes(raw), dtype=object).reshape(shape)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[tensor.datatype]).reshape(shape)
        outputs[tensor.name] = array
    return outputs

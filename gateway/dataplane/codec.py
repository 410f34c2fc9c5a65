"""KServe v2 tensors on the wire <-> numpy arrays, with validation that names what is wrong.

The fast path is ``raw_input_contents``: ``np.frombuffer`` over the request's bytes, no copy.
Typed ``contents`` are accepted for every datatype that has a field for them. BYTES elements
are a 4-byte little-endian length followed by the bytes; the model sees them as ``str``.
Responses always carry ``raw_output_contents``, as Triton's do.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core.errors import InvalidInput, quote
from driftgate.gateway.dataplane.session import NUMPY_DTYPES, TensorSpec

__all__ = [
    "MAX_BYTES_ELEMENTS",
    "MAX_CONTENTS_ELEMENTS",
    "MAX_ELEMENTS",
    "MAX_NAME_BYTES",
    "MAX_PARAMETERS",
    "MAX_TENSORS",
    "check_request",
    "decode_bytes",
    "decode_inputs",
    "encode_bytes",
    "encode_outputs",
    "payload_bytes",
    "requested_outputs",
]

# Bounds checked before any per-element work, so that one request costs bounded time and
# memory whatever it claims (DESIGN.md, invariant 6). Model-specific bounds (input and output
# counts, shapes, rows) come from the model; these hold for every model.
#: longest input or output name, in bytes (model names follow the repository's rule)
MAX_NAME_BYTES = 256
#: most parameters on a request or on one of its tensors
MAX_PARAMETERS = 64
#: most inputs, outputs or raw_input_contents entries a request may list
MAX_TENSORS = 1024
#: most elements of one input tensor (numeric ones are also bounded by their bytes)
MAX_ELEMENTS = 1 << 26
#: most elements of one BYTES input: each becomes a Python string
MAX_BYTES_ELEMENTS = 1 << 20
#: most elements of one input sent as typed contents (each is read as a Python number);
#: raw_input_contents is the path for more
MAX_CONTENTS_ELEMENTS = 1 << 22

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
# Bytes a value of each numeric contents field takes once decoded.
_CONTENTS_WIDTH = {
    "bool_contents": 1,
    "int_contents": 4,
    "uint_contents": 4,
    "fp32_contents": 4,
    "int64_contents": 8,
    "uint64_contents": 8,
    "fp64_contents": 8,
}


def check_request(request: pb.ModelInferRequest, max_request_id_bytes: int) -> None:
    """Refuse a request whose scalar fields or lists are beyond every model's bounds.

    O(1) apart from measuring the id: it runs before routing, which hashes the id, and
    before anything walks the request's lists.
    """
    if _too_long(request.id, max_request_id_bytes):
        raise InvalidInput(
            f"request id {quote(request.id)} is longer than {max_request_id_bytes} bytes "
            "(the gateway's --max-request-id-bytes)"
        )
    if len(request.model_version) > 20:  # more digits than any int64
        raise InvalidInput(
            f"model_version must be an integer version, got {quote(request.model_version)}"
        )
    if len(request.parameters) > MAX_PARAMETERS:
        raise InvalidInput(
            f"the request has {len(request.parameters)} parameters; at most {MAX_PARAMETERS} "
            "are accepted"
        )
    inputs, outputs = request.inputs, request.outputs
    for field, tensors in (
        ("inputs", inputs),
        ("outputs", outputs),
        ("raw_input_contents", request.raw_input_contents),
    ):
        if len(tensors) > MAX_TENSORS:
            raise InvalidInput(
                f"the request lists {len(tensors)} {field}; at most {MAX_TENSORS} are "
                "accepted, and a model's own count is checked next"
            )
    for given in inputs:
        _check_tensor("input", given)
    for wanted in outputs:
        _check_tensor("requested output", wanted)


def _check_tensor(kind: str, tensor: Any) -> None:
    if _too_long(tensor.name, MAX_NAME_BYTES):
        raise InvalidInput(
            f"{kind} name {quote(tensor.name)} is longer than {MAX_NAME_BYTES} bytes"
        )
    if len(tensor.parameters) > MAX_PARAMETERS:
        raise InvalidInput(
            f"{kind} {quote(tensor.name)} has {len(tensor.parameters)} parameters; "
            f"at most {MAX_PARAMETERS} are accepted"
        )


def payload_bytes(request: pb.ModelInferRequest) -> int:
    """The bytes a request's tensors carry: what ``--max-in-flight-bytes`` counts.

    ``ByteSize()`` would serialise the whole message to measure it (about 1 ms for 512 KiB of
    raw contents). Raw contents are measured by length and numeric contents by count and
    width; only BYTES contents are serialised to be measured. Call it after
    ``check_request``, which bounds the lists walked here.
    """
    size = 0
    for raw in request.raw_input_contents:
        size += len(raw)
    for tensor in request.inputs:
        if not tensor.HasField("contents"):
            continue
        contents = tensor.contents
        if contents.bytes_contents:
            size += contents.ByteSize()
        for field, width in _CONTENTS_WIDTH.items():
            size += len(getattr(contents, field)) * width
    return size


def _too_long(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8, without encoding a long one."""
    length = len(text)
    if length * 4 <= limit:  # a character takes at most four bytes
        return False
    if length > limit:  # and at least one
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limit


def requested_outputs(
    names: Sequence[str], specs: Sequence[TensorSpec], model: str
) -> tuple[str, ...]:
    """The outputs a request asks for, refused unless each is one of the model's.

    Checked before the request is decoded or run, so a wrong name costs no inference.
    """
    if not names:
        return ()
    known = {spec.name for spec in specs}
    if len(names) > len(known):
        raise InvalidInput(
            f"the request asks for {len(names)} outputs, but model {quote(model)} has "
            f"{len(known)}: {_names(sorted(known))}"
        )
    for name in names:
        if name not in known:
            raise InvalidInput(
                f"requested output {quote(name)} is not an output of model {quote(model)}; "
                f"outputs: {_names(sorted(known))}"
            )
    return tuple(names)


def decode_inputs(
    request: pb.ModelInferRequest,
    specs: Sequence[TensorSpec],
    batched: bool,
    max_rows: int,
) -> tuple[dict[str, np.ndarray], int]:
    """The request's input arrays by name, and the number of rows they carry.

    ``max_rows`` bounds the rows one request may carry; a batcher splits what exceeds a
    model's ``max_batch_size`` into chunks. Every count, rank, element count and length is
    checked against the model and the buffers before any work per element, and every error
    is an ``InvalidInput`` whose message quotes the client's strings only in part.
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
                    f"input {quote(spec.name)} carries contents although the request uses "
                    "raw_input_contents; use one or the other for all inputs"
                )
            array = _from_raw(raw[index], spec, shape)
        else:
            array = _from_contents(tensor, spec, shape)
        if batched:
            if rows >= 0 and shape[0] != rows:
                raise InvalidInput(
                    f"input {quote(spec.name)} has batch size {shape[0]} but other inputs "
                    f"have {rows}; every input must carry the same number of rows"
                )
            rows = shape[0]
        feed[tensor.name] = array
    return feed, max(rows, 1)


def _names(names: Sequence[str], shown: int = 8) -> str:
    """A bounded list of names for a message: the first ``shown``, then how many more."""
    return f"[{_listing(names, shown)}]"


def _listing(names: Sequence[str], shown: int = 8) -> str:
    listed = ", ".join(quote(name) for name in names[:shown])
    return listed + (f", and {len(names) - shown} more" if len(names) > shown else "")


def _check_names(tensors: Sequence[Any], specs: Sequence[TensorSpec], model: str) -> None:
    if len(tensors) == len(specs) == 1 and tensors[0].name == specs[0].name:
        return
    expected = [spec.name for spec in specs]
    intro = f"model {quote(model)} expects inputs {_names(expected)}"
    if len(tensors) > 2 * len(expected) + 8:
        # Decided on the count alone: a flood of inputs is never walked, sorted or counted.
        raise InvalidInput(f"{intro}; the request has {len(tensors)} inputs")
    seen: set[str] = set()
    duplicates: set[str] = set()
    for tensor in tensors:
        (duplicates if tensor.name in seen else seen).add(tensor.name)
    if duplicates:
        raise InvalidInput(f"{intro}; duplicate inputs {_listing(sorted(duplicates))}")
    missing = [name for name in expected if name not in seen]
    if missing:
        raise InvalidInput(f"{intro}; missing input {_listing(missing)}")
    known = set(expected)
    extra = [tensor.name for tensor in tensors if tensor.name not in known]
    if extra:
        raise InvalidInput(f"{intro}; unexpected input {_listing(extra)}")


def _check_shape(tensor: Any, spec: TensorSpec, batched: bool, max_rows: int) -> tuple[int, ...]:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(
            f"input {quote(spec.name)}: expected datatype {spec.datatype}, got "
            f"{_datatype(tensor.datatype)}"
        )
    if len(tensor.parameters) > MAX_PARAMETERS:
        raise InvalidInput(
            f"input {quote(spec.name)} has {len(tensor.parameters)} parameters; at most "
            f"{MAX_PARAMETERS} are accepted"
        )
    wanted = spec.shape
    rank = len(tensor.shape)  # before copying the shape: it may hold a million dimensions
    if rank != len(wanted) + batched:
        listed = _expected_shape(spec, batched)
        raise InvalidInput(
            f"input {quote(spec.name)}: expected shape [{', '.join(listed)}] "
            f"(rank {len(listed)}), got a shape of rank {rank}"
        )
    shape = tuple(tensor.shape)
    dims = shape[1:] if batched else shape
    if -1 in wanted:  # free dimensions: any size, but never a negative one
        fits = all(want in (-1, got) for want, got in zip(wanted, dims, strict=True))
        fits = fits and all(d >= 0 for d in dims)
    else:  # fixed ones (never negative): equal or not, without a walk
        fits = dims == wanted
    if not fits or (batched and shape[0] < 0):
        expected = ", ".join(_expected_shape(spec, batched))
        raise InvalidInput(
            f"input {quote(spec.name)}: expected shape [{expected}], got {list(shape)}"
        )
    if batched and (shape[0] < 1 or shape[0] > max_rows):
        raise InvalidInput(
            f"input {quote(spec.name)}: batch size {shape[0]} is outside 1..{max_rows} "
            "(the gateway's --max-request-rows)"
        )
    return shape


def _expected_shape(spec: TensorSpec, batched: bool) -> list[str]:
    return ["-1", *map(str, spec.shape)] if batched else list(map(str, spec.shape))


def _datatype(text: str) -> str:
    if text in NUMPY_DTYPES:
        return text
    return quote(text) if text else "(empty)"


def _element_count(shape: tuple[int, ...], limit: int, name: str, what: str) -> int:
    """The product of ``shape``, refused as soon as it passes ``limit``.

    Dimensions are int64 on the wire: their product can pass 2**63 (and would wrap in
    numpy), so the running product stops at the limit instead of being computed whole.
    """
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > limit:
            raise InvalidInput(
                f"input {quote(name)}: shape {list(shape)} has more than {limit} elements, "
                f"the most {what}"
            )
    return count


def _from_raw(buffer: bytes, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    if spec.datatype == "BYTES":
        name = quote(spec.name)
        count = _element_count(shape, MAX_BYTES_ELEMENTS, spec.name, "a BYTES input may have")
        # Every element takes at least its 4-byte length prefix: checked before any walk.
        if count * 4 > len(buffer):
            raise InvalidInput(
                f"input {name}: malformed BYTES: shape {list(shape)} needs {count} elements, "
                f"at least {count * 4} bytes with their 4-byte length prefixes, but "
                f"raw_input_contents holds {len(buffer)} bytes"
            )
        return _object_array(decode_bytes(buffer, count, spec.name), shape)
    dtype = NUMPY_DTYPES[spec.datatype]
    count = _element_count(shape, MAX_ELEMENTS, spec.name, "an input may have")
    if len(buffer) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {quote(spec.name)}: raw_input_contents holds {len(buffer)} bytes, but shape "
            f"{list(shape)} of {spec.datatype} needs {count * dtype.itemsize} bytes"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _object_array(values: list[str], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values  # np.array(values) would look into each string for nested sequences
    return array.reshape(shape)


def _from_contents(tensor: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    field = _CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidInput(
            f"input {quote(spec.name)}: {spec.datatype} has no typed contents field; send "
            "it in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    bytes_input = spec.datatype == "BYTES"
    limit = MAX_BYTES_ELEMENTS if bytes_input else MAX_CONTENTS_ELEMENTS
    what = "a BYTES input may have" if bytes_input else "typed contents may carry (send more raw)"
    count = _element_count(shape, limit, spec.name, what)
    if len(values) != count:
        raise InvalidInput(
            f"input {quote(spec.name)}: contents.{field} holds {len(values)} values, but "
            f"shape {list(shape)} needs {count}"
        )
    if spec.datatype == "BYTES":
        return _object_array([_utf8(value, spec.name) for value in values], shape)
    try:  # one pass over the values, no list of Python numbers on the way
        return np.fromiter(values, NUMPY_DTYPES[spec.datatype], count=count).reshape(shape)
    except OverflowError as exc:
        raise InvalidInput(
            f"input {quote(spec.name)}: a value in contents.{field} does not fit {spec.datatype}"
        ) from exc


def _utf8(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input {quote(name)}: BYTES element is not valid UTF-8 ({exc.reason} at byte "
            f"{exc.start} of {len(value)})"
        ) from exc


def decode_bytes(buffer: bytes, count: int, name: str) -> list[str]:
    """Split a v2 BYTES buffer into exactly ``count`` strings, refusing anything malformed.

    At most ``count`` elements are read (the caller bounds it by the buffer's length), and
    bytes left after them are an error: a buffer never costs more than its shape says.
    """
    if count and len(buffer) == count * 4 and buffer.count(0) == len(buffer):
        return [""] * count  # all empty: a common padding, and a cheap flood to refuse
    out: list[str] = []
    offset, end = 0, len(buffer)
    unpack = _LENGTH.unpack_from
    for index in range(count):
        if offset + 4 > end:
            raise InvalidInput(
                f"input {quote(name)}: malformed BYTES: element {index} of {count} has "
                f"{end - offset} bytes where a 4-byte length prefix was expected"
            )
        (length,) = unpack(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input {quote(name)}: malformed BYTES: element {index} claims {length} "
                f"bytes but only {end - offset} remain"
            )
        out.append(_utf8(buffer[offset : offset + length], name))
        offset += length
    if offset != end:
        raise InvalidInput(
            f"input {quote(name)}: BYTES holds {end - offset} bytes after the {count} "
            "elements its shape needs"
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
    wanted = set(requested)
    unknown = wanted - {spec.name for spec in specs}
    if unknown:
        raise InvalidInput(
            f"requested output {quote(min(unknown))} is not an output of model {quote(model)}; "
            f"outputs: {_names([spec.name for spec in specs])}"
        )
    tensors, raw = [], []
    for spec, array in zip(specs, outputs, strict=True):
        if wanted and spec.name not in wanted:
            continue
        tensors.append(_output_tensor(spec.name, spec.datatype, array.shape))
        if spec.datatype == "BYTES":
            raw.append(encode_bytes(array))
        else:
            raw.append(np.ascontiguousarray(array, dtype=spec.dtype).tobytes())
    return tensors, raw


@functools.lru_cache(maxsize=4096)
def _output_tensor(
    name: str, datatype: str, shape: tuple[int, ...]
) -> pb.ModelInferResponse.InferOutputTensor:
    """An output's description, made once per name, type and shape.

    Building the message costs about 2 µs a request and output; a response copies the
    messages it is given, so one shared instance is never changed by a request.
    """
    return pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)

"""Fuzzing the request decoder: any ModelInferRequest either decodes to arrays that match the
model's inputs or is refused with InvalidInput, never another exception, and quickly.

No sockets: ``decode_inputs`` is called directly, as the version runtime calls it.
"""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core.errors import InvalidInput
from driftgate.gateway.dataplane.codec import (
    MAX_PARAMETERS,
    check_request,
    decode_bytes,
    decode_inputs,
    encode_bytes,
    payload_bytes,
    requested_outputs,
)
from driftgate.gateway.dataplane.session import NUMPY_DTYPES, TensorSpec

MAX_ROWS = 64

# (specs, batched): the shapes of models the gateway serves.
MODELS: list[tuple[tuple[TensorSpec, ...], bool]] = [
    ((TensorSpec("X", "FP32", (4,)),), True),
    ((TensorSpec("x", "BYTES", (3,)),), True),
    ((TensorSpec("x", "FP32", (-1,)),), True),  # a free width
    ((TensorSpec("idx", "INT64", (2, 2)),), False),  # does not batch
    (
        (
            TensorSpec("age", "FP32", (1,)),
            TensorSpec("city", "BYTES", (1,)),
            TensorSpec("flag", "BOOL", (1,)),
            TensorSpec("half", "FP16", (1,)),
        ),
        True,
    ),
]
DATATYPES = sorted(NUMPY_DTYPES)
CONTENTS = {
    "BOOL": ("bool_contents", st.booleans()),
    "INT8": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT16": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT32": ("int_contents", st.integers(-(2**31), 2**31 - 1)),
    "INT64": ("int64_contents", st.integers(-(2**63), 2**63 - 1)),
    "UINT8": ("uint_contents", st.integers(0, 2**32 - 1)),
    "UINT16": ("uint_contents", st.integers(0, 2**32 - 1)),
    "UINT32": ("uint_contents", st.integers(0, 2**32 - 1)),
    "UINT64": ("uint64_contents", st.integers(0, 2**64 - 1)),
    "FP32": ("fp32_contents", st.floats(width=32)),
    "FP64": ("fp64_contents", st.floats()),
    "BYTES": ("bytes_contents", st.binary(max_size=8)),
}

dims = st.one_of(
    st.integers(0, 5),
    st.integers(-3, -1),
    st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63 - 1, -(2**63)]),
)


@st.composite
def bytes_buffers(draw: st.DrawFn) -> bytes:
    """A BYTES buffer: well-formed, truncated, lying prefixes, or noise."""
    elements = draw(st.lists(st.binary(max_size=6), max_size=12))
    buffer = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    damage = draw(st.sampled_from(["none", "truncate", "lie", "noise", "invalid utf-8"]))
    if damage == "truncate" and buffer:
        buffer = buffer[: draw(st.integers(0, len(buffer) - 1))]
    elif damage == "lie":
        buffer = struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + buffer
    elif damage == "noise":
        buffer = draw(st.binary(max_size=40))
    elif damage == "invalid utf-8":
        buffer += struct.pack("<I", 2) + b"\xff\xfe"
    return buffer


@st.composite
def tensors(draw: st.DrawFn, specs: tuple[TensorSpec, ...], raw: bool) -> tuple[Any, bytes]:
    spec = draw(st.sampled_from(specs))
    name = draw(st.one_of(st.just(spec.name), st.text(max_size=5)))
    datatype = draw(
        st.one_of(st.just(spec.datatype), st.sampled_from(DATATYPES), st.text(max_size=4))
    )
    rank = len(spec.shape) + 1
    shape = draw(
        st.one_of(
            st.lists(dims, min_size=rank, max_size=rank),
            st.lists(dims, max_size=6),
            st.builds(lambda tail: [draw(st.integers(1, 3)), *tail], st.just(list(spec.shape))),
        )
    )
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    field, values = CONTENTS.get(datatype, CONTENTS["FP32"])
    if not raw or draw(st.booleans()) and draw(st.booleans()):
        getattr(tensor.contents, field).extend(draw(st.lists(values, max_size=12)))
    if datatype == "BYTES" or spec.datatype == "BYTES":
        buffer = draw(bytes_buffers())
    else:
        buffer = draw(st.binary(max_size=64))
    return tensor, buffer


@st.composite
def requests(draw: st.DrawFn) -> tuple[pb.ModelInferRequest, tuple[TensorSpec, ...], bool]:
    specs, batched = draw(st.sampled_from(MODELS))
    raw = draw(st.booleans())
    drawn = draw(st.lists(tensors(specs, raw), max_size=len(specs) + 2))
    request = pb.ModelInferRequest(model_name="m", inputs=[t for t, _ in drawn])
    if raw:
        buffers = [b for _, b in drawn]
        if draw(st.booleans()):  # a wrong number of raw entries
            buffers = buffers[: draw(st.integers(0, len(buffers)))] + [b"\x00" * 4]
        request.raw_input_contents.extend(buffers)
    return request, specs, batched


def _check_consistent(
    request: pb.ModelInferRequest,
    specs: tuple[TensorSpec, ...],
    batched: bool,
    feed: dict,
    rows: int,
) -> None:
    """What decode_inputs returned agrees with the model's inputs and the request."""
    assert sorted(feed) == sorted(s.name for s in specs)
    for index, tensor in enumerate(request.inputs):
        spec = next(s for s in specs if s.name == tensor.name)
        array = feed[spec.name]
        assert tensor.datatype == spec.datatype
        assert array.dtype == spec.dtype
        assert list(array.shape) == list(tensor.shape)
        dims = array.shape[1:] if batched else array.shape
        assert all(want in (-1, got) for want, got in zip(spec.shape, dims, strict=True))
        if batched:
            assert 1 <= array.shape[0] <= MAX_ROWS and rows == array.shape[0]
        if request.raw_input_contents and spec.datatype != "BYTES":
            assert array.tobytes() == request.raw_input_contents[index]
        if spec.datatype == "BYTES":
            assert all(isinstance(v, str) for v in array.reshape(-1))
    if not batched:
        assert rows == 1


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests())
def test_decode_returns_arrays_that_match_the_model_or_refuses(case: tuple) -> None:
    request, specs, batched = case
    tracemalloc.start()
    try:
        feed, rows = decode_inputs(request, specs, batched, MAX_ROWS)
    except InvalidInput as exc:
        event("refused")
        assert len(exc.message) < 2000  # client strings are quoted in part only
        feed = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # One request costs memory bounded by its own size (a BYTES element becomes a Python
    # string of ~50 bytes), never by what its shapes claim.
    assert peak < 64 * request.ByteSize() + (4 << 20)
    if feed is not None:
        event("decoded")
        _check_consistent(request, specs, batched, feed, rows)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=6).flatmap(
        lambda words: st.tuples(st.just(words), st.integers(1, 4))
    )
)
def test_well_formed_bytes_round_trip(case: tuple[list[str], int]) -> None:
    words, rows = case
    values = np.array(words * rows, dtype=object).reshape(rows, len(words))
    spec = TensorSpec("x", "BYTES", (len(words),))
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="BYTES", shape=[rows, len(words)])
    request.raw_input_contents.append(encode_bytes(values))
    feed, decoded_rows = decode_inputs(request, (spec,), True, MAX_ROWS)
    assert decoded_rows == rows
    assert feed["x"].tolist() == values.tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["FP32", "FP64", "INT64", "INT32", "UINT8", "BOOL", "FP16"]),
    st.integers(1, 5),
    st.integers(1, 4),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_well_formed_numeric_round_trip(
    datatype: str, rows: int, width: int, raw: bool, rng: Any
) -> None:
    dtype = NUMPY_DTYPES[datatype]
    data = np.frombuffer(rng.randbytes(rows * width * dtype.itemsize), dtype=dtype)
    data = data.reshape(rows, width)
    if datatype == "BOOL":
        data = (data.view(np.uint8) % 2).astype(bool)  # only 0 and 1 are booleans
    spec = TensorSpec("x", datatype, (width,))
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[rows, width])
    if raw or datatype == "FP16":
        request.raw_input_contents.append(data.tobytes())
    else:
        getattr(tensor.contents, CONTENTS[datatype][0]).extend(data.reshape(-1).tolist())
    feed, _ = decode_inputs(request, (spec,), True, MAX_ROWS)
    if raw or datatype == "FP16":
        assert feed["x"].tobytes() == data.tobytes()
    else:  # through Python numbers: NaN payloads may change, NaN stays NaN
        np.testing.assert_array_equal(feed["x"], data)


# -- the bounds, one by one ---------------------------------------------------------------


def _bytes_request(shape: list[int], buffer: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(buffer)
    return request


def _refused(call: Any, *fragments: str, size: int = 0) -> str:
    """Refused with a message naming ``fragments``, before any per-element work: the
    refusal allocates less than a megabyte beside one copy of the request's ``size`` bytes
    (protobuf hands each raw buffer out as a copy), whatever its shapes claim (a walk over
    its elements would make an object of each)."""
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size + (1 << 20)
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value.message


FREE_BYTES = (TensorSpec("x", "BYTES", (-1,)),)


def test_a_64_mib_buffer_of_empty_bytes_elements_is_refused_before_any_walk() -> None:
    buffer = bytes(64 << 20)  # 16M zero-length prefixes
    claimed = _bytes_request([1, 2**24], buffer)
    _refused(
        lambda: decode_inputs(claimed, FREE_BYTES, True, MAX_ROWS),
        "more than 1048576 elements",
        size=len(buffer),
    )
    # Within the element bound, the walk stops after the shape's elements.
    bounded = _bytes_request([1, 1000], buffer)
    _refused(
        lambda: decode_inputs(bounded, FREE_BYTES, True, MAX_ROWS),
        "bytes after the 1000 elements",
        size=len(buffer),
    )


def test_bytes_elements_are_counted_against_the_buffer_first() -> None:
    _refused(
        lambda: decode_inputs(_bytes_request([1, 1000], bytes(400)), FREE_BYTES, True, MAX_ROWS),
        "malformed BYTES",
        "at least 4000 bytes",
        "holds 400 bytes",
    )
    assert decode_bytes(bytes(4000), 1000, "x") == [""] * 1000


def test_shapes_whose_product_overflows_int64_are_refused() -> None:
    spec = (TensorSpec("x", "FP32", (-1, -1)),)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2**62, 2**62])
    request.raw_input_contents.append(b"")
    _refused(lambda: decode_inputs(request, spec, True, MAX_ROWS), "more than")


@pytest.mark.parametrize(
    ("spec_shape", "shape", "expected"),
    [
        ((-1,), [1, -1], "expected shape [-1, -1], got [1, -1]"),  # a free width, negative
        ((4,), [1, 5], "expected shape [-1, 4], got [1, 5]"),
        ((4,), [-2, 4], "expected shape [-1, 4], got [-2, 4]"),  # a negative batch
        ((4,), [0, 4], "batch size 0 is outside 1.."),
        ((2, -1), [1, 3, 7], "expected shape [-1, 2, -1], got [1, 3, 7]"),
    ],
)
def test_a_shape_that_does_not_fit_the_model_is_refused_with_both_shapes(
    spec_shape: tuple[int, ...], shape: list[int], expected: str
) -> None:
    spec = (TensorSpec("x", "FP32", spec_shape),)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(b"")
    _refused(lambda: decode_inputs(request, spec, True, MAX_ROWS), expected)


def test_a_million_dimensions_are_refused_by_rank_without_echoing_them() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="X", datatype="FP32", shape=[1] * 1_000_000)
    message = _refused(lambda: decode_inputs(request, MODELS[0][0], True, MAX_ROWS), "rank 1000000")
    assert len(message) < 300


def test_two_hundred_thousand_inputs_of_one_name_are_refused_by_their_count() -> None:
    request = pb.ModelInferRequest(model_name="m")
    for _ in range(200_000):
        request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    message = _refused(
        lambda: decode_inputs(request, MODELS[0][0], True, MAX_ROWS), "200000 inputs"
    )
    assert len(message) < 300
    few = pb.ModelInferRequest(model_name="m")
    for _ in range(3):
        few.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    _refused(lambda: decode_inputs(few, MODELS[0][0], True, MAX_ROWS), "duplicate inputs 'X'")


def test_long_client_strings_are_quoted_in_part() -> None:
    name = "n" * 100_000
    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
    message = _refused(lambda: decode_inputs(request, MODELS[0][0], True, MAX_ROWS))
    assert "(100000 bytes)" in message and len(message) < 500
    _refused(lambda: requested_outputs([name], MODELS[0][0], name), "(100000 bytes)")


def test_request_level_bounds() -> None:
    _refused(lambda: check_request(pb.ModelInferRequest(id="i" * 257), 256), "longer than 256")
    check_request(pb.ModelInferRequest(id="i" * 256), 256)
    _refused(
        lambda: check_request(pb.ModelInferRequest(id="é" * 200), 256), "(400 bytes)"
    )  # characters are not bytes
    _refused(lambda: check_request(pb.ModelInferRequest(model_version="9" * 5000), 256))
    flood = pb.ModelInferRequest()
    for i in range(MAX_PARAMETERS + 1):
        flood.parameters[f"p{i}"].bool_param = True
    _refused(lambda: check_request(flood, 256), "parameters")
    named = pb.ModelInferRequest()
    named.inputs.add(name="n" * 257)
    _refused(lambda: check_request(named, 256), "input name", "longer than 256 bytes")
    outputs = pb.ModelInferRequest()
    for _ in range(2000):
        outputs.outputs.add(name="label")
    _refused(lambda: check_request(outputs, 256), "2000 outputs")
    _refused(lambda: requested_outputs(["a", "b", "c"], MODELS[0][0], "m"), "asks for 3 outputs")


def test_payload_bytes_counts_what_the_tensors_take_once_decoded() -> None:
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="X", datatype="FP32", shape=[4096, 32])
    raw.raw_input_contents.append(np.ones((4096, 32), np.float32).tobytes())
    assert payload_bytes(raw) == 4096 * 32 * 4
    assert payload_bytes(raw) <= raw.ByteSize()

    typed = pb.ModelInferRequest(model_name="m")
    add = typed.inputs.add
    add(name="a", datatype="FP32", shape=[10]).contents.fp32_contents.extend([1.5] * 10)
    add(name="b", datatype="INT64", shape=[5]).contents.int64_contents.extend([1] * 5)
    add(name="c", datatype="BOOL", shape=[3]).contents.bool_contents.extend([True] * 3)
    words = typed.inputs.add(name="d", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"ab", b"cde"])
    typed.inputs.add(name="e", datatype="FP32", shape=[0])  # no contents at all
    # int64 as decoded (8 bytes each), not as varints on the wire (1 byte each here)
    assert payload_bytes(typed) == 40 + 40 + 3 + words.contents.ByteSize()

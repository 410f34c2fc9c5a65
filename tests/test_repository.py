"""The model repository: names, versions, atomic writes, Triton-style dirs, checksums."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import onnx
import pytest
from onnx import TensorProto, helper

from driftgate.core.errors import InvalidInput, ModelNotFound
from driftgate.core.repository import (
    CorruptVersion,
    Repository,
    tensor_schema,
    validate_model_name,
)


def _populate(payload: bytes = b"onnx-bytes", meta: dict | None = None):
    def populate(directory):
        (directory / "model.onnx").write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        (directory / "model.json").write_text(json.dumps(meta or {"sha256": digest}))

    return populate


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "..", "a" * 65, "a\x00b", "é"])
def test_invalid_names_are_refused_before_touching_the_disk(tmp_path, name):
    root = tmp_path / "does-not-exist"
    repo = Repository(root)
    with pytest.raises(InvalidInput, match="invalid model name"):
        validate_model_name(name)
    with pytest.raises(InvalidInput):
        repo.write_version(name, _populate())
    with pytest.raises(InvalidInput):
        repo.versions(name)
    assert not root.exists()


def test_valid_names_pass():
    assert validate_model_name("iris-v2.1_A") == "iris-v2.1_A"
    assert validate_model_name("a" * 64) == "a" * 64


def test_write_version_numbers_and_stamps(tmp_path):
    repo = Repository(tmp_path)
    assert repo.write_version("m", _populate()) == 1
    assert repo.write_version("m", _populate()) == 2
    assert repo.versions("m") == [1, 2]
    assert repo.models() == ["m"]
    meta = repo.metadata("m", 2)
    assert meta["name"] == "m" and meta["version"] == 2
    assert repo.read_model_bytes("m", 1) == b"onnx-bytes"
    assert repo.next_version("m") == 3
    assert repo.next_version("new-model") == 1
    assert (tmp_path / "m" / "1").stat().st_mode & 0o777 == 0o755


def test_unknown_model_and_version_raise_model_not_found(tmp_path):
    repo = Repository(tmp_path)
    with pytest.raises(ModelNotFound, match="'ghost'"):
        repo.versions("ghost")
    repo.write_version("m", _populate())
    with pytest.raises(ModelNotFound, match="no version 7"):
        repo.metadata("m", 7)
    with pytest.raises(InvalidInput):
        repo.version_dir("m", -1)


def test_concurrent_writers_get_distinct_versions(tmp_path):
    repo = Repository(tmp_path)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def write():
        barrier.wait()
        results.append(repo.write_version("m", _populate()))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    assert repo.versions("m") == list(range(1, 9))
    for v in results:
        assert repo.metadata("m", v)["version"] == v


def test_failing_populate_leaves_nothing(tmp_path):
    repo = Repository(tmp_path)

    def populate(directory):
        (directory / "model.onnx").write_bytes(b"x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        repo.write_version("m", populate)
    assert list((tmp_path / "m").iterdir()) == []
    assert repo.versions("m") == []


def test_stale_temp_dirs_are_ignored_then_cleaned(tmp_path):
    repo = Repository(tmp_path)
    model_dir = tmp_path / "m"
    old, fresh = model_dir / ".tmp-old", model_dir / ".tmp-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert repo.versions("m") == []
    assert repo.write_version("m", _populate()) == 1
    assert not old.exists()
    assert fresh.exists()
    assert repo.versions("m") == [1]


def test_sha256_mismatch_raises_corrupt_version(tmp_path):
    repo = Repository(tmp_path)
    repo.write_version("m", _populate(meta={"sha256": "0" * 64}))
    with pytest.raises(CorruptVersion, match="CorruptVersion") as info:
        repo.read_model_bytes("m", 1)
    assert "0" * 64 in str(info.value)


def test_deployment_round_trip(tmp_path):
    repo = Repository(tmp_path)
    repo.write_version("m", _populate())
    assert repo.deployment("m") is None
    state = {"stable": 1, "canary": {"version": 2, "weight": 0.1}, "shadow": None}
    repo.write_deployment("m", state)
    assert repo.deployment("m") == state
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(ModelNotFound):
        repo.write_deployment("ghost", state)


def _triton_model() -> bytes:
    x = helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 3])
    names = helper.make_tensor_value_info("NAMES", TensorProto.STRING, ["batch"])
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"]),
            helper.make_node("Constant", [], ["NAMES"], value_strings=["a"]),
        ],
        "g",
        [x],
        [y, names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.mark.parametrize("with_config", [False, True])
def test_triton_style_directory_loads(tmp_path, with_config):
    version_dir = tmp_path / "triton_model" / "1"
    version_dir.mkdir(parents=True)
    data = _triton_model()
    (version_dir / "model.onnx").write_bytes(data)
    if with_config:
        (tmp_path / "triton_model" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    repo = Repository(tmp_path)
    assert repo.models() == ["triton_model"]
    assert repo.versions("triton_model") == [1]
    meta = repo.metadata("triton_model", 1)
    features = ["INPUT0[0]", "INPUT0[1]", "INPUT0[2]"]
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [3], "features": features}
    ]
    assert meta["outputs"] == [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [3]},
        {"name": "NAMES", "datatype": "BYTES", "shape": []},
    ]
    assert meta["opset"] == 17
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert repo.reference("triton_model", 1) is None
    assert repo.read_model_bytes("triton_model", 1) == data
    onnx.checker.check_model(onnx.load_model_from_string(data))


def test_triton_metadata_matches_the_whole_graph(tmp_path):
    """Metadata is read from the graph's header alone, and agrees with the whole model's.

    The graph lists its weights among its inputs (as exporters did before IR version 4) and
    imports the ML domain before the default one.
    """
    weights = helper.make_tensor("W", TensorProto.FLOAT, [512, 256], [0.5] * (512 * 256))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 512]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [512, 256]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 256])],
        [weights],
    )
    opsets = [helper.make_opsetid("ai.onnx.ml", 3), helper.make_opsetid("", 15)]
    data = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    (tmp_path / "weights_as_input" / "1").mkdir(parents=True)
    (tmp_path / "weights_as_input" / "1" / "model.onnx").write_bytes(data)
    meta = Repository(tmp_path).metadata("weights_as_input", 1)
    whole = onnx.load_model_from_string(data).graph
    assert meta["inputs"] == [
        {**tensor_schema(whole.input[0]), "features": [f"X[{i}]" for i in range(512)]}
    ]
    assert (
        meta["outputs"]
        == [tensor_schema(whole.output[0])]
        == [{"name": "Y", "datatype": "FP32", "shape": [256]}]
    )
    assert meta["opset"] == 15
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()

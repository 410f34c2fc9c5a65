"""Every RPC of the v2 / Triton protocol, health and reflection, through real clients."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import Zoo, message_of, run_gateway, status_of

pytestmark = pytest.mark.integration


def lr_inputs(X: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("X", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return [tensor]


def expected(zoo: Zoo, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels and probabilities from onnxruntime in this process, on the same model."""
    session = ort.InferenceSession(zoo.logistic.onnx, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"X": X})
    return label, probabilities


def test_server_live_ready_and_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lr")
    assert client.is_model_ready("lr", "1")
    assert not client.is_model_ready("lr", "7")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata_lists_exactly_the_implemented_extensions(
    client: grpcclient.InferenceServerClient,
) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "driftgate"
    assert metadata.version
    assert sorted(metadata.extensions) == [
        "model_configuration",
        "model_repository",
        "statistics",
    ]


def test_model_metadata_has_batch_dimension_and_datatypes(
    client: grpcclient.InferenceServerClient,
) -> None:
    metadata = client.get_model_metadata("lr", as_json=True)
    assert metadata["name"] == "lr"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "4"]}]
    outputs = {o["name"]: o for o in metadata["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == ["-1"]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == ["-1", "2"]


def test_model_config_reports_batching_and_dims_without_batch_dim(
    client: grpcclient.InferenceServerClient,
) -> None:
    config = client.get_model_config("lr", as_json=True)["config"]
    assert config["name"] == "lr"
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": ["4"]}]
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["probabilities"]["data_type"] == "TYPE_FP32"
    assert outputs["probabilities"]["dims"] == ["2"]
    assert outputs["label"]["data_type"] == "TYPE_INT64"
    assert "dynamic_batching" in config


@pytest.fixture(scope="module")
def unbatched_gateway(
    zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(zoo.repo, tmp_path_factory.mktemp("nobatch"), "--batching", "off")


def test_model_config_without_dynamic_batching_when_batching_is_off(
    zoo: Zoo, unbatched_gateway: DriftgateProcess
) -> None:
    with grpcclient.InferenceServerClient(unbatched_gateway.address) as triton:
        config = triton.get_model_config("lr", as_json=True)["config"]
        assert config["max_batch_size"] > 0
        assert "dynamic_batching" not in config
        # and it still answers
        X = zoo.logistic.X[:5]
        result = triton.infer("lr", lr_inputs(X))
        np.testing.assert_array_equal(result.as_numpy("label"), expected(zoo, X)[0])


def test_infer_matches_onnxruntime_in_process(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    X = zoo.logistic.X[:17]
    result = client.infer("lr", lr_inputs(X))
    label, probabilities = expected(zoo, X)
    assert result.as_numpy("label").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), zoo.logistic.estimator.predict(X))
    response = result.get_response()
    assert response.model_name == "lr"
    assert response.model_version == "1"


def test_infer_returns_only_the_requested_output(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    X = zoo.logistic.X[:3]
    result = client.infer(
        "lr", lr_inputs(X), outputs=[grpcclient.InferRequestedOutput("probabilities")]
    )
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert result.as_numpy("label") is None
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(zoo, X)[1], rtol=1e-6)


def test_async_infer_with_callbacks(zoo: Zoo, client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue = queue.Queue()
    for i in range(5):
        X = zoo.logistic.X[i * 4 : i * 4 + 4]
        client.async_infer(
            "lr",
            lr_inputs(X),
            callback=lambda result, error, i=i: answers.put((i, result, error)),
            request_id=f"cb-{i}",
        )
    seen = {}
    for _ in range(5):
        i, result, error = answers.get(timeout=10)
        assert error is None
        seen[i] = result
    for i, result in seen.items():
        X = zoo.logistic.X[i * 4 : i * 4 + 4]
        assert result.get_response().id == f"cb-{i}"
        np.testing.assert_array_equal(result.as_numpy("label"), expected(zoo, X)[0])


def test_aio_client(zoo: Zoo, gateway: DriftgateProcess) -> None:
    async def main() -> None:
        triton = aioclient.InferenceServerClient(gateway.address)
        try:
            assert await triton.is_server_ready()
            assert await triton.is_model_ready("lr")
            batches = [zoo.logistic.X[i : i + 2] for i in range(0, 20, 2)]
            results = await asyncio.gather(*(triton.infer("lr", lr_inputs(X)) for X in batches))
            for X, result in zip(batches, results, strict=True):
                np.testing.assert_allclose(
                    result.as_numpy("probabilities"), expected(zoo, X)[1], rtol=1e-6
                )
            stats = await triton.get_inference_statistics("lr", as_json=True)
            assert stats["model_stats"][0]["name"] == "lr"
        finally:
            await triton.close()

    asyncio.run(main())


def test_statistics_count_the_requests_sent(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    def stats() -> dict:
        model_stats = client.get_inference_statistics("lr_stats", as_json=True)["model_stats"]
        assert [(s["name"], s["version"]) for s in model_stats] == [("lr_stats", "1")]
        return model_stats[0]

    before = stats()
    for rows in (1, 3, 5):
        client.infer("lr_stats", lr_inputs(zoo.logistic.X[:rows]))
    with pytest.raises(InferenceServerException):
        client.infer("lr_stats", lr_inputs(zoo.logistic.X[:2, :3]))
    after = stats()

    def count(entry: dict, *path: str) -> int:
        for key in path:
            entry = entry.get(key, {})
        return int(entry or 0)

    assert count(after, "inference_count") - count(before, "inference_count") == 9
    assert count(after, "execution_count") - count(before, "execution_count") == 3
    success = ("inference_stats", "success", "count")
    fail = ("inference_stats", "fail", "count")
    assert count(after, *success) - count(before, *success) == 3
    assert count(after, *fail) - count(before, *fail) == 1
    assert int(after["last_inference"]) > 0
    assert {int(b["batch_size"]) for b in after["batch_stats"]} >= {1, 3, 5}


def test_repository_index_load_and_unload(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    entries = {(m["name"], m["version"]): m for m in index}
    assert entries[("lr_unload", "1")]["state"] == "READY"
    assert entries[("twover", "2")]["state"] == "READY"

    X = zoo.logistic.X[:2]
    client.unload_model("lr_unload")
    assert not client.is_model_ready("lr_unload")
    with pytest.raises(InferenceServerException) as info:
        client.infer("lr_unload", lr_inputs(X))
    assert status_of(info.value) == "NOT_FOUND"
    assert "lr_unload" in message_of(info.value)
    index = client.get_model_repository_index(as_json=True)["models"]
    entry = next(m for m in index if m["name"] == "lr_unload")
    assert entry["state"] == "UNAVAILABLE"
    ready_only = client.get_model_repository_index(as_json=True)  # everything listed
    assert any(m["name"] == "lr_unload" for m in ready_only["models"])

    client.load_model("lr_unload")
    assert client.is_model_ready("lr_unload")
    result = client.infer("lr_unload", lr_inputs(X))
    np.testing.assert_array_equal(result.as_numpy("label"), expected(zoo, X)[0])


def test_load_of_unknown_model_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.load_model("no_such_model")
    assert status_of(info.value) == "NOT_FOUND"
    assert "no_such_model" in message_of(info.value)


def test_stream_infer_answers_each_request_with_its_id(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(6):
            X = zoo.logistic.X[i : i + 1 + i % 3]
            client.async_stream_infer("lr", lr_inputs(X), request_id=f"stream-{i}")
        # a bad request in the middle gets an error, and the stream goes on
        client.async_stream_infer("lr", lr_inputs(zoo.logistic.X[:1, :2]), request_id="bad")
        client.async_stream_infer("lr", lr_inputs(zoo.logistic.X[:2]), request_id="after")
        results, errors = {}, []
        for _ in range(8):
            result, error = answers.get(timeout=10)
            if error is not None:
                errors.append(error)
            else:
                results[result.get_response().id] = result
    finally:
        client.stop_stream()
    assert sorted(results) == sorted([f"stream-{i}" for i in range(6)] + ["after"])
    for i in range(6):
        X = zoo.logistic.X[i : i + 1 + i % 3]
        np.testing.assert_array_equal(results[f"stream-{i}"].as_numpy("label"), expected(zoo, X)[0])
    assert len(errors) == 1
    assert "expected shape [-1, 4], got [1, 2]" in message_of(errors[0])


def test_health_check_for_server_and_each_model(gateway: DriftgateProcess) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service="lr")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service="mixed")).status == serving
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no_such_model"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(gateway: DriftgateProcess) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_unimplemented_rpc(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_system_shared_memory_status()
    assert status_of(info.value) == "UNIMPLEMENTED"


# -- request ids and versions ---------------------------------------------------------------


def test_request_id_is_echoed(zoo: Zoo, client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("lr_ids", lr_inputs(zoo.logistic.X[:1]), request_id="order-42")
    assert result.get_response().id == "order-42"


def test_generated_request_ids_are_unique(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    ids = [
        client.infer("lr_ids", lr_inputs(zoo.logistic.X[:1])).get_response().id for _ in range(20)
    ]
    assert all(ids)
    assert len(set(ids)) == 20


def test_model_version_names_the_version_that_answered(
    zoo: Zoo, client: grpcclient.InferenceServerClient
) -> None:
    X = zoo.logistic.X[:30]
    assert client.get_model_metadata("twover", as_json=True)["versions"] == ["1", "2"]
    default = client.infer("twover", lr_inputs(X))
    assert default.get_response().model_version == "2"  # the stable one
    for version, model in (("1", zoo.logistic), ("2", zoo.logistic_v2)):
        result = client.infer("twover", lr_inputs(X), model_version=version)
        assert result.get_response().model_version == version
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), model.estimator.predict_proba(X), atol=1e-5
        )

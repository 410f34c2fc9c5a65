"""Canary split, stickiness, pinning, shadow, promote and rollback under load, compare-and-set
and restart, against a real gateway through grpcio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import chisquare

from driftgate.gateway.router import Route, threshold
from tests.integration.control_client import control, control_stub, infer_call, infer_request
from tests.processes import start_gateway
from tests.triton.helpers import (
    identity_model,
    logistic_model,
    sample,
    scrape,
    write_deployment,
    write_version,
)

pytestmark = pytest.mark.integration

SLOW_SIZE, SLOW_STEPS = 512, 30


def slow_model() -> bytes:
    """X FP32 [-1, 4] -> label INT64 [-1] (zeros), after a fixed chain of 512x512 MatMuls.

    The chain depends on the input (so onnxruntime cannot fold it away) but not on the batch
    size: every call costs about the same, whatever the rows.
    """
    rng = np.random.default_rng(1)
    square = rng.normal(0, 0.01, (SLOW_SIZE, SLOW_SIZE)).astype(np.float32)
    inits = [
        numpy_helper.from_array(square, "a"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["X"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["a", "nothing"], ["m0"]),
    ]
    for step in range(SLOW_STEPS):
        nodes.append(helper.make_node("MatMul", [f"m{step}", "a"], [f"m{step + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"m{SLOW_STEPS}"], ["busy"], keepdims=0),
        helper.make_node("ReduceSum", ["X", "axis"], ["rows"], keepdims=0),
        helper.make_node("Mul", ["rows", "zero"], ["zeros"]),
        helper.make_node("Mul", ["busy", "zero"], ["busy0"]),
        helper.make_node("Add", ["zeros", "busy0"], ["score"]),
        helper.make_node("Cast", ["score"], ["label"], to=TensorProto.INT64),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


X = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("control-repository")
    write_version(repo, "m", 1, logistic_model(0).onnx, driftgate=True)
    write_version(repo, "m", 2, logistic_model(7).onnx, driftgate=True)
    write_version(repo, "m", 3, identity_model("FP32"))  # input "x": every copy fails
    write_version(repo, "m", 4, slow_model())  # same signature, ~100 ms a call
    write_version(repo, "m", 5, b"not an onnx model")  # can never load
    write_deployment(repo, "m", {"stable": 1})
    return repo


class Gateway:
    """The module's gateway, restartable."""

    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo, self.workdir = repo, workdir
        self.process = start_gateway(repo, workdir)
        self.channel = grpc.insecure_channel(self.process.address)

    def restart(self) -> None:
        self.channel.close()
        assert self.process.terminate() == 0
        self.process = start_gateway(self.repo, self.workdir)
        self.channel = grpc.insecure_channel(self.process.address)

    @property
    def control(self) -> Any:
        return control_stub(self.channel)

    def infer(self, request_id: str = "", **kw: object) -> str:
        response = infer_call(self.channel)(infer_request("m", X, request_id, **kw), timeout=10)
        return str(response.model_version)

    def status(self) -> control.ModelStatus:
        return self.control.GetStatus(control.GetStatusRequest(model="m")).models[0]


@pytest.fixture(scope="module")
def gw(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(repo, tmp_path_factory.mktemp("control-gateway"))
    yield gateway
    gateway.channel.close()
    assert gateway.process.terminate() == 0


async def versions_for(address: str, ids: list[str], concurrency: int = 64) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = infer_call(channel)
        out: list[str] = []
        for start in range(0, len(ids), concurrency):
            chunk = ids[start : start + concurrency]
            answers = await asyncio.gather(*(call(infer_request("m", X, i)) for i in chunk))
            out += [a.model_version for a in answers]
        return out


def test_canary_split_matches_weight_and_is_sticky(gw: Gateway) -> None:
    state = gw.control.Deploy(
        control.DeployRequest(model="m", version=2, role=control.ROLE_CANARY, canary_weight=30)
    ).state
    assert (state.stable, state.canary.version, state.canary.weight) == (1, 2, 30)
    ids = [f"order-{i}" for i in range(3000)]
    versions = asyncio.run(versions_for(gw.process.address, ids))
    canary = versions.count("2")
    assert chisquare([canary, 3000 - canary], [900, 2100]).pvalue > 0.01
    route = Route("1", "2", threshold(30))
    assert versions == [route.pick(i) for i in ids]  # the gateway routes as the core says
    assert asyncio.run(versions_for(gw.process.address, ids[:300])) == versions[:300]


def test_version_pinning(gw: Gateway) -> None:
    assert {gw.infer(f"p{i}", model_version="1") for i in range(20)} == {"1"}
    request = infer_request("m", X, "pinned")
    request.parameters["driftgate_version"].int64_param = 2
    assert infer_call(gw.channel)(request).model_version == "2"


def test_stale_revision_is_refused(gw: Gateway) -> None:
    revision = gw.status().state.revision
    with pytest.raises(grpc.RpcError) as caught:
        gw.control.SetTraffic(
            control.SetTrafficRequest(model="m", canary_weight=50, expected_revision=revision - 1)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the expected revision" in caught.value.details()
    assert gw.status().state.canary.weight == 30


def test_a_version_that_cannot_load_is_refused_and_nothing_changes(gw: Gateway) -> None:
    before = gw.status().state
    for command in (
        lambda: gw.control.Deploy(control.DeployRequest(model="m", version=5)),
        lambda: gw.control.Deploy(
            control.DeployRequest(model="m", version=5, role=control.ROLE_CANARY, canary_weight=5)
        ),
        lambda: gw.control.StartShadow(control.StartShadowRequest(model="m", version=5)),
        lambda: gw.control.Rollback(control.RollbackRequest(model="m", version=5)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            command()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 5 of model 'm' cannot be loaded" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        gw.control.Deploy(control.DeployRequest(model="m", version=42))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "version 42 of model 'm' is not in the repository" in caught.value.details()
    assert gw.status().state == before
    assert gw.infer("after-refusal") in {"1", "2"}


def test_a_failing_shadow_never_answers_nor_fails_the_primary(gw: Gateway) -> None:
    gw.control.StartShadow(control.StartShadowRequest(model="m", version=3, reason="try"))
    versions = asyncio.run(versions_for(gw.process.address, [f"s{i}" for i in range(400)]))
    assert set(versions) <= {"1", "2"}
    labels = {"model": "m", "version": "3"}

    def errors() -> float:
        samples = scrape(gw.process.metrics_port)
        return sample(samples, "driftgate_shadow_requests_total", outcome="error", **labels) or 0

    deadline = time.monotonic() + 5
    while errors() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert errors() >= 1
    assert sum(v.errors for v in gw.status().versions if v.version in (1, 2)) == 0
    gw.control.StopShadow(control.StopShadowRequest(model="m"))


def test_a_slow_shadow_never_delays_the_primary(gw: Gateway) -> None:
    gw.control.StartShadow(control.StartShadowRequest(model="m", version=4, reason="slow"))
    deadline = time.monotonic() + 60
    while not any(v.version == 4 and v.ready for v in gw.status().versions):
        assert time.monotonic() < deadline, "the shadow version did not load"
        time.sleep(0.2)
    labels = {"model": "m", "version": "4"}

    def shadow_calls() -> tuple[float, float]:
        samples = scrape(gw.process.metrics_port)
        count = sample(samples, "driftgate_shadow_duration_seconds_count", **labels) or 0.0
        total = sample(samples, "driftgate_shadow_duration_seconds_sum", **labels) or 0.0
        return count, total

    before = shadow_calls()
    slowest = 0.0
    for i in range(20):
        start = time.perf_counter()
        assert gw.infer(f"slow-{i}") in {"1", "2"}  # the shadow never answers
        slowest = max(slowest, time.perf_counter() - start)
    deadline = time.monotonic() + 20
    while shadow_calls()[0] - before[0] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    count, total = (a - b for a, b in zip(shadow_calls(), before, strict=True))
    assert count >= 3, "the shadow received no copies"
    # Had the primary waited for its copy, its slowest answer would be at least one shadow call.
    assert slowest < (total / count) / 2, (slowest, total / count)
    gw.control.StopShadow(control.StopShadowRequest(model="m"))


def load_count(gw: Gateway) -> dict[str, float]:
    """Loads of each version of m still loaded (a released version's series is removed)."""
    samples = scrape(gw.process.metrics_port)
    return {
        labels["version"]: value
        for name, labels, value in samples
        if name == "driftgate_model_load_duration_seconds_count" and labels["model"] == "m"
    }


async def load_with_commands(
    gw: Gateway,
) -> tuple[list[str], list[BaseException], dict[str, float], dict[str, float]]:
    answers: list[str] = []
    failures: list[BaseException] = []
    loads: list[dict[str, float]] = []
    start = time.monotonic()
    async with grpc.aio.insecure_channel(gw.process.address) as channel:
        call = infer_call(channel)

        async def caller(number: int) -> None:
            i = 0
            while time.monotonic() - start < 3.0:
                i += 1
                try:
                    answer = await call(infer_request("m", X, f"c{number}-{i}"), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)
                    continue
                answers.append(answer.model_version)

        async def operator() -> None:
            stub = control_stub(channel)
            await asyncio.sleep(0.8)
            await stub.Promote(control.PromoteRequest(model="m", reason="canary healthy"))
            await asyncio.sleep(0.7)
            loads.append(await asyncio.to_thread(load_count, gw))
            await stub.Rollback(control.RollbackRequest(model="m", reason="accuracy drop"))
            await asyncio.sleep(0.5)
            loads.append(await asyncio.to_thread(load_count, gw))

        await asyncio.gather(operator(), *(caller(n) for n in range(16)))
    return answers, failures, loads[0], loads[1]


def test_promote_and_rollback_under_load_fail_nothing_and_load_nothing(gw: Gateway) -> None:
    revision = gw.status().state.revision
    answers, failures, before, after = asyncio.run(load_with_commands(gw))
    assert failures == []
    assert len(answers) > 500 and set(answers) == {"1", "2"}
    # the rollback target was a warm standby: loaded once, before the rollback
    assert after == {"1": 1} and before["1"] == 1
    state = gw.status().state
    # a promotion and a rollback: two revisions
    assert (state.stable, state.HasField("canary"), state.revision) == (1, False, revision + 2)
    rollbacks = sample(scrape(gw.process.metrics_port), "driftgate_rollbacks_total", model="m")
    assert rollbacks == 1


def test_restart_serves_the_persisted_state(gw: Gateway) -> None:
    gw.control.Deploy(
        control.DeployRequest(model="m", version=2, role=control.ROLE_CANARY, canary_weight=100)
    )
    revision = gw.status().state.revision
    gw.restart()
    state = gw.status().state
    assert (state.revision, state.stable, state.canary.version) == (revision, 1, 2)
    assert {gw.infer(f"r{i}") for i in range(50)} == {"2"}
    roles = {v.version: v.role for v in gw.status().versions}
    assert roles == {1: control.ROLE_STABLE, 2: control.ROLE_CANARY}

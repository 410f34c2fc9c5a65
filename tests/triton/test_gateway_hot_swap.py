"""New versions written into the repository take traffic without a failed request; a version
that cannot load leaves the old one serving and says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from tests.processes import DriftgateProcess
from tests.triton.helpers import (
    logistic_model,
    run_gateway,
    sample,
    scrape,
    wait_until,
    write_deployment,
    write_version,
)

pytestmark = pytest.mark.integration

CONCURRENCY = 16
DURATION = 6.0
SWAPS = {1.0: 2, 2.5: 3, 4.0: 4}  # seconds into the run -> version deployed


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("swap-repository")
    onnx = logistic_model(0).onnx
    write_version(repo, "swap", 1, onnx, driftgate=True)
    write_deployment(repo, "swap", {"stable": 1})
    write_version(repo, "fragile", 1, onnx, driftgate=True)
    return repo


@pytest.fixture(scope="module")
def swap_gateway(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriftgateProcess]:
    yield from run_gateway(repo, tmp_path_factory.mktemp("swap"))


def inputs(X: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("X", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return [tensor]


async def load_with_swaps(address: str, repo: Path) -> tuple[list, list]:
    """CONCURRENCY callers for DURATION seconds while versions 2, 3, 4 are deployed."""
    onnx = logistic_model(0).onnx
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    answers: list[tuple[int, float, str]] = []  # (caller, seconds, version)
    failures: list[BaseException] = []
    start = time.monotonic()
    triton = aioclient.InferenceServerClient(address)

    async def caller(number: int) -> None:
        while (elapsed := time.monotonic() - start) < DURATION:
            try:
                result = await triton.infer("swap", inputs(X))
            except Exception as exc:  # every failure is a defect; keep them all
                failures.append(exc)
                continue
            answers.append((number, elapsed, result.get_response().model_version))

    async def deployer() -> None:
        for at, version in SWAPS.items():
            await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
            write_version(repo, "swap", version, onnx, driftgate=True)
            write_deployment(repo, "swap", {"stable": version})

    try:
        await asyncio.gather(deployer(), *(caller(i) for i in range(CONCURRENCY)))
    finally:
        await triton.close()
    return answers, failures


def test_hot_swap_under_load_fails_no_request(repo: Path, swap_gateway: DriftgateProcess) -> None:
    answers, failures = asyncio.run(load_with_swaps(swap_gateway.address, repo))
    assert failures == []
    assert len(answers) > 100
    seen = {version for _, _, version in answers}
    assert {"1", "4"} <= seen
    # the last second is served by the last version only
    assert {v for _, t, v in answers if t > DURATION - 1.0} == {"4"}
    # a caller never goes back to an older version
    for number in range(CONCURRENCY):
        versions = [int(v) for n, _, v in answers if n == number]
        assert versions == sorted(versions)

    with grpcclient.InferenceServerClient(swap_gateway.address) as triton:
        stats = triton.get_inference_statistics("swap", as_json=True)["model_stats"]
        by_version = {s["version"]: s for s in stats}
        assert "4" in by_version
        assert int(by_version["4"]["inference_count"]) > 0
        index = triton.get_model_repository_index(as_json=True)["models"]
        states = {m["version"]: m["state"] for m in index if m["name"] == "swap"}
        assert states == {"1": "UNAVAILABLE", "2": "UNAVAILABLE", "3": "UNAVAILABLE", "4": "READY"}
        assert triton.get_model_metadata("swap", as_json=True)["versions"] == ["4"]


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    repo: Path, swap_gateway: DriftgateProcess
) -> None:
    X = logistic_model(0).X[:4]
    with grpcclient.InferenceServerClient(swap_gateway.address) as triton:

        def reason(version: str) -> str:
            for entry in triton.get_model_repository_index(as_json=True)["models"]:
                if (entry["name"], entry["version"], entry["state"]) == (
                    "fragile",
                    version,
                    "UNAVAILABLE",
                ):
                    # "not deployed" until the watcher has tried to load it
                    return "" if entry["reason"] == "not deployed" else entry["reason"]
            return ""

        # version 2: not an ONNX model at all
        write_version(repo, "fragile", 2, b"this is not an onnx model", driftgate=True)
        why = wait_until(lambda: reason("2"), what="version 2 to be UNAVAILABLE")
        assert "onnxruntime refused the model" in why
        assert triton.infer("fragile", inputs(X)).get_response().model_version == "1"

        # version 3: model.json records another sha256 than model.onnx has
        write_version(repo, "fragile", 3, logistic_model(1).onnx, driftgate=True, sha256="0" * 64)
        why = wait_until(lambda: reason("3"), what="version 3 to be UNAVAILABLE")
        assert "sha256" in why
        assert "0" * 64 in why
        assert reason("2")  # still listed with its reason

        time.sleep(0.5)  # a few more scans of the repository: a failure is not retried
        result = triton.infer("fragile", inputs(X))
        assert result.get_response().model_version == "1"
        assert triton.is_model_ready("fragile")
        index = triton.get_model_repository_index(as_json=True)["models"]
        assert {"name": "fragile", "version": "1", "state": "READY"} in index

    samples = scrape(swap_gateway.metrics_port)
    failures = "driftgate_model_load_failures_total"
    assert sample(samples, failures, model="fragile", version="2") == 1
    assert sample(samples, failures, model="fragile", version="3") == 1
    assert sample(samples, "driftgate_model_loaded", model="fragile", version="1") == 1
    log = swap_gateway.log
    assert "fragile version 2 failed to load" in log
    assert "fragile version 3 failed to load" in log

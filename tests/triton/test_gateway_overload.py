"""Load shedding: past ``--max-pending-infers`` calls, ModelInfer is refused unread.

The gateway serves a slow model (a few ms a call on one inference thread, never inline) with
``--max-pending-infers 8``: a flood of 200 concurrent requests arrives far faster than it is
answered, so the calls past the eighth in progress are answered RESOURCE_EXHAUSTED with a
message naming the limit, they never reach the model (its statistics count only the served
ones), every admitted request is answered correctly, and the gateway serves normally after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.processes import DriftgateProcess
from tests.triton.helpers import (
    SLOW_WIDTH,
    message_of,
    run_gateway,
    sample,
    scrape,
    send_all,
    slow_identity_model,
    status_of,
    tensor,
    wait_until,
    write_version,
)

pytestmark = pytest.mark.integration

LIMIT = 8


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriftgateProcess]:
    repo = tmp_path_factory.mktemp("overload-repository")
    write_version(repo, "slow", 1, slow_identity_model(300))
    yield from run_gateway(
        repo,
        tmp_path_factory.mktemp("overload"),
        "--max-pending-infers", str(LIMIT), "--infer-threads", "1", "--inline-below-us", "0",
        # the flood is refused by the gateway's bound, not dropped by gRPC's queue bound first
        "--max-queued-calls", "100000",
    )  # fmt: skip


def rows(count: int, seed: int) -> list[np.ndarray]:
    generator = np.random.default_rng(seed)
    return [generator.normal(size=(1, SLOW_WIDTH)).astype(np.float32) for _ in range(count)]


def served_statistics(address: str) -> tuple[int, int]:
    with grpcclient.InferenceServerClient(address) as triton:
        stats = triton.get_inference_statistics("slow", as_json=True)["model_stats"][0]
    counts = stats.get("inference_stats", {})
    return (
        int(counts.get("success", {}).get("count", 0)),
        int(counts.get("fail", {}).get("count", 0)),
    )


def all_served(address: str, seed: int) -> bool:
    """LIMIT calls at once: True if each is answered with its own input."""
    inputs = rows(LIMIT, seed)
    results = asyncio.run(send_all(address, [("slow", [tensor("x", x, "FP32")]) for x in inputs]))
    for x, result in zip(inputs, results, strict=True):
        if isinstance(result, Exception):
            return False
        np.testing.assert_array_equal(result.as_numpy("y"), x)
    return True


def test_a_flood_past_the_pending_limit_is_shed_unread(gateway: DriftgateProcess) -> None:
    inputs = rows(200, seed=1)
    results = asyncio.run(
        send_all(gateway.address, [("slow", [tensor("x", x, "FP32")]) for x in inputs])
    )

    refused = [r for r in results if isinstance(r, Exception)]
    served = [(x, r) for x, r in zip(inputs, results, strict=True) if not isinstance(r, Exception)]
    assert refused, f"200 concurrent calls past --max-pending-infers {LIMIT}, none refused"
    assert served
    for error in refused:
        assert isinstance(error, InferenceServerException), repr(error)
        assert status_of(error) == "RESOURCE_EXHAUSTED", message_of(error)
        assert f"--max-pending-infers {LIMIT}" in message_of(error), message_of(error)
    for x, result in served:
        np.testing.assert_array_equal(result.as_numpy("y"), x)

    # Refused calls never reached the model: its statistics count the served ones only.
    assert served_statistics(gateway.address) == (len(served), 0)
    refusals = sample(
        scrape(gateway.metrics_port), "driftgate_admission_refusals_total", limit="pending"
    )
    assert refusals == len(refused)

    # Afterwards the gateway answers as before: LIMIT calls at once are all served.
    wait_until(lambda: all_served(gateway.address, seed=2), what="LIMIT calls all served")


async def _abandon(address: str, inputs: list[np.ndarray]) -> list[object]:
    """Send every request with a deadline far too short for the model to answer."""
    triton = aioclient.InferenceServerClient(address)
    try:
        return await asyncio.gather(
            *(triton.infer("slow", [tensor("x", x, "FP32")], client_timeout=0.002) for x in inputs),
            return_exceptions=True,
        )
    finally:
        await triton.close()


def test_calls_abandoned_by_their_client_free_their_place(gateway: DriftgateProcess) -> None:
    results = asyncio.run(_abandon(gateway.address, rows(50, seed=3)))
    assert any(isinstance(r, Exception) for r in results)
    # Had a cancelled call kept its place for good, LIMIT calls at once would never all pass
    # (retried: the server learns of the cancellations a moment after the client).
    wait_until(lambda: all_served(gateway.address, seed=4), what="LIMIT calls all served")

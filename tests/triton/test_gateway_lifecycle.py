"""Process life: SIGTERM drains in-flight requests and exits 0; several workers share a port."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.processes import start_gateway
from tests.triton.helpers import (
    SLOW_WIDTH,
    logistic_model,
    sample,
    scrape,
    slow_identity_model,
    status_of,
    wait_until,
    write_version,
)

pytestmark = pytest.mark.integration

GRACE = 20.0


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    write_version(repo, "slow", 1, slow_identity_model())
    gateway = start_gateway(repo, tmp_path, "--grace", str(GRACE))
    rows = [np.full((512, SLOW_WIDTH), i, dtype=np.float32) for i in range(8)]

    def all_arrived_some_in_flight() -> bool:
        # every request reached the gateway (answered or not) and some are still being answered
        samples = scrape(gateway.metrics_port)
        labels = {"model": "slow", "version": "1"}
        in_flight = sample(samples, "driftgate_inference_in_flight", **labels) or 0
        answered = sum(
            value
            for name, found, value in samples
            if name == "driftgate_inference_requests_total" and labels.items() <= found.items()
        )
        return in_flight > 0 and in_flight + answered >= len(rows)

    async def main() -> tuple[list, int]:
        triton = aioclient.InferenceServerClient(gateway.address)
        try:
            calls = [asyncio.ensure_future(triton.infer("slow", inputs(x))) for x in rows]
            await asyncio.to_thread(
                wait_until, all_arrived_some_in_flight, 10.0, "every request in flight"
            )
            gateway.process.send_signal(signal.SIGTERM)
            assert not all(call.done() for call in calls)
            results = await asyncio.gather(*calls, return_exceptions=True)
            code = await asyncio.to_thread(gateway.process.wait, GRACE + 5)
            return results, code
        finally:
            await triton.close()

    try:
        results, code = asyncio.run(main())
    except BaseException:
        gateway.terminate()
        raise
    assert code == 0, gateway.log
    for x, result in zip(rows, results, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.as_numpy("y"), x)
    assert "shutting down" in gateway.log
    assert gateway.terminate() == 0

    with grpcclient.InferenceServerClient(gateway.address) as triton:
        with pytest.raises(InferenceServerException) as info:
            triton.is_server_live(client_timeout=2)
        assert status_of(info.value) == "UNAVAILABLE"


def inputs(X: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("X" if X.shape[1] == 4 else "x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    return [tensor]


def test_two_workers_serve_one_port_with_merged_metrics(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    model = logistic_model(0)
    write_version(repo, "lr", 1, model.onnx, driftgate=True)
    gateway = start_gateway(repo, tmp_path, "--workers", "2")
    try:
        assert gateway.metrics_port > 0
        sent = 0
        for connection in range(6):  # each connection lands on one of the workers
            with grpcclient.InferenceServerClient(gateway.address) as triton:
                assert triton.is_model_ready("lr")
                for rows in range(1, 6):
                    X = model.X[connection : connection + rows]
                    result = triton.infer("lr", inputs(X), request_id=f"{connection}-{rows}")
                    assert result.get_response().id == f"{connection}-{rows}"
                    np.testing.assert_array_equal(
                        result.as_numpy("label"), model.estimator.predict(X)
                    )
                    sent += 1
        samples = scrape(gateway.metrics_port)
        requests = sample(
            samples, "driftgate_inference_requests_total", model="lr", version="1", status="OK"
        )
        assert requests == sent
        loaded = sample(samples, "driftgate_model_loaded", model="lr", version="1")
        assert loaded == 1
        loads = sample(
            samples, "driftgate_model_load_duration_seconds_count", model="lr", version="1"
        )
        assert loads == 2  # one load per worker
    finally:
        code = gateway.terminate()
    assert code == 0, gateway.log_path.read_text()

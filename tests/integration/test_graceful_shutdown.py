"""SIGTERM behind a load balancer: health first, answers during the delay, then the drain.

A real gateway with ``--shutdown-delay``: after SIGTERM the gRPC health service says
NOT_SERVING and ServerReady says false at once, while ModelInfer keeps answering until the
delay ends (the time a Kubernetes Service takes to stop routing to the pod); then the gateway
drains and exits 0. A second signal ends the delay early.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

DELAY = 4.0


def _repository(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    repository = tmp_path / "models"
    convert(LogisticRegression().fit(x, y), x, "lr", repository, labels=y)
    return repository


def _infer(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    row = np.zeros((1, 3), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="lr", raw_input_contents=[row.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    stub.ModelInfer(request, timeout=5)


def _health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _started(tmp_path: Path, delay: float = DELAY) -> DriftgateProcess:
    return start_gateway(_repository(tmp_path), tmp_path, "--shutdown-delay", str(delay))


def test_sigterm_answers_during_the_delay_with_health_not_serving(tmp_path: Path) -> None:
    gateway = _started(tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            _infer(stub)
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
            gateway.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = signalled + DELAY / 2
            while _health(channel) != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < deadline, "health still SERVING after SIGTERM"
                time.sleep(0.05)
            assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
            answered = 0
            # Requests sent during the first half of the delay are all answered.
            while time.monotonic() < signalled + DELAY / 2:
                _infer(stub)
                answered += 1
            assert answered > 0 and gateway.process.poll() is None
        assert gateway.process.wait(DELAY + 30) == 0
        assert time.monotonic() - signalled >= DELAY  # it waited the delay out
    finally:
        gateway.terminate()


def test_a_second_signal_ends_the_delay(tmp_path: Path) -> None:
    """A ten-minute delay: only the second signal can let the process exit within 30 s."""
    gateway = _started(tmp_path, delay=600)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            gateway.process.send_signal(signal.SIGTERM)
            while _health(channel) != health_pb2.HealthCheckResponse.NOT_SERVING:
                time.sleep(0.05)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(30) == 0
        assert "still answering for 600.0 s" in gateway.log
    finally:
        gateway.terminate()


STUCK_IN_RELEASE = """
import asyncio, logging
from driftgate.core.rpc import serve_until_signalled

logging.basicConfig(level=logging.INFO)


async def start():
    print("ready", flush=True)


async def release_that_never_ends():
    await asyncio.Event().wait()


asyncio.run(serve_until_signalled(start, release_that_never_ends, "gateway", 0.2, release=0.5))
"""


def test_a_process_stuck_in_shutdown_exits_with_the_stacks_of_what_it_awaited() -> None:
    """No orchestrator waits on a stuck process forever, and its log says where it hung."""
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_IN_RELEASE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "gateway did not exit within 0.7 s of the signal" in stderr
    assert "release_that_never_ends" in stderr  # the task's stack names the stuck step

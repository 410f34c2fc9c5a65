"""A version that hangs or crashes onnxruntime is quarantined, and serving goes on.

Real gateways on a shared repository. The hanging version is a real graph: an ONNX Loop of
2^62 iterations, which onnxruntime cannot be interrupted in. The load probe gives up on it
after its timeout, kills its child, writes the quarantine marker, and the good model serves
from the start; status, RepositoryIndex's reason and ``driftgate_version_quarantined`` show
it. A second gateway on the same repository reads the marker and never tries it. A crash is
the probe's child dying of SIGSEGV while it runs a version (sent by the test, as a native
fault would). A version rewritten with other bytes is loaded again. While a version hangs in
the probe, the other models' new versions load and Control answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper

from driftgate.core._proto.driftgate.control.v1 import control_pb2 as control
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.integration.control_client import control_stub, infer_call, infer_request
from tests.processes import DriftgateProcess, start_gateway
from tests.triton.helpers import logistic_model, scrape, write_version

pytestmark = pytest.mark.integration

X = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)


def _hanging_model() -> bytes:
    """Y = X after a Loop of 2^62 empty iterations: onnxruntime runs it for centuries."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    trips = helper.make_tensor("M", TensorProto.INT64, [], [2**62])
    true = helper.make_tensor("T", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["M"], value=trips),
            helper.make_node("Constant", [], ["T"], value=true),
            helper.make_node("Loop", ["M", "T", "X"], ["Y"], body=body),
        ],
        "hang",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _status(address: str, model: str) -> control.ModelStatus:
    with grpc.insecure_channel(address) as channel:
        reply = control_stub(channel).GetStatus(control.GetStatusRequest(model=model), timeout=10)
    return reply.models[0]


def _quarantined(port: int) -> set[tuple[str, str]]:
    return {
        (labels["model"], labels["version"])
        for name, labels, value in scrape(port)
        if name == "driftgate_version_quarantined" and value == 1
    }


def _serves_good(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        reply = infer_call(channel)(infer_request("good", X), timeout=10)
    assert reply.model_name == "good"


def test_a_hanging_version_is_quarantined_and_skipped_by_every_replica(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_version(repo, "good", 1, logistic_model(0).onnx, driftgate=True)
    write_version(repo, "bad", 1, _hanging_model())
    first = start_gateway(repo, tmp_path, "--load-probe-timeout", "3")
    try:
        _serves_good(first.address)
        status = _status(first.address, "bad")
        assert not status.versions
        (failed,) = status.failed
        assert failed.version == 1 and failed.quarantined
        assert "longer than 3 s" in failed.reason
        marker = json.loads((repo / "bad" / "quarantine" / "1.json").read_text())
        onnx_bytes = (repo / "bad" / "1" / "model.onnx").read_bytes()
        assert marker["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
        assert _quarantined(first.metrics_port) == {("bad", "1")}
        with grpc.insecure_channel(first.address) as channel:
            index = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                pb.RepositoryIndexRequest(), timeout=10
            )
        bad = [m for m in index.models if m.name == "bad"]
        assert bad and "quarantined" in bad[0].reason

        # A replica on the same repository reads the marker: no probe, no hang.
        second = start_gateway(repo, tmp_path, "--load-probe-timeout", "600")
        try:
            _serves_good(second.address)
            (failed,) = _status(second.address, "bad").failed
            assert failed.quarantined and failed.reason.startswith("quarantined: ")
            assert "bad version 1 quarantined" not in second.log  # it never probed it
        finally:
            assert second.terminate() == 0, second.log

        # Rewritten with other bytes, the version is loaded again.
        (repo / "bad" / "1" / "model.onnx").write_bytes(logistic_model(1).onnx)
        deadline = time.monotonic() + 30
        while not _status(first.address, "bad").versions:
            assert time.monotonic() < deadline, first.log
            time.sleep(0.2)
        assert _quarantined(first.metrics_port) == set()
    finally:
        assert first.terminate() == 0, first.log


def _probe_child(gateway: DriftgateProcess) -> int:
    """The gateway's load-probe process, once it runs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # a thread or child may end between listing it and reading its files
            for task in Path(f"/proc/{gateway.process.pid}/task").iterdir():
                for pid in (task / "children").read_text().split():
                    if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise TimeoutError(gateway.log)


def test_a_crash_while_probing_quarantines_the_version(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_version(repo, "bad", 1, _hanging_model())  # alone: the probe can only be running it
    args = ["--repository", str(repo), "--host", "127.0.0.1", "--grpc-port", "0"]
    args += ["--metrics-port", "0", "--load-probe-timeout", "600"]
    gateway = DriftgateProcess("serve", args, tmp_path, {})
    try:
        os.kill(_probe_child(gateway), signal.SIGSEGV)
        gateway.wait_ready(60)
        (failed,) = _status(gateway.address, "bad").failed
        assert failed.quarantined and "SIGSEGV" in failed.reason, failed.reason
        assert _quarantined(gateway.metrics_port) == {("bad", "1")}
        # The gateway lives on and takes a good model in.
        write_version(repo, "good", 1, logistic_model(0).onnx, driftgate=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                _serves_good(gateway.address)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, gateway.log
                time.sleep(0.2)
    finally:
        assert gateway.terminate() == 0, gateway.log


def test_a_hanging_load_holds_only_its_own_model(tmp_path: Path) -> None:
    """A ten-minute probe timeout: while "bad" hangs in it, "good" version 2 is loaded and
    served, Control answers, and health stays SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    repo = tmp_path / "models"
    write_version(repo, "good", 1, logistic_model(0).onnx, driftgate=True)
    gateway = start_gateway(repo, tmp_path, "--load-probe-timeout", "600")
    try:
        write_version(repo, "bad", 1, _hanging_model())
        deadline = time.monotonic() + 30
        while "bad" not in {m.name for m in _index(gateway.address)}:
            assert time.monotonic() < deadline, gateway.log
            time.sleep(0.2)
        time.sleep(1.0)  # a few polls: "bad" is in the probe, hanging
        write_version(repo, "good", 2, logistic_model(1).onnx, driftgate=True)
        deadline = time.monotonic() + 30
        while True:
            with grpc.insecure_channel(gateway.address) as channel:
                reply = infer_call(channel)(infer_request("good", X), timeout=10)
            if reply.model_version == "2":
                break
            assert time.monotonic() < deadline, gateway.log
            time.sleep(0.2)
        assert [v.version for v in _status(gateway.address, "good").versions] == [2]
        assert not _status(gateway.address, "bad").failed  # still being probed
        with grpc.insecure_channel(gateway.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert gateway.terminate() == 0, gateway.log


def _index(address: str) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return list(stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models)


def _niceness(pid: int) -> list[int]:
    """The nice value of every thread of ``pid``."""
    tasks = Path(f"/proc/{pid}/task")
    return [int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks.iterdir()]


def _probe_children(pid: int) -> list[int]:
    """Children of any thread of ``pid`` started by multiprocessing's ``spawn``."""
    children = [
        c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()
    ]
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads threads from /proc")
@pytest.mark.parametrize("ort_threads", [1, 3])
def test_loading_runs_below_serving_priority(tmp_path, ort_threads):
    """The probe's child and the loader threads run at a lower priority than serving; with
    more than one onnxruntime thread a session, the loader threads do not, since the threads
    a session starts would keep the lower priority of the thread that built it."""
    repo = tmp_path / "models"
    write_version(repo, "good", 1, logistic_model(0).onnx, driftgate=True)
    gateway = start_gateway(repo, tmp_path, "--ort-threads", str(ort_threads))
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            reply = infer_call(channel)(infer_request("good", X), timeout=10)
        assert reply.model_version == "1"
        threads = _niceness(gateway.process.pid)
        base = os.nice(0)
        assert threads.count(base) >= len(threads) - 2  # at most the two loader threads lower
        if ort_threads == 1:
            assert threads.count(max(base, 10)) >= 1, threads  # the loader that ran
        else:
            assert set(threads) == {base}, threads  # onnxruntime's pool serves at full priority
        probes = _probe_children(gateway.process.pid)
        assert probes, "no probe child"
        for child in probes:
            assert set(_niceness(child)) == {max(base, 10)}
    finally:
        assert gateway.terminate() == 0, gateway.log


def test_bytes_that_passed_are_probed_once(tmp_path):
    """A rollback or a version deployed again costs no second probe; a version that hung is
    probed again, since only passes are remembered."""
    from driftgate.gateway.dataplane.probe import LoadProbe, ProbeVerdict

    probe = LoadProbe(timeout=60)
    try:
        good = logistic_model(0).onnx
        assert probe.check(good).outcome == "ok"
        probe.close()  # no child left: probing these bytes again would have to start one
        assert probe.check(good) == ProbeVerdict("ok", "passed before")
        assert probe.pids == []
        assert probe.check(logistic_model(1).onnx).outcome == "ok"  # other bytes: probed
        assert len(probe.pids) == 1
    finally:
        probe.close()
    impatient = LoadProbe(timeout=2)
    try:
        hanging = _hanging_model()
        assert [impatient.check(hanging).outcome for _ in range(2)] == ["hang", "hang"]
    finally:
        impatient.close()

"""The model repository on S3: a real S3-compatible server (moto's standalone server, started
here on a free port), ``driftgate convert`` and ``driftgate serve`` with ``--repository s3://``,
the Control service through grpcio, and a second client (boto3) playing other writers."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import joblib
import numpy as np
import pytest
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression

from driftgate.core.deployment import DeploymentStore, deploy, set_traffic
from driftgate.core.errors import FailedPrecondition, Unavailable
from driftgate.core.objectstore import open_repository
from driftgate.core.repository import CorruptVersion, DeploymentConflict
from tests.integration.control_client import control, control_stub, infer_call
from tests.processes import ROOT, DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

BUCKET = "driftgate-models"
FEATURES = ("a", "b", "c")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An S3 server on 127.0.0.1 with one bucket; the AWS_* variables point at it."""
    workdir = tmp_path_factory.mktemp("s3")
    port = _free_port()
    log = (workdir / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(endpoint, timeout=1):
                return True
        except OSError:
            return server.poll() is not None  # ended: stop waiting, the next call fails

    env = {
        "AWS_ACCESS_KEY_ID": "driftgate-test",
        "AWS_SECRET_ACCESS_KEY": "driftgate-test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "DRIFTGATE_REPOSITORY_CACHE": str(workdir / "cache"),
    }
    try:
        _wait_until(answers, "the S3 server")
        assert server.poll() is None, (workdir / "moto.log").read_text()
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield env
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _s3_client() -> Any:
    return boto3.client("s3")


def _training_data(directory: Path, shift: float) -> tuple[Path, Path]:
    """A fitted classifier (joblib) and its training table (CSV with a target column)."""
    rng = np.random.default_rng(int(shift * 10))
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + X[:, 1] > shift).astype(int)
    estimator = directory / f"estimator-{shift}.joblib"
    joblib.dump(LogisticRegression().fit(X, y), estimator)
    data = directory / f"train-{shift}.csv"
    rows = [",".join([*FEATURES, "y"])]
    rows += [",".join(f"{v:.6f}" for v in row) + f",{t}" for row, t in zip(X, y, strict=True)]
    data.write_text("\n".join(rows) + "\n")
    return estimator, data


def _request(model: str) -> Any:
    from driftgate.core._proto.inference import grpc_service_pb2 as inference

    request = inference.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend([2, 3])
    rows = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    request.raw_input_contents.append(rows.tobytes())
    return request


class Load:
    """Requests sent back to back on a thread; which version answered each, and failures."""

    def __init__(self, address: str, model: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._call = infer_call(self._channel)
        self._request = _request(model)
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answered.append(self._call(self._request, timeout=10).model_version)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            time.sleep(0.002)

    def versions_since(self, start: int) -> set[str]:
        return set(self.answered[start:])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._channel.close()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftgate", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _driftgate(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = _run(args, env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _convert_cli(url: str, estimator: Path, data: Path, env: dict[str, str]) -> dict[str, Any]:
    args = ["convert", "iris", "--estimator", str(estimator), "--data", str(data)]
    return _driftgate([*args, "--target", "y", "--repository", url, "--json"], env)


def _upload_without_marker(prefix: str, model: str, version: int, files: Path) -> None:
    """A writer that died before its marker: every file there, no COMPLETE."""
    client = _s3_client()
    for path in files.iterdir():
        key = f"{prefix}/{model}/{version}/{path.name}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())


def _deployment_json(prefix: str, model: str) -> dict[str, Any]:
    body = _s3_client().get_object(Bucket=BUCKET, Key=f"{prefix}/{model}/deployment.json")
    state: dict[str, Any] = json.loads(body["Body"].read())
    return state


def test_convert_serve_hot_swap_canary_and_rollback_on_s3(
    s3: dict[str, str], tmp_path: Path
) -> None:
    url = f"s3://{BUCKET}/serve"
    first, first_data = _training_data(tmp_path, 0.0)
    written = _convert_cli(url, first, first_data, s3)
    assert written["written"] is True and written["version"] == 1
    gateway = start_gateway(url, tmp_path, env=s3)  # type: ignore[arg-type]
    load = Load(gateway.address, "iris")
    try:
        _wait_until(lambda: "1" in load.answered, "version 1 to answer")
        # Another writer (retraining, CI) adds version 2: the gateway swaps to it by itself.
        from driftgate.converter import convert

        second, second_data = _training_data(tmp_path, 0.5)
        version = convert(second, second_data, "iris", open_repository(url), target="y").version
        assert version == 2
        # A third writer dies after its uploads, before the marker: version 3 stays invisible.
        _upload_without_marker("serve", "iris", 3, open_repository(url).version_dir("iris", 2))
        mark = len(load.answered)
        _wait_until(lambda: load.answered[-50:] == ["2"] * 50, "the swap to version 2")
        assert {"1", "2"} >= load.versions_since(mark)

        stub = control_stub(grpc.insecure_channel(gateway.address))
        canary = control.ROLE_CANARY
        stub.Deploy(control.DeployRequest(model="iris", version=1, role=canary, canary_weight=50))
        mark = len(load.answered)
        _wait_until(lambda: load.versions_since(mark) == {"1", "2"}, "the canary to take traffic")
        recorded = _deployment_json("serve", "iris")
        assert recorded["canary"] == {"version": 1, "weight": 50.0}

        stub.Rollback(control.RollbackRequest(model="iris", reason="canary failed"))
        _wait_until(lambda: load.answered[-50:] == ["2"] * 50, "the rollback to version 2")
        assert _deployment_json("serve", "iris")["canary"] is None
        status = stub.GetStatus(control.GetStatusRequest(model="iris")).models[0]
        history = stub.GetHistory(control.GetHistoryRequest(model="iris")).entries
    finally:
        load.stop()
        gateway.terminate()
    assert load.failures == []
    # Traffic ran through every phase: each wait above saw answers (50 in a row twice).
    assert len(load.answered) >= 100
    assert "3" not in load.answered
    assert 3 not in {v.version for v in status.versions} | {f.version for f in status.failed}
    assert [entry.action for entry in history][:2] == ["Rollback", "Deploy"]
    keys = _s3_client().list_objects_v2(Bucket=BUCKET, Prefix="serve/iris/history/")
    assert len(keys.get("Contents", [])) == len(history)

    # The monitor reads the same repository: the stable pinned in deployment.json and that
    # version's reference profile.
    args = ["--repository", url, "--data-dir", str(tmp_path / "monitor"), "--grpc-port", "0"]
    monitor = DriftgateProcess("monitor", [*args, "--metrics-port", "-1"], tmp_path, s3)
    try:
        monitor.wait_ready()
        drift = _driftgate(["drift", "iris", "--monitor", monitor.address, "--json"], s3)
    finally:
        monitor.terminate()
    assert drift["version"] == 2
    assert [feature["name"] for feature in drift["features"]] == list(FEATURES)


def _tiny_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "identity",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _write(repository: Any, model: str) -> int:
    def populate(directory: Path) -> None:
        data = _tiny_model()
        (directory / "model.onnx").write_bytes(data)
        meta = {"sha256": hashlib.sha256(data).hexdigest()}
        (directory / "model.json").write_text(json.dumps(meta))

    version: int = repository.write_version(model, populate)
    return version


def test_a_conflicting_deployment_write_is_refused_and_no_update_is_lost(
    s3: dict[str, str],
) -> None:
    url = f"s3://{BUCKET}/cas"
    mine, theirs = open_repository(url), open_repository(url)  # two replicas
    assert [_write(mine, "m"), _write(theirs, "m")] == [1, 2]
    DeploymentStore(mine).change("m", "Deploy", lambda s: deploy(s, 1))
    DeploymentStore(mine).change("m", "Deploy", lambda s: deploy(s, 2, 5.0))
    state, tag = mine.read_deployment("m")
    assert state is not None and tag
    DeploymentStore(theirs).change("m", "SetTraffic", lambda s: set_traffic(s, 20.0))
    with pytest.raises(DeploymentConflict, match=f"{url}/m/deployment.json changed"):
        mine.replace_deployment("m", {**state, "canary": None}, tag)
    assert _deployment_json("cas", "m")["canary"] == {"version": 2, "weight": 20.0}
    with pytest.raises(DeploymentConflict):  # creating it, when it exists
        theirs.replace_deployment("m", {"stable": 1}, None)

    # Two replicas changing at once: every change lands, each on its own revision.
    before = DeploymentStore(mine).read("m").revision

    def change_many(repository: Any, weights: list[float]) -> None:
        store = DeploymentStore(repository)
        for weight in weights:
            store.change("m", "SetTraffic", lambda s, w=weight: set_traffic(s, w), actor="r")

    threads = [
        threading.Thread(target=change_many, args=(mine, [float(w) for w in range(30, 38)])),
        threading.Thread(target=change_many, args=(theirs, [float(w) for w in range(40, 48)])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = DeploymentStore(mine).read("m")
    assert after.revision == before + 16
    revisions = [entry.revision for entry in DeploymentStore(theirs).history("m", limit=16)]
    assert revisions == list(range(after.revision, before, -1))


def test_versions_are_checked_against_their_marker(s3: dict[str, str]) -> None:
    url = f"s3://{BUCKET}/verify"
    writer = open_repository(url)
    version = _write(writer, "m")
    client = _s3_client()
    client.put_object(Bucket=BUCKET, Key=f"verify/m/{version}/model.onnx", Body=b"rewritten")
    reader = open_repository(url, Path(s3["DRIFTGATE_REPOSITORY_CACHE"]) / "reader")
    with pytest.raises(CorruptVersion, match=f"{url}/m/{version}/model.onnx has sha256"):
        reader.read_model_bytes("m", version)
    # A claimed number without its marker is not a version; the next writer skips it.
    client.put_object(Bucket=BUCKET, Key="verify/m/2/CLAIM", Body=b"")
    assert reader.versions("m") == [1]
    assert _write(writer, "m") == 3


def test_store_errors_name_the_url(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _run(["serve", "--repository", "s3://Not_A_Bucket/models"], s3)
    assert refused.returncode == 2
    assert "--repository: repository 's3://Not_A_Bucket/models': expected s3://" in refused.stderr
    missing = f"s3://no-such-bucket-{os.getpid()}/models"
    with pytest.raises(FailedPrecondition, match=f"{missing}: the bucket does not exist"):
        open_repository(missing).models()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    nobody = f"s3://{BUCKET}/elsewhere"
    with pytest.raises(Unavailable, match=f"{nobody}/m: the object store did not answer"):
        open_repository(nobody).versions("m")

"""The Python client against a real gateway and a real monitor (separate processes): numpy
in and out, labels joining predictions, deployments, the error tree, sync and asyncio; and
the commands built on it, in-process, printing JSON a script can read."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import enable_created_metrics
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import driftgate
from driftgate.cli import main
from driftgate.client import (
    AsyncControl,
    AsyncGateway,
    AsyncMonitor,
    ClientError,
    Conflict,
    Control,
    Gateway,
    InvalidArgument,
    Monitor,
    NotFound,
    Refused,
    Unauthenticated,
    Unreachable,
)
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "loans"
TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, LogisticRegression]:
    x, y = make_classification(600, 4, n_informative=3, n_redundant=0, random_state=5)
    return x, y, LogisticRegression(max_iter=500).fit(x, y)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, data: tuple) -> Iterator[tuple[str, str]]:
    x, y, estimator = data
    root = tmp_path_factory.mktemp("models")
    for _ in range(2):  # versions 1 and 2, the same estimator
        driftgate.convert(estimator, x.astype(np.float32), MODEL, root, labels=y)
    work = tmp_path_factory.mktemp("client")
    monitor = DriftgateProcess(
        "monitor",
        ["--repository", str(root), "--data-dir", str(work / "data"), "--host", "127.0.0.1",
         "--grpc-port", "0", "--metrics-port", "-1"],
        work, {},
    ).wait_ready()  # fmt: skip
    gateway = start_gateway(
        root, work, "--monitor", monitor.address, "--report-interval", "0.2",
        "--record-max-per-second", "0", env={"DRIFTGATE_CONTROL_TOKEN": TOKEN},
    )  # fmt: skip
    with Control(gateway.address, token=TOKEN) as control:
        control.deploy(MODEL, 1, reason="the test serves version 1")
    yield gateway.address, monitor.address
    gateway.terminate()
    monitor.terminate()


@pytest.fixture(autouse=True)
def _created_metrics() -> Iterator[None]:
    yield
    enable_created_metrics()  # type: ignore[no-untyped-call]  # main() turns them off


def _wait_for_labels(monitor: Monitor, count: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        accuracy = monitor.accuracy(MODEL, window=0)
        if accuracy.label_count >= count or time.monotonic() > deadline:
            return accuracy
        time.sleep(0.2)


def test_inference_and_labels_through_the_sync_client(stack: tuple, data: tuple) -> None:
    gateway_address, monitor_address = stack
    x, y, estimator = data
    with Gateway(gateway_address) as gateway:
        meta = gateway.metadata(MODEL)
        assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("input", "FP32", (-1, 4))]
        # float64 rows, one at a time without the batch dimension: cast and shaped for the model
        answers = [gateway.infer(MODEL, x[i], request_id=f"sync-{i}") for i in range(60)]
        batch = gateway.infer(MODEL, x[:50])
        with pytest.raises(InvalidArgument, match=r"input 'input': expected shape \[-1, 4\]"):
            gateway.infer(MODEL, x[:2, :3])
        with pytest.raises(NotFound) as unknown:
            gateway.infer("no-such-model", x[:1])
        receipt = gateway.send_labels({f"sync-{i}": int(y[i]) for i in range(60)}, model=MODEL)
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND and "no-such-model" in str(unknown.value)
    assert answers[7].id == "sync-7" and answers[7].version == "1"
    assert answers[7]["label"].shape == (1,) and answers[7]["probabilities"].shape == (1, 2)
    predicted = np.concatenate([a["label"] for a in answers])
    assert np.array_equal(predicted, estimator.predict(x[:60].astype(np.float32)))
    assert np.array_equal(batch["label"], estimator.predict(x[:50].astype(np.float32)))
    assert receipt.accepted == 60  # the gateway forwards them all

    with Monitor(monitor_address) as monitor:
        accuracy = _wait_for_labels(monitor, 60)
        drift = monitor.drift(MODEL, window=0)
    assert accuracy.label_count >= 60
    assert accuracy.accuracy is not None and 0.5 < accuracy.accuracy <= 1.0
    assert drift.version == 1 and drift.rows >= 110  # every row the gateway answered
    assert len(drift.features) == 4 and all(f.rows == drift.rows for f in drift.features)


def test_deployments_and_refusals_through_the_sync_client(stack: tuple) -> None:
    gateway_address, _ = stack
    with Control(gateway_address) as anonymous:
        with pytest.raises(Unauthenticated) as refused:
            anonymous.promote(MODEL)
        assert isinstance(refused.value, Refused) and "control token" in refused.value.details
        assert anonymous.status(MODEL)[0].deployment.stable == 1  # reading needs no token
    with Control(gateway_address, token=TOKEN) as control:
        canary = control.deploy(MODEL, 2, canary=20, reason="try version 2")
        assert (canary.stable, canary.canary, canary.canary_weight) == (1, 2, 20.0)
        with pytest.raises(Conflict) as stale:
            control.traffic(MODEL, 50, expected_revision=canary.revision - 1)
        assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
        moved = control.traffic(MODEL, 50, expected_revision=canary.revision)
        assert moved.revision == canary.revision + 1 and moved.canary_weight == 50.0
        roles = {v.version: v.role for v in control.status(MODEL)[0].versions}
        assert roles == {1: "stable", 2: "canary"}
        with pytest.raises(NotFound):
            control.deploy(MODEL, 9)
        back = control.rollback(MODEL, reason="not now")
        history = control.history(MODEL, limit=3)
    assert back.stable == 1 and back.canary is None
    assert [e.action for e in history] == ["Rollback", "SetTraffic", "Deploy"]
    assert history[0].reason == "not now" and history[0].before.canary == 2


def test_the_asyncio_clients(stack: tuple, data: tuple) -> None:
    gateway_address, monitor_address = stack
    x, y, _ = data

    async def scenario() -> tuple[list[Any], Any, Any, list[Any]]:
        async with AsyncGateway(gateway_address) as gateway:
            answers = await asyncio.gather(
                *(gateway.infer(MODEL, x[100 + i], request_id=f"async-{i}") for i in range(30))
            )
            labels = {f"async-{i}": int(y[100 + i]) for i in range(30)}
            await gateway.send_labels(labels, model=MODEL)
        async with AsyncMonitor(monitor_address) as monitor:
            deadline = time.monotonic() + 30
            accuracy = await monitor.accuracy(MODEL, window=0)
            while accuracy.label_count < 90 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                accuracy = await monitor.accuracy(MODEL, window=0)
            events = await monitor.events(MODEL)
        async with AsyncControl(gateway_address) as control:
            status = await control.status(MODEL)
        return answers, accuracy, status, events

    answers, accuracy, status, events = asyncio.run(scenario())
    assert sorted(a.id for a in answers) == sorted(f"async-{i}" for i in range(30))
    assert accuracy.label_count >= 90  # the sync test's 60 and these 30
    assert status[0].deployment.stable == 1
    assert isinstance(events, list)


def test_a_stopped_server_is_unreachable_sync_and_async() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    with Monitor(address, timeout=5) as monitor, pytest.raises(Unreachable) as caught:
        monitor.events()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.address == address

    async def scenario() -> ClientError:
        async with AsyncGateway(address, timeout=5) as gateway:
            try:
                await gateway.infer(MODEL, np.zeros(4))
            except ClientError as exc:
                return exc
        raise AssertionError("no error")

    assert isinstance(asyncio.run(scenario()), Unreachable)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_print_json_with_numbers_and_keep_zeros(
    stack: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_address, monitor_address = stack
    gateway, monitor = ["--gateway", gateway_address], ["--monitor", monitor_address]
    code, out, err = _cli(capsys, "status", MODEL, "--json", *gateway)
    assert code == 0 and not err
    state = json.loads(out)["models"][0]["state"]
    assert state["stable"] == 1 and isinstance(state["revision"], int) and state["shadow"] == 0
    code, out, _ = _cli(capsys, "drift", MODEL, "--window", "total", "--json", *monitor)
    drift = json.loads(out)
    assert code == 0 and drift["version"] == 1 and isinstance(drift["rows"], int)
    assert all(isinstance(f["rows"], int) and "psi" in f for f in drift["features"])
    code, out, _ = _cli(capsys, "accuracy", MODEL, "--window", "total", "--json", *monitor)
    accuracy = json.loads(out)
    assert code == 0 and isinstance(accuracy["label_count"], int)
    assert isinstance(accuracy["label_lag"], float)  # seconds, not "1.5s"
    code, out, err = _cli(capsys, "deploy", MODEL, "2", "--canary", "5", "--json", *gateway)
    assert code == 1 and not out and "control token" in err
    code, out, err = _cli(capsys, "events", MODEL, "--json", "--log-level", "warning", *monitor)
    assert code == 0 and isinstance(json.loads(out), list) and not err


def test_retrain_wait_follows_the_retrain_to_its_outcome(
    stack: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, monitor_address = stack
    token_file = tmp_path / "token"
    token_file.write_text("anything\n")  # the monitor has no control token: any is accepted
    code, out, err = _cli(
        capsys, "retrain", MODEL, "--wait", "--json", "--monitor", monitor_address,
        "--token-file", str(token_file), "--reason", "asked by the test",
    )  # fmt: skip
    outcome = json.loads(out)["outcome"]
    # 90 labelled rows are too few for the retraining policy's minimum: rejected, exit 1
    assert code == 1 and outcome["kind"] == "retrain_rejected", err
    assert "retrain_started" in err and "retrain_rejected" in err
    assert isinstance(outcome["id"], int) and outcome["figures"]["trigger"] == "asked by the test"


def test_mutual_tls_and_a_token_file(tmp_path: Path, data: tuple) -> None:
    from driftgate.client import ClientTLS
    from tests.certificates import LOOPBACK, Authority

    x, y, estimator = data
    ca = Authority.create(tmp_path / "ca", "client test CA")
    server = ca.issue(tmp_path / "server", "gateway", hosts=LOOPBACK)
    app = ca.issue(tmp_path / "app", "application")
    token_file = tmp_path / "control-token"
    token_file.write_text(f"{TOKEN}\n")
    root = tmp_path / "models"
    driftgate.convert(estimator, x.astype(np.float32), MODEL, root, labels=y)
    gateway = start_gateway(
        root, tmp_path, "--tls-cert", str(server.cert_path), "--tls-key", str(server.key_path),
        "--tls-client-ca", str(ca.cert_path), "--control-token-file", str(token_file),
    )  # fmt: skip
    tls = ClientTLS(ca.cert_path, app.cert_path, app.key_path)
    try:
        with Gateway(gateway.address, tls=tls) as client:
            assert client.infer(MODEL, x[:3])["label"].shape == (3,)
        with Control(gateway.address, tls=tls, token_file=token_file) as control:
            assert control.deploy(MODEL, 1, reason="over mutual TLS").stable == 1
        anonymous = Gateway(gateway.address, tls=ClientTLS(ca.cert_path), timeout=5)
        with anonymous, pytest.raises(Unreachable):  # no client certificate: no handshake
            anonymous.infer(MODEL, x[:1])
    finally:
        gateway.terminate()

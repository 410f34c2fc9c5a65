"""TLS and mutual TLS between real processes, with certificates made in the test.

(a) the gateway serves inference over TLS, and refuses plaintext and clients that do not trust
its CA; (b) with ``--tls-client-ca`` it refuses clients without a certificate or with one of
another CA; (c) a gateway and a monitor that both require client certificates: the gateway's
reporter delivers its statistics, and the monitor's control client deploys a retrained canary
on the gateway, all over mutual TLS; (d) a certificate replaced on disk is served to new
connections by the same process, which never stops answering, and a broken replacement leaves
the last good certificate in service.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.core.auth import TokenSource
from driftgate.core.tls import ClientTLS
from driftgate.monitor.control_client import GatewayControl
from tests.certificates import LOOPBACK, Authority, Issued, Pki
from tests.integration.control_client import control as control_pb
from tests.integration.control_client import control_stub
from tests.processes import ROOT, DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "loans"
FEATURES = 4
OPERATOR_TOKEN = "operator-token-for-tls-tests"
INGEST_TOKEN = "ingest-token-for-tls-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(600, FEATURES, n_informative=3, n_redundant=0, random_state=5)
    return x.astype(np.float32).round(2), y


@pytest.fixture
def repository(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> Path:
    """A repository of one's own per test: test (c) writes a retrained version into it."""
    root = tmp_path / "models"
    x, y = data
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, root, labels=y)
    # The retraining judge needs holdout rows in proportion to its margin: the ~100 labelled
    # rows of test (c) judge a candidate with a wide one, on their newest 60%.
    (root / MODEL / "policy.toml").write_text(
        "[retrain]\nholdout_fraction = 0.6\ntolerance = 0.3\n"
    )
    return root


# -- clients -------------------------------------------------------------------------------


def _credentials(ca: Authority | None, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_path.read_bytes() if ca else None,
        private_key=client.key_path.read_bytes() if client else None,
        certificate_chain=client.cert_path.read_bytes() if client else None,
    )


def _secure(address: str, ca: Authority, client: Issued | None = None) -> grpc.Channel:
    return grpc.secure_channel(address, _credentials(ca, client))


def _request(x: np.ndarray, start: int, rows: int = 1) -> pb.ModelInferRequest:
    block = np.take(x, range(start, start + rows), axis=0, mode="wrap")
    return pb.ModelInferRequest(
        model_name=MODEL,
        id=f"req-{start}",
        inputs=[{"name": "input", "datatype": "FP32", "shape": [rows, FEATURES]}],
        raw_input_contents=[np.ascontiguousarray(block).tobytes()],
    )


def _infer(channel: grpc.Channel, x: np.ndarray, start: int = 0, rows: int = 1) -> np.ndarray:
    response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        _request(x, start, rows), timeout=10
    )
    return np.frombuffer(response.raw_output_contents[0], "<i8")


def _refused(channel: grpc.Channel, x: np.ndarray) -> grpc.StatusCode:
    """The status of an inference call expected to fail at the handshake."""
    with pytest.raises(grpc.RpcError) as caught:
        _infer(channel, x)
    code: grpc.StatusCode = caught.value.code()
    return code


def _driftgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # No DRIFTGATE_* from the caller's environment: the flags alone say what to use.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "driftgate", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def _tls_flags(server: Issued, client_ca: Authority | None = None) -> list[str]:
    flags = ["--tls-cert", str(server.cert_path), "--tls-key", str(server.key_path)]
    return flags + (["--tls-client-ca", str(client_ca.cert_path)] if client_ca else [])


def _peer_certificate(port: int, ca: Authority) -> bytes:
    """The certificate a new TLS connection to ``port`` is shown (DER), with Python's ssl."""
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    context.set_alpn_protocols(["h2"])  # gRPC servers refuse a handshake without it
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


# -- (a) TLS -------------------------------------------------------------------------------


def test_gateway_serves_inference_over_tls_and_refuses_plaintext(
    pki: Pki, repository: Path, tmp_path: Path, data: tuple
) -> None:
    x, _ = data
    gateway = start_gateway(repository, tmp_path, *_tls_flags(pki.server))
    try:
        with _secure(gateway.address, pki.ca) as channel:
            labels = _infer(channel, x, 0, rows=5)
            assert labels.shape == (5,)
            assert (
                pb_grpc.GRPCInferenceServiceStub(channel)
                .ServerLive(pb.ServerLiveRequest(), timeout=5)
                .live
            )
        # the name a client dials is checked too: localhost is in the certificate
        with _secure(f"localhost:{gateway.grpc_port}", pki.ca) as channel:
            assert _infer(channel, x).shape == (1,)
        with grpc.insecure_channel(gateway.address) as channel:
            assert _refused(channel, x) == grpc.StatusCode.UNAVAILABLE
        # a client that trusts another CA does not accept the gateway's certificate
        with _secure(gateway.address, pki.untrusted_ca) as channel:
            assert _refused(channel, x) == grpc.StatusCode.UNAVAILABLE

        # the health probe of containers, with and without the CA
        address = ["--address", gateway.address]
        ok = _driftgate("health", *address, "--tls-ca", str(pki.ca.cert_path))
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stdout + ok.stderr
        plain = _driftgate("health", *address, "--timeout", "2")
        assert plain.returncode == 3, plain.stdout + plain.stderr  # unreachable without TLS
        assert "UNAVAILABLE" in plain.stderr and not plain.stdout
        assert gateway.process.poll() is None
    finally:
        assert gateway.terminate() == 0, gateway.log


# -- (b) mutual TLS ------------------------------------------------------------------------


def test_mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca(
    pki: Pki, repository: Path, tmp_path: Path, data: tuple
) -> None:
    x, _ = data
    gateway = start_gateway(repository, tmp_path, *_tls_flags(pki.server, pki.ca))
    try:
        with _secure(gateway.address, pki.ca) as channel:  # no client certificate
            assert _refused(channel, x) == grpc.StatusCode.UNAVAILABLE
        with _secure(gateway.address, pki.ca, pki.impostor) as channel:  # right CN, wrong CA
            assert _refused(channel, x) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(gateway.address) as channel:
            assert _refused(channel, x) == grpc.StatusCode.UNAVAILABLE
        for client in (pki.operator, pki.reporter):
            with _secure(gateway.address, pki.ca, client) as channel:
                assert _infer(channel, x, 3, rows=2).shape == (2,)
        # the Python ssl module sees the same: no certificate, no gRPC
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context = ssl.create_default_context(cafile=str(pki.ca.cert_path))
            context.set_alpn_protocols(["h2"])
            with (
                socket.create_connection(("127.0.0.1", gateway.grpc_port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not tls.recv(1024):  # TLS 1.3: the refusal arrives after the handshake
                    raise ConnectionError("closed by the server")
    finally:
        assert gateway.terminate() == 0, gateway.log


# -- (c) the reporter and the control client over mutual TLS --------------------------------


def _monitor_drift(address: str, pki: Pki) -> mpb.GetDriftResponse:
    with _secure(address, pki.ca, pki.operator) as channel:
        request = mpb.GetDriftRequest(model=MODEL, window=Duration(seconds=0))
        response: mpb.GetDriftResponse = mpb_grpc.MonitorStub(channel).GetDrift(request, timeout=10)
        return response


def _wait_for_rows(address: str, pki: Pki, rows: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        try:
            seen = _monitor_drift(address, pki).features[0].rows
        except grpc.RpcError:
            seen = -1
        if seen >= rows:
            time.sleep(0.6)  # a few more report intervals: nothing more may arrive
            return _monitor_drift(address, pki).features[0].rows
        time.sleep(0.1)
    return seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _client_flags(prefix: str, ca: Authority, client: Issued) -> list[str]:
    return [
        f"--{prefix}tls-ca", str(ca.cert_path),
        f"--{prefix}tls-cert", str(client.cert_path),
        f"--{prefix}tls-key", str(client.key_path),
    ]  # fmt: skip


def _events(monitor: str, pki: Pki) -> list[str]:
    listed = _driftgate("events", MODEL, "--monitor", monitor, "--json",
                        *_client_flags("", pki.ca, pki.operator))  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return [e["kind"] for e in json.loads(listed.stdout)]


def test_reporter_and_control_client_work_over_mutual_tls(
    pki: Pki, repository: Path, tmp_path: Path, data: tuple
) -> None:
    x, y = data
    tokens = ["--control-token", OPERATOR_TOKEN, "--ingest-token", INGEST_TOKEN]
    gateway_port = _free_port()  # the monitor must know where the gateway will listen
    monitor = DriftgateProcess(
        "monitor",
        ["--repository", str(repository), "--data-dir", str(tmp_path / "data"),
         "--grpc-port", "0", "--metrics-port", "-1",
         *_tls_flags(pki.server, pki.ca), *tokens,
         "--gateway", f"127.0.0.1:{gateway_port}",
         *_client_flags("gateway-", pki.ca, pki.operator)],
        tmp_path, {},
    ).wait_ready()  # fmt: skip
    gateway = None
    try:
        gateway = start_gateway(
            repository, tmp_path, "--grpc-port", str(gateway_port),
            *_tls_flags(pki.server, pki.ca), *tokens,
            "--monitor", monitor.address, "--report-interval", "0.2",
            *_client_flags("monitor-", pki.ca, pki.reporter),
        )  # fmt: skip
        assert gateway.grpc_port == gateway_port

        # the reporter: statistics of every row reach the monitor, over mutual TLS
        sent = 0
        with _secure(gateway.address, pki.ca, pki.reporter) as channel:
            for i in range(200):
                sent += len(_infer(channel, x, i, rows=1 + i % 2))
            labels = [fb.Label(request_id=f"req-{i}", int64_value=int(y[i])) for i in range(200)]
            reply = fb_grpc.FeedbackStub(channel).SendLabels(
                fb.SendLabelsRequest(labels=labels),
                timeout=10,
                metadata=[("authorization", f"Bearer {INGEST_TOKEN}")],
            )
            assert reply.accepted == len(labels)
        assert _wait_for_rows(monitor.address, pki, sent) == sent

        # the monitor's control client, as the monitor builds it, on its own
        client = GatewayControl(
            gateway.address,
            TokenSource(OPERATOR_TOKEN),
            tls=ClientTLS(pki.ca.cert_path, pki.operator.cert_path, pki.operator.key_path),
        )
        try:
            assert client.status(MODEL).stable == 1
        finally:
            client.close()

        # an operator action through the monitor: `driftgate retrain` over mutual TLS; the
        # monitor trains, then deploys the new version as a canary through its control client
        asked = _driftgate("retrain", MODEL, "--monitor", monitor.address,
                           "--control-token", OPERATOR_TOKEN,
                           *_client_flags("", pki.ca, pki.operator))  # fmt: skip
        assert asked.returncode == 0, asked.stdout + asked.stderr
        kinds: list[str] = []
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            kinds = _events(monitor.address, pki)
            if {"retrain_succeeded", "retrain_rejected", "retrain_failed"} & set(kinds):
                break
            time.sleep(0.5)
        assert "retrain_succeeded" in kinds, (kinds, monitor.log)
        with _secure(gateway.address, pki.ca, pki.operator) as channel:
            status = control_stub(channel).GetStatus(control_pb.GetStatusRequest(model=MODEL))
            state = status.models[0].state
        assert (state.stable, state.canary.version) == (1, 2), state
        assert state.updated_by.startswith("driftgate-monitor"), state.updated_by
    finally:
        if gateway is not None:
            assert gateway.terminate() == 0, gateway.log
        assert monitor.terminate() == 0, monitor.log


# -- (d) rotation --------------------------------------------------------------------------


def _install(issued: Issued, cert: Path, key: Path) -> None:
    """Replace the served files, each atomically (key first, as a careful writer would)."""
    for source, target in ((issued.key_path, key), (issued.cert_path, cert)):
        staged = target.with_name(f".{target.name}.new")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, target)


def test_certificate_rotated_on_disk_is_served_without_a_restart(
    pki: Pki, repository: Path, tmp_path: Path, data: tuple
) -> None:
    x, _ = data
    served = tmp_path / "served"
    first = pki.ca.issue(tmp_path / "first", "gateway-first", hosts=LOOPBACK)
    second = pki.ca.issue(tmp_path / "second", "gateway-second", hosts=LOOPBACK)
    assert first.serial != second.serial
    cert, key = served / "tls.crt", served / "tls.key"
    served.mkdir()
    _install(first, cert, key)
    # set through the environment, as the deploy files do
    gateway = start_gateway(
        repository, tmp_path, env={"DRIFTGATE_TLS_CERT": str(cert), "DRIFTGATE_TLS_KEY": str(key)}
    )
    try:
        pid = gateway.process.pid
        assert gateway.info["pid"] == pid
        assert _peer_certificate(gateway.grpc_port, pki.ca) == first.der
        with _secure(gateway.address, pki.ca) as before:  # a connection made before
            _infer(before, x)

            _install(second, cert, key)
            deadline = time.monotonic() + 10
            while _peer_certificate(gateway.grpc_port, pki.ca) != second.der:
                assert time.monotonic() < deadline, "the new certificate was never served"
                time.sleep(0.05)

            # the same process, answering on the old connection and on new ones
            assert gateway.process.poll() is None and gateway.process.pid == pid
            for i in range(20):
                _infer(before, x, i)
            with _secure(gateway.address, pki.ca) as after:
                for i in range(20):
                    _infer(after, x, i)
        # every later connection is shown the new certificate, never the old one
        assert {_peer_certificate(gateway.grpc_port, pki.ca) for _ in range(5)} == {second.der}
        assert "TLS files changed" in gateway.log

        # a broken file on the way (a writer interrupted, a bad copy) takes nothing down: the
        # last good certificate is still served, and the next good one is picked up
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
        key.unlink()
        for i in range(5):
            assert _peer_certificate(gateway.grpc_port, pki.ca) == second.der
            with _secure(gateway.address, pki.ca) as channel:
                _infer(channel, x, i)
        third = pki.ca.issue(tmp_path / "third", "gateway-third", hosts=LOOPBACK)
        _install(third, cert, key)
        deadline = time.monotonic() + 10
        while _peer_certificate(gateway.grpc_port, pki.ca) != third.der:
            assert time.monotonic() < deadline, "the certificate after a broken one was not served"
            time.sleep(0.05)
        assert gateway.process.poll() is None and gateway.process.pid == pid
    finally:
        assert gateway.terminate() == 0, gateway.log

"""Credentials on every door, between real processes.

Every call that changes a deployment (Control's mutations, RepositoryModelLoad/Unload) or feeds
the monitor (Report, SendLabels on either server) or acts on production (Retrain) answers
UNAUTHENTICATED to a missing, wrong or other-role token and leaves nothing changed; the right
token is accepted. Read-only calls need none. Token files are re-read while serving; a
certificate subject listed with ``--operator-subjects`` stands in for the operator token under
mutual TLS. Beyond loopback, both servers refuse to start without their tokens unless told
``--insecure``, which they then log as a warning.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.control.v1 import control_pb2 as cpb
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as cpb_grpc
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.certificates import LOOPBACK, Authority
from tests.processes import ROOT, DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "loans"
FEATURES = 4
OPERATOR = "operator-token-0123456789"
INGEST = "ingest-token-9876543210"
WRONG = "not-the-token"

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


#: what a caller without the credential may present: nothing, a wrong token, the bare token
#: without the scheme, the operator or ingest token of the other role (added per door)
NO_TOKEN: Metadata = ()
REFUSED_COMMON = {
    "none": NO_TOKEN,
    "wrong": bearer(WRONG),
    "no-scheme": (("authorization", OPERATOR),),
    "prefix": bearer(OPERATOR[:-1]),
}


# -- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(400, FEATURES, n_informative=3, n_redundant=0, random_state=8)
    return x.astype(np.float32).round(2), y


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, data: tuple) -> Path:
    """Versions 1, 2 and 3 of one model; the newest (3) is the stable at start."""
    root = tmp_path_factory.mktemp("models")
    x, y = data
    for c in (1.0, 0.1, 0.01):
        convert(LogisticRegression(C=c, max_iter=500).fit(x, y), x, MODEL, root, labels=y)
    return root


@pytest.fixture
def own_repository(repository: Path, tmp_path: Path) -> Path:
    """A copy of the repository for one test, whose deployment changes stay its own."""
    return Path(shutil.copytree(repository, tmp_path / "models"))


def _monitor(repository: Path, workdir: Path, *extra: str) -> DriftgateProcess:
    args = ["--repository", str(repository), "--data-dir", str(workdir / "data"),
            "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1", *extra]  # fmt: skip
    return DriftgateProcess("monitor", args, workdir, {}).wait_ready()


@dataclass
class Stack:
    gateway: DriftgateProcess
    monitor: DriftgateProcess
    gateway_channel: grpc.Channel
    monitor_channel: grpc.Channel


@pytest.fixture(scope="module")
def stack(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A monitor and a gateway reporting to it, each with an operator and an ingest token.

    The monitor reads a copy of the repository: an accepted Retrain may write a version
    there, which must not change what the gateway serves under the other tests."""
    workdir = tmp_path_factory.mktemp("stack")
    tokens = ("--control-token", OPERATOR, "--ingest-token", INGEST)
    monitor_repository = workdir / "monitor-models"
    shutil.copytree(repository, monitor_repository)
    monitor = _monitor(monitor_repository, workdir, *tokens)
    gateway = start_gateway(
        repository, workdir, *tokens, "--monitor", monitor.address, "--report-interval", "0.2"
    )
    with (
        grpc.insecure_channel(gateway.address) as gateway_channel,
        grpc.insecure_channel(monitor.address) as monitor_channel,
    ):
        yield Stack(gateway, monitor, gateway_channel, monitor_channel)
    assert gateway.terminate() == 0, gateway.log
    assert monitor.terminate() == 0, monitor.log


def _infer_request(x: np.ndarray, i: int, request_id: str = "") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=MODEL,
        id=request_id,
        inputs=[{"name": "input", "datatype": "FP32", "shape": [1, FEATURES]}],
        raw_input_contents=[x[i : i + 1].tobytes()],
    )


def _code(call: Callable[..., Any], request: Any, metadata: Metadata) -> grpc.StatusCode:
    try:
        call(request, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def _state(channel: grpc.Channel) -> cpb.DeploymentState:
    status = cpb_grpc.ControlStub(channel).GetStatus(cpb.GetStatusRequest(model=MODEL), timeout=10)
    state: cpb.DeploymentState = status.models[0].state
    return state


def _ready(channel: grpc.Channel, version: int = 0) -> bool:
    request = pb.ModelReadyRequest(name=MODEL, version=str(version) if version else "")
    return bool(pb_grpc.GRPCInferenceServiceStub(channel).ModelReady(request, timeout=10).ready)


# -- the gateway's mutating calls ----------------------------------------------------------

# Each mutating call of the gateway, with a request that the operator could make right now
# (state: stable 3 and nothing else): none of them may get past the credential check.
GATEWAY_MUTATIONS: dict[str, tuple[str, str, Any]] = {
    "Deploy": ("control", "Deploy",
               cpb.DeployRequest(model=MODEL, version=2, role=cpb.ROLE_CANARY, canary_weight=10)),
    "Deploy-stable": ("control", "Deploy",
                      cpb.DeployRequest(model=MODEL, version=1, role=cpb.ROLE_STABLE)),
    "SetTraffic": ("control", "SetTraffic", cpb.SetTrafficRequest(model=MODEL, canary_weight=50)),
    "StartShadow": ("control", "StartShadow", cpb.StartShadowRequest(model=MODEL, version=1)),
    "StopShadow": ("control", "StopShadow", cpb.StopShadowRequest(model=MODEL)),
    "Promote": ("control", "Promote", cpb.PromoteRequest(model=MODEL)),
    "Rollback": ("control", "Rollback", cpb.RollbackRequest(model=MODEL)),
    "Rollback-to": ("control", "Rollback", cpb.RollbackRequest(model=MODEL, version=1)),
    "RepositoryModelUnload": ("inference", "RepositoryModelUnload",
                              pb.RepositoryModelUnloadRequest(model_name=MODEL)),
    "RepositoryModelLoad": ("inference", "RepositoryModelLoad",
                            pb.RepositoryModelLoadRequest(model_name=MODEL)),
}  # fmt: skip


def _gateway_call(channel: grpc.Channel, service: str, method: str) -> Callable[..., Any]:
    stub: Any = (
        cpb_grpc.ControlStub(channel)
        if service == "control"
        else pb_grpc.GRPCInferenceServiceStub(channel)
    )
    call: Callable[..., Any] = getattr(stub, method)
    return call


@pytest.mark.parametrize("presented", [*REFUSED_COMMON, "ingest"])
@pytest.mark.parametrize("name", GATEWAY_MUTATIONS)
def test_gateway_mutation_without_the_operator_token_is_refused_and_changes_nothing(
    stack: Stack, name: str, presented: str
) -> None:
    metadata = bearer(INGEST) if presented == "ingest" else REFUSED_COMMON[presented]
    service, method, request = GATEWAY_MUTATIONS[name]
    before = _state(stack.gateway_channel)
    call = _gateway_call(stack.gateway_channel, service, method)
    assert _code(call, request, metadata) == grpc.StatusCode.UNAUTHENTICATED
    after = _state(stack.gateway_channel)
    assert after.revision == before.revision and after.stable == before.stable
    assert _ready(stack.gateway_channel)


def test_gateway_mutations_accept_the_operator_token(stack: Stack, data: tuple) -> None:
    """Every mutation in turn, as an operator; the model keeps answering throughout."""
    x, _ = data
    channel = stack.gateway_channel
    control = cpb_grpc.ControlStub(channel)
    inference = pb_grpc.GRPCInferenceServiceStub(channel)
    token = bearer(OPERATOR)
    start = _state(channel)
    assert start.stable == 3 and not start.HasField("canary")

    def ok(call: Callable[..., Any], request: Any) -> None:
        call(request, timeout=30, metadata=token)
        inference.ModelInfer(_infer_request(x, 0), timeout=10)

    ok(control.Deploy, GATEWAY_MUTATIONS["Deploy"][2])
    assert _state(channel).canary.version == 2
    ok(control.SetTraffic, GATEWAY_MUTATIONS["SetTraffic"][2])
    assert _state(channel).canary.weight == 50
    ok(control.StartShadow, GATEWAY_MUTATIONS["StartShadow"][2])
    assert _state(channel).shadow == 1
    ok(control.StopShadow, GATEWAY_MUTATIONS["StopShadow"][2])
    assert _state(channel).shadow == 0
    ok(control.Promote, GATEWAY_MUTATIONS["Promote"][2])
    assert (_state(channel).stable, _state(channel).HasField("canary")) == (2, False)
    ok(control.Rollback, GATEWAY_MUTATIONS["Rollback"][2])
    assert _state(channel).stable == 3
    ok(control.Deploy, GATEWAY_MUTATIONS["Deploy-stable"][2])
    assert _state(channel).stable == 1
    ok(control.Rollback, GATEWAY_MUTATIONS["Rollback-to"][2])  # already there: no change
    ok(control.Deploy, cpb.DeployRequest(model=MODEL, version=3, role=cpb.ROLE_STABLE))
    final = _state(channel)
    assert final.stable == 3 and final.revision > start.revision

    inference.RepositoryModelUnload(
        pb.RepositoryModelUnloadRequest(model_name=MODEL), timeout=30, metadata=token
    )
    assert not _ready(channel)
    inference.RepositoryModelLoad(
        pb.RepositoryModelLoadRequest(model_name=MODEL), timeout=30, metadata=token
    )
    assert _ready(channel)
    inference.ModelInfer(_infer_request(x, 1), timeout=10)


# -- ingest: labels through the gateway, reports and labels to the monitor, Retrain --------


def _labels(n: int, prefix: str = "label") -> fb.SendLabelsRequest:
    return fb.SendLabelsRequest(
        labels=[
            fb.Label(request_id=f"{prefix}-{i}", model=MODEL, int64_value=i % 2) for i in range(n)
        ]
    )


_sequence = iter(range(1, 1_000_000))


def _report() -> mpb.ReportRequest:
    """A well-formed report with no counts (a heartbeat): acceptable to a monitor."""
    now = time.time()
    window_start, window_end, sent = Timestamp(), Timestamp(), Timestamp()
    window_start.FromNanoseconds(int((now - 1) * 1e9))
    window_end.FromNanoseconds(int(now * 1e9))
    sent.FromNanoseconds(int(now * 1e9))
    return mpb.ReportRequest(
        instance_id="test-credentials",
        sequence=next(_sequence),
        sent_time=sent,
        window_start=window_start,
        window_end=window_end,
    )


@dataclass(frozen=True)
class Door:
    server: str  # "gateway" or "monitor"
    call: Callable[[grpc.Channel], Callable[..., Any]]
    request: Callable[[], Any]
    token: str  # the credential it needs


DOORS = {
    "gateway Feedback.SendLabels": Door(
        "gateway", lambda c: fb_grpc.FeedbackStub(c).SendLabels, lambda: _labels(3), INGEST
    ),
    "monitor Report": Door("monitor", lambda c: mpb_grpc.MonitorStub(c).Report, _report, INGEST),
    "monitor Feedback.SendLabels": Door(
        "monitor", lambda c: fb_grpc.FeedbackStub(c).SendLabels, lambda: _labels(3), INGEST
    ),
    "monitor Retrain": Door(
        "monitor",
        lambda c: mpb_grpc.MonitorStub(c).Retrain,
        lambda: mpb.RetrainRequest(model=MODEL, reason="test of credentials"),
        OPERATOR,
    ),
}


def _channel(stack: Stack, server: str) -> grpc.Channel:
    return stack.gateway_channel if server == "gateway" else stack.monitor_channel


@pytest.mark.parametrize("presented", [*REFUSED_COMMON, "other role"])
@pytest.mark.parametrize("door", DOORS)
def test_ingest_and_retrain_refuse_a_missing_wrong_or_other_role_token(
    stack: Stack, door: str, presented: str
) -> None:
    d = DOORS[door]
    other = OPERATOR if d.token == INGEST else INGEST
    metadata = bearer(other) if presented == "other role" else REFUSED_COMMON[presented]
    call = d.call(_channel(stack, d.server))
    assert _code(call, d.request(), metadata) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("door", DOORS)
def test_ingest_and_retrain_accept_their_token(stack: Stack, door: str) -> None:
    d = DOORS[door]
    response = d.call(_channel(stack, d.server))(d.request(), timeout=30, metadata=bearer(d.token))
    if isinstance(response, fb.SendLabelsResponse):
        assert response.accepted + response.duplicates + response.unknown == 3
    elif isinstance(response, mpb.RetrainResponse):
        assert MODEL in response.job_id


def test_read_only_calls_need_no_token(stack: Stack, data: tuple) -> None:
    x, _ = data
    gateway = pb_grpc.GRPCInferenceServiceStub(stack.gateway_channel)
    answer = gateway.ModelInfer(_infer_request(x, 0, "read-only-1"), timeout=10)
    assert answer.id == "read-only-1"
    assert gateway.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert gateway.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert gateway.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10).name == MODEL
    assert gateway.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10).config.name == MODEL
    assert gateway.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models
    gateway.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL), timeout=10)
    control = cpb_grpc.ControlStub(stack.gateway_channel)
    assert control.GetStatus(cpb.GetStatusRequest(model=MODEL), timeout=10).models
    control.GetHistory(cpb.GetHistoryRequest(model=MODEL), timeout=10)

    monitor = mpb_grpc.MonitorStub(stack.monitor_channel)
    total = Duration(seconds=0)
    drift = monitor.GetDrift(mpb.GetDriftRequest(model=MODEL, window=total), timeout=10)
    assert drift.model == MODEL
    monitor.GetAccuracy(mpb.GetAccuracyRequest(model=MODEL, window=total), timeout=10)
    monitor.ListEvents(mpb.ListEventsRequest(model=MODEL), timeout=10)
    for channel in (stack.gateway_channel, stack.monitor_channel):
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reporter_delivers_with_its_ingest_token(stack: Stack, data: tuple) -> None:
    """The gateway's own reporter gets through the monitor's ingest check."""
    x, _ = data
    monitor = mpb_grpc.MonitorStub(stack.monitor_channel)
    total = Duration(seconds=0)

    stable = _state(stack.gateway_channel).stable

    def rows() -> int:
        request = mpb.GetDriftRequest(model=MODEL, version=stable, window=total)
        return int(monitor.GetDrift(request, timeout=10).rows)

    before = rows()
    inference = pb_grpc.GRPCInferenceServiceStub(stack.gateway_channel)
    for i in range(30):
        inference.ModelInfer(_infer_request(x, i), timeout=10)
    deadline = time.monotonic() + 15
    while rows() < before + 30:
        assert time.monotonic() < deadline, (rows(), before, stack.gateway.log[-3000:])
        time.sleep(0.1)


# -- token files re-read while serving -----------------------------------------------------


def _write_in_place(path: Path, token: str) -> None:
    path.write_text(token + "\n", encoding="utf-8")


def _swap_like_kubernetes(path: Path, token: str) -> None:
    """A Secret volume's update: a new timestamped directory, then ``..data`` swapped to it
    with one rename; ``path`` is ``<volume>/<key>`` -> ``..data/<key>``."""
    volume = path.parent
    fresh = volume / f"..{time.monotonic_ns()}"
    fresh.mkdir()
    (fresh / path.name).write_text(token, encoding="utf-8")
    link = volume / "..data_tmp"
    link.symlink_to(fresh.name)
    os.replace(link, volume / "..data")


def _secret_volume(directory: Path, key: str, token: str) -> Path:
    directory.mkdir()
    first = directory / "..first"
    first.mkdir()
    (first / key).write_text(token, encoding="utf-8")
    (directory / "..data").symlink_to(first.name)
    (directory / key).symlink_to(f"..data/{key}")
    return directory / key


@pytest.mark.parametrize(
    "rotate", [_write_in_place, _swap_like_kubernetes], ids=["in-place", "kubernetes-secret"]
)
def test_rotated_control_token_file_takes_effect_without_restart(
    own_repository: Path, tmp_path: Path, rotate: Callable[[Path, str], None]
) -> None:
    token_file = _secret_volume(tmp_path / "secret", "control-token", "first-token")
    gateway = start_gateway(own_repository, tmp_path, "--control-token-file", str(token_file))
    try:
        pid = gateway.process.pid
        with grpc.insecure_channel(gateway.address) as channel:
            control = cpb_grpc.ControlStub(channel)
            request = cpb.DeployRequest(model=MODEL, version=2, role=cpb.ROLE_STABLE)
            assert _code(control.Deploy, request, bearer("first-token")) == grpc.StatusCode.OK
            rotate(token_file, "second-token")
            assert _code(control.Deploy, request, bearer("first-token")) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            request.version = 3
            assert _code(control.Deploy, request, bearer("second-token")) == grpc.StatusCode.OK
            assert _state(channel).stable == 3
            # an empty file (a writer caught half way) keeps the last token
            token_file.resolve().write_text("", encoding="utf-8")
            request.version = 1
            assert _code(control.Deploy, request, bearer("second-token")) == grpc.StatusCode.OK
            assert _code(control.Deploy, request, NO_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
        assert gateway.process.poll() is None and gateway.process.pid == pid
    finally:
        assert gateway.terminate() == 0, gateway.log


def test_ingest_token_rotated_on_the_monitor_first_holds_reports_until_the_gateway_follows(
    own_repository: Path, tmp_path: Path, data: tuple
) -> None:
    """Rotation is not atomic across processes: while the gateway still sends the old token
    the monitor refuses its reports, which wait and then arrive once, none lost or doubled."""
    x, _ = data
    monitor_token, gateway_token = tmp_path / "monitor-ingest", tmp_path / "gateway-ingest"
    for path in (monitor_token, gateway_token):
        path.write_text("ingest-1")
    monitor = _monitor(own_repository, tmp_path, "--control-token", OPERATOR,
                       "--ingest-token-file", str(monitor_token))  # fmt: skip
    gateway = start_gateway(
        own_repository, tmp_path, "--ingest-token-file", str(gateway_token),
        "--monitor", monitor.address, "--report-interval", "0.1",
    )  # fmt: skip
    total = Duration(seconds=0)
    try:
        with (
            grpc.insecure_channel(gateway.address) as gateway_channel,
            grpc.insecure_channel(monitor.address) as monitor_channel,
        ):
            infer = pb_grpc.GRPCInferenceServiceStub(gateway_channel).ModelInfer
            drift = mpb_grpc.MonitorStub(monitor_channel).GetDrift

            def rows() -> int:
                return int(drift(mpb.GetDriftRequest(model=MODEL, window=total), timeout=10).rows)

            def wait_rows(expected: int) -> None:
                deadline = time.monotonic() + 15
                while rows() < expected:
                    assert time.monotonic() < deadline, (rows(), expected, gateway.log[-3000:])
                    time.sleep(0.1)

            for i in range(20):
                infer(_infer_request(x, i), timeout=10)
            wait_rows(20)
            monitor_token.write_text("ingest-2")
            for i in range(30):
                infer(_infer_request(x, i), timeout=10)
            time.sleep(1.0)  # ten report intervals: all refused
            assert rows() == 20
            gateway_token.write_text("ingest-2")
            wait_rows(50)
            time.sleep(0.5)
            assert rows() == 50
    finally:
        assert gateway.terminate() == 0, gateway.log
        assert monitor.terminate() == 0, monitor.log


# -- certificate subjects instead of tokens -------------------------------------------------


def test_operator_subject_deploys_without_a_token_under_mutual_tls(
    own_repository: Path, tmp_path: Path
) -> None:
    ca = Authority.create(tmp_path / "ca", "driftgate test CA")
    server = ca.issue(tmp_path / "server", "gateway-1", hosts=LOOPBACK)
    operator = ca.issue(tmp_path / "operator", "operator-1")
    reporter = ca.issue(tmp_path / "reporter", "reporter-1")
    gateway = start_gateway(
        own_repository, tmp_path,
        "--tls-cert", str(server.cert_path), "--tls-key", str(server.key_path),
        "--tls-client-ca", str(ca.cert_path),
        "--control-token", OPERATOR, "--operator-subjects", "operator-1, admin-2",
        "--ingest-subjects", "reporter-1",
    )  # fmt: skip

    def channel(client: Any) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            ca.cert_path.read_bytes(), client.key_path.read_bytes(), client.cert_path.read_bytes()
        )
        return grpc.secure_channel(gateway.address, credentials)

    try:
        deploy = cpb.DeployRequest(model=MODEL, version=2, role=cpb.ROLE_STABLE)
        with channel(operator) as as_operator, channel(reporter) as as_reporter:
            op_deploy = cpb_grpc.ControlStub(as_operator).Deploy
            rep_deploy = cpb_grpc.ControlStub(as_reporter).Deploy
            assert _code(op_deploy, deploy, NO_TOKEN) == grpc.StatusCode.OK
            assert _state(as_operator).stable == 2
            # a certificate listed for ingest is not an operator's
            deploy.version = 1
            assert _code(rep_deploy, deploy, NO_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
            assert _code(rep_deploy, deploy, bearer(WRONG)) == grpc.StatusCode.UNAUTHENTICATED
            # ... but the operator token still works from any trusted client
            assert _code(rep_deploy, deploy, bearer(OPERATOR)) == grpc.StatusCode.OK
            assert _state(as_reporter).stable == 1
            # the ingest subject gets past Feedback's check (this gateway has no monitor, so
            # it then says FAILED_PRECONDITION); the operator's certificate does not
            send = fb_grpc.FeedbackStub(as_reporter).SendLabels
            assert _code(send, _labels(1), NO_TOKEN) == grpc.StatusCode.FAILED_PRECONDITION
            send = fb_grpc.FeedbackStub(as_operator).SendLabels
            assert _code(send, _labels(1), NO_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert gateway.terminate() == 0, gateway.log


# -- start-up: no credentials beyond loopback without --insecure ---------------------------


def _scrubbed_env() -> dict[str, str]:
    """This environment without DRIFTGATE_* (a token set there would change the outcome)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}


def _server_args(command: str, repository: Path, workdir: Path) -> list[str]:
    args = ["--repository", str(repository), "--host", "0.0.0.0", "--grpc-port", "0",
            "--metrics-port", "0"]  # fmt: skip
    return args + (["--data-dir", str(workdir / "data")] if command == "monitor" else [])


REFUSALS = {
    # command, extra flags, the credentials named as missing, those not named
    "serve": ("serve", [], ["--control-token"], ["--ingest-token"]),
    "serve --monitor": (
        "serve", ["--monitor", "127.0.0.1:9", "--control-token", OPERATOR],
        ["--ingest-token"], ["--control-token"],
    ),
    "monitor": ("monitor", [], ["--control-token", "--ingest-token"], []),
    "monitor, ingest token only": (
        "monitor", ["--ingest-token", INGEST], ["--control-token"], ["--ingest-token"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_beyond_loopback_without_tokens_refuses_to_start(
    case: str, repository: Path, tmp_path: Path
) -> None:
    command, extra, named, not_named = REFUSALS[case]
    ready = tmp_path / "ready.json"
    result = subprocess.run(
        [sys.executable, "-m", "driftgate", command, *_server_args(command, repository, tmp_path),
         *extra, "--ready-file", str(ready)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_scrubbed_env(),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert not ready.exists()
    message = next(line for line in output.splitlines() if "refusing" in line)
    assert "0.0.0.0" in message and "--insecure" in message, message
    for flag in named:
        assert flag in message, message
    for flag in not_named:
        assert flag not in message, message


def _listening(port: int) -> set[str]:
    """Where a TCP port listens, from Linux's /proc/net/tcp and tcp6: "any" for a wildcard
    address (0.0.0.0 or ::), "loopback", or the address."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            host, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # the kernel prints each 32-bit word in host (little-endian) byte order
            raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.add(
                "any" if address.is_unspecified
                else "loopback" if address.is_loopback
                else str(address)
            )  # fmt: skip
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("command", ["serve", "monitor"])
def test_insecure_starts_beyond_loopback_with_a_warning_and_metrics_stay_on_loopback(
    command: str, repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("DRIFTGATE_")]:
        monkeypatch.delenv(name)
    server = DriftgateProcess(
        command, [*_server_args(command, repository, tmp_path), "--insecure"], tmp_path, {}
    ).wait_ready()
    try:
        warning = next(line for line in server.log.splitlines() if "--insecure" in line)
        assert "WARNING" in warning and "0.0.0.0" in warning, warning
        assert re.search(r"control token|operator token", warning), warning
        assert _listening(server.grpc_port) == {"any"}
        assert _listening(server.metrics_port) == {"loopback"}
        with grpc.insecure_channel(server.address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert server.terminate() == 0, server.log

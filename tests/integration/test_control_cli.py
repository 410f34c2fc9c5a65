"""The operator CLI against two gateway replicas with a control token: tables, --json, exit
codes, auth, and replicas converging after a command sent to one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.control_client import control, control_stub
from tests.processes import DriftgateProcess, start_gateway
from tests.triton.helpers import logistic_model, write_deployment, write_version

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DriftgateProcess]]:
    repo = tmp_path_factory.mktemp("cli-repository")
    for version, seed in ((1, 0), (2, 7), (3, 3)):
        write_version(repo, "forest", version, logistic_model(seed).onnx, driftgate=True)
    write_deployment(repo, "forest", {"stable": 1})
    work = tmp_path_factory.mktemp("cli-gateways")
    env = {"DRIFTGATE_CONTROL_TOKEN": TOKEN}
    gateways = [start_gateway(repo, work, env=env), start_gateway(repo, work, env=env)]
    yield gateways
    codes = [gateway.terminate() for gateway in gateways]  # every one, then the verdict
    assert codes == [0, 0], [gateway.log for gateway in gateways]


def driftgate(gateway: DriftgateProcess, *args: str, token: str = TOKEN) -> tuple[int, str, str]:
    env = {**os.environ, "DRIFTGATE_GATEWAY": gateway.address, "DRIFTGATE_CONTROL_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "driftgate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def test_auth_is_enforced_on_changes_only(replicas: list[DriftgateProcess]) -> None:
    stub = control_stub(grpc.insecure_channel(replicas[0].address))
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Promote(control.PromoteRequest(model="forest"), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.GetStatus(control.GetStatusRequest()).models[0].state.model == "forest"
    code, _, err = driftgate(replicas[0], "promote", "forest", token="")
    assert code == 1 and "control token" in err and TOKEN not in err


def test_canary_rollout_and_rollback_with_the_cli(replicas: list[DriftgateProcess]) -> None:
    first, second = replicas
    code, out, err = driftgate(first, "deploy", "forest", "2", "--canary", "20", "--reason", "r")
    assert code == 0, err
    assert out.split("\n")[0].split() == [
        "MODEL",
        "REVISION",
        "STABLE",
        "CANARY",
        "SHADOW",
        "PREVIOUS",
    ]
    assert out.split("\n")[1].split() == ["forest", "1", "1", "2", "(20%)", "-", "-"]

    # The other replica converges from deployment.json within about two seconds.
    stub = control_stub(grpc.insecure_channel(second.address))
    started = time.monotonic()
    while stub.GetStatus(control.GetStatusRequest(model="forest")).models[0].state.revision != 1:
        assert time.monotonic() - started < 2.0, "second replica did not converge"
        time.sleep(0.05)

    code, out, _ = driftgate(second, "traffic", "forest", "--canary", "50", "--json")
    assert code == 0 and json.loads(out)["state"]["canary"] == {"version": 2, "weight": 50.0}
    code, out, _ = driftgate(first, "shadow", "forest", "3")
    assert code == 0 and out.split("\n")[1].split()[-2] == "3"
    code, out, _ = driftgate(first, "shadow", "forest", "--off", "--json")
    assert code == 0 and json.loads(out)["state"]["shadow"] == 0
    code, out, _ = driftgate(first, "status", "forest")
    rows = [line.split() for line in out.strip().split("\n")]
    assert rows[0][:5] == ["MODEL", "REV", "VERSION", "ROLE", "WEIGHT"]
    assert [r[2:5] for r in rows[1:]] == [["1", "stable", "50%"], ["2", "canary", "50%"]]
    code, out, _ = driftgate(first, "status", "--json")
    versions = json.loads(out)["models"][0]["versions"]
    assert [(v["version"], v["role"]) for v in versions] == [
        (1, "ROLE_STABLE"),
        (2, "ROLE_CANARY"),
    ]
    code, out, _ = driftgate(first, "promote", "forest", "--expected-revision", "0")
    assert code == 1
    code, out, _ = driftgate(first, "promote", "forest", "--expected-revision", "4", "--json")
    assert code == 0 and json.loads(out)["state"]["stable"] == 2
    code, out, _ = driftgate(first, "rollback", "forest", "--reason", "accuracy drop")
    assert code == 0 and out.split("\n")[1].split()[:3] == ["forest", "6", "1"]
    code, out, _ = driftgate(first, "rollback", "forest", "--to", "2", "--json")
    assert code == 0 and json.loads(out)["state"]["stable"] == 2
    code, out, _ = driftgate(first, "history", "forest")
    lines = out.strip().split("\n")
    assert lines[0].split()[:4] == ["REV", "TIME", "(UTC)", "ACTION"] and len(lines) == 8
    assert "Rollback" in lines[2] and "accuracy drop" in lines[2]
    code, out, _ = driftgate(first, "history", "forest", "--json", "--limit", "2")
    entries = json.loads(out)["entries"]
    assert [e["action"] for e in entries] == ["Rollback", "Rollback"]


def test_errors_a_person_understands(replicas: list[DriftgateProcess]) -> None:
    code, _, err = driftgate(replicas[0], "deploy", "nope", "1")
    assert code == 2 and "not in the repository" in err and "Traceback" not in err
    code, _, err = driftgate(replicas[0], "deploy", "forest", "9")
    assert code == 2 and "version 9 of model 'forest' is not in the repository" in err
    assert "versions: 1, 2, 3" in err
    code, _, err = driftgate(replicas[0], "status", "--gateway", "127.0.0.1:1")
    assert code == 3 and "cannot reach the gateway" in err and "Traceback" not in err

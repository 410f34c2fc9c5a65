"""The compose stack as shipped runs the loop: deploy/compose.yaml's gateway and monitor, with
their own commands, environment, volumes and secrets, as processes on this machine (see
tests/compose_processes.py for what stands in for Docker).

Through them, as an operator would: both health checks pass and the monitor's metrics say it
leads the policy; traffic and labels go through the gateway and reach the monitor (its drift
and accuracy count them); a retrain asked of the monitor writes version 2 into the shared
repository and deploys it as a canary through the gateway it was given; the control client
then moves the canary's traffic and promotes it. A wrong command, flag, address, token file
or a read-only repository for the monitor fails it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.client import Control, Gateway, Monitor
from driftgate.converter import convert
from tests.compose_processes import ComposeProject
from tests.triton.helpers import scrape

pytestmark = pytest.mark.integration

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
MODEL = "churn"
ROWS = 300


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ComposeProject]:
    for name in [n for n in os.environ if n.startswith("DRIFTGATE_")]:
        monkeypatch.delenv(name)  # a container sees only what the compose file sets
    project = ComposeProject(COMPOSE, tmp_path)
    assert set(project.services) == {"gateway", "monitor"}
    x, y = _data()
    gateway_env = project.services["gateway"]["environment"]
    repository = project.volume("gateway", gateway_env["DRIFTGATE_REPOSITORY"])
    convert(LogisticRegression(max_iter=500).fit(x, y), x, MODEL, repository, labels=y)
    # The judge scores the candidate on the newest 60% of the 300 labelled rows, with a
    # 10-point margin: enough rows for a candidate that rarely disagrees with version 1.
    (repository / MODEL / "policy.toml").write_text(
        "[retrain]\nholdout_fraction = 0.6\ntolerance = 0.1\n"
    )
    project.start()
    try:
        yield project
    finally:
        project.stop()


def _data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(1200, 5, n_informative=4, n_redundant=0, random_state=11)
    return x.astype(np.float32).round(2), y


def _wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _clients(stack: ComposeProject) -> tuple[Gateway, Monitor, Control]:
    gateway = stack.address("gateway", stack.container_ports("gateway")["DRIFTGATE_GRPC_PORT"])
    ports = stack.container_ports("monitor")
    monitor = stack.address("monitor", ports["DRIFTGATE_MONITOR_GRPC_PORT"])
    control_token, ingest_token = stack.tokens["control-token"], stack.tokens["ingest-token"]
    return (
        Gateway(gateway, token=ingest_token),
        Monitor(monitor, token=control_token),
        Control(gateway, token=control_token),
    )


def test_compose_stack_serves_monitors_retrains_and_takes_control_commands(
    stack: ComposeProject,
) -> None:
    for name in ("gateway", "monitor"):
        health = stack.healthcheck(name)
        assert health.returncode == 0, (name, health.stdout, health.stderr, stack.logs())
    metrics = stack.ports[
        ("monitor", stack.container_ports("monitor")["DRIFTGATE_MONITOR_METRICS_PORT"])
    ]
    leader = [v for n, _, v in scrape(metrics) if n == "driftgate_monitor_leader"]
    assert leader == [1.0], "the monitor does not run the policy"
    gateway, monitor, control = _clients(stack)
    x, y = _data()
    with gateway, monitor, control:
        for i in range(ROWS):
            gateway.infer(MODEL, {"input": x[i : i + 1]}, request_id=f"r{i}")
            if i % 100 == 99:  # under the gateway's default cap of 200 records a second
                time.sleep(1)
        receipt = gateway.send_labels({f"r{i}": int(y[i]) for i in range(ROWS)}, model=MODEL)
        assert receipt.accepted == ROWS, receipt

        def joined() -> bool:
            return monitor.accuracy(MODEL).label_count >= ROWS

        _wait_until(joined, 30, f"labels not joined at the monitor:\n{stack.logs()}")
        assert monitor.drift(MODEL).rows >= ROWS

        queued = monitor.retrain(MODEL, reason="compose topology test")
        outcome = monitor.wait_for_retrain(MODEL, queued.after_event, timeout=60, poll=0.5)
        assert outcome.kind == "retrain_succeeded", (outcome, stack.logs())
        deployment = control.status(MODEL)[0].deployment
        assert (deployment.stable, deployment.canary) == (1, 2), deployment

        moved = control.traffic(MODEL, 50, reason="compose topology test")
        assert (moved.canary, moved.canary_weight) == (2, 50)
        promoted = control.promote(MODEL, reason="compose topology test")
        assert (promoted.stable, promoted.canary) == (2, None)
        assert gateway.infer(MODEL, {"input": x[:4]}).version == "2"
    codes = stack.stop()
    assert codes == {"gateway": 0, "monitor": 0}, stack.logs()

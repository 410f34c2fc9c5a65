"""The replicated compose stack runs the whole loop by itself: deploy/compose.replicated.yaml's
two gateways and two monitors as processes (their commands, environment, volumes and secrets;
see tests/compose_processes.py), PostgreSQL a server of the test's own from Debian's binaries
whose URL is the monitors' store-URL secret file.

An override file, as an operator would pass with a second ``-f``, only shortens the intervals
(one-second count buckets, half-second reports, one-second leader checks) so that a cycle fits
in a test; the policy file in the model's directory shortens the policy's. Then, as a user
sees it: exactly one monitor leads; traffic with delayed labels goes through both gateways,
then shifts (two inputs move, the concept flips); the leader alarms on drift, retrains,
deploys version 2 as a canary through its gateway, analyses it on both gateways' traffic and
promotes it, each step once; both gateways then answer with version 2, and no request failed
on the way.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from driftgate.client import Gateway, Monitor
from driftgate.converter import ConverterSettings, convert
from driftgate.monitor.demo import POLICY as DEMO_POLICY
from tests.compose_processes import ComposeProject
from tests.postgres_cluster import PostgresCluster
from tests.triton.helpers import scrape

pytestmark = pytest.mark.integration

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.replicated.yaml"
MODEL = "credit-risk"
GATEWAYS, MONITORS = ("gateway-a", "gateway-b"), ("monitor-a", "monitor-b")
FAST = """\
services:
  gateway-a: &gateway
    environment:
      DRIFTGATE_REPORT_INTERVAL: "0.5"
      DRIFTGATE_REPORT_BUCKET_SECONDS: "1"
      DRIFTGATE_POLL_INTERVAL: "0.2"
  gateway-b: *gateway
  monitor-a: &monitor
    environment:
      DRIFTGATE_BUCKET_SECONDS: "1"
      DRIFTGATE_POLICY_SYNC_INTERVAL: "1"
      DRIFTGATE_EVALUATE_INTERVAL: "2"
      DRIFTGATE_LEADER_CHECK_INTERVAL: "1"
  monitor-b: *monitor
"""
# The demo's fast policy (driftgate demo): eight-second drift windows, two drifted ones
# retrain; the canary moves every 3 s over two steps, judged on labels as well.
POLICY = DEMO_POLICY.format(interval=3)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ComposeProject]:
    for name in [n for n in os.environ if n.startswith("DRIFTGATE_")]:
        monkeypatch.delenv(name)  # a container sees only what the compose file sets
    postgres = PostgresCluster()
    postgres.start()
    override = tmp_path / "compose.fast.yaml"
    override.write_text(FAST)
    project = ComposeProject(
        COMPOSE, tmp_path / "stack", [override], secret_values={"store-url": postgres.url}
    )
    assert set(project.services) == {*GATEWAYS, *MONITORS}
    x, y = _data()
    repository = project.volume("gateway-a", "/models")
    forest = RandomForestClassifier(40, max_depth=10, random_state=0).fit(x[:3000], y[:3000])
    settings = ConverterSettings(sample_rows=2000)
    convert(forest, x[:3000], MODEL, repository, labels=y[:3000], settings=settings)
    (repository / MODEL / "policy.toml").write_text(POLICY)
    try:
        project.start()
        yield project
    finally:
        project.stop()
        postgres.remove()


def _data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(8000, 6, n_informative=4, n_redundant=0, class_sep=1.2,
                               random_state=7)  # fmt: skip
    return x.astype(np.float32), y


class Traffic:
    """Requests to one gateway from a thread, each label sent a second after its answer;
    from ``shift()`` on, two inputs move by +4 and the concept flips."""

    def __init__(self, gateway: Gateway, name: str) -> None:
        self.gateway, self.name = gateway, name
        x, y = _data()
        self.x, self.y = x[3000:], y[3000:]
        self.shifted = False
        self.answered: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def shift(self) -> None:
        self.shifted = True

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _row(self, i: int) -> tuple[np.ndarray, int]:
        k = i % len(self.x)
        row, label = self.x[k : k + 1].copy(), int(self.y[k])
        if self.shifted:
            row[:, :2] += 4.0
            label = 1 - label
        return row, label

    def _send(self) -> None:
        pending: list[tuple[float, str, int]] = []
        i = 0
        while not self._stop.is_set():
            row, label = self._row(i)
            request_id = f"{self.name}-{i}"
            try:
                answer = self.gateway.infer(MODEL, {"input": row}, request_id=request_id)
                self.answered[answer.version] = self.answered.get(answer.version, 0) + 1
                pending.append((time.monotonic() + 1.0, request_id, label))
            except Exception as exc:  # every failure is the test's finding
                self.failures.append(f"{request_id}: {exc!r}")
            pending = self._send_due(pending)
            i += 1
            time.sleep(0.02)

    def _send_due(self, pending: list[tuple[float, str, int]]) -> list[tuple[float, str, int]]:
        now = time.monotonic()
        due = {request_id: label for at, request_id, label in pending if at <= now}
        if len(due) < 20:
            return pending
        try:
            self.gateway.send_labels(due, model=MODEL)
        except Exception as exc:
            self.failures.append(f"labels: {exc!r}")
        return [item for item in pending if item[1] not in due]


def _address(stack: ComposeProject, name: str, variable: str) -> str:
    return stack.address(name, stack.container_ports(name)[variable])


def _leaders(stack: ComposeProject) -> list[float]:
    values = []
    for name in MONITORS:
        port = int(_address(stack, name, "DRIFTGATE_MONITOR_METRICS_PORT").rsplit(":")[1])
        values += [v for n, _, v in scrape(port) if n == "driftgate_monitor_leader"]
    return values


def _wait_until(condition: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure()
        time.sleep(0.25)


def test_replicated_stack_alarms_retrains_and_promotes_through_both_gateways(
    stack: ComposeProject,
) -> None:
    for name in (*GATEWAYS, *MONITORS):
        health = stack.healthcheck(name)
        assert health.returncode == 0, (name, health.stdout, health.stderr, stack.logs())
    _wait_until(
        lambda: sorted(_leaders(stack)) == [0.0, 1.0], 15, lambda: f"{_leaders(stack)} lead"
    )
    ingest, control = stack.tokens["ingest-token"], stack.tokens["control-token"]
    gateways = [
        Gateway(_address(stack, name, "DRIFTGATE_GRPC_PORT"), token=ingest) for name in GATEWAYS
    ]
    monitor = Monitor(_address(stack, "monitor-b", "DRIFTGATE_MONITOR_GRPC_PORT"), token=control)
    traffic = [Traffic(gateway, name) for gateway, name in zip(gateways, GATEWAYS, strict=True)]

    def kinds() -> set[str]:
        return {e.kind for e in monitor.events(MODEL, limit=200)}

    def story() -> str:
        events = [(e.kind, e.version, e.reason[:80]) for e in monitor.events(MODEL, limit=200)]
        return f"events {events}\n{[t.failures[:3] for t in traffic]}\n{stack.logs()}"

    with monitor, traffic[0], traffic[1]:
        time.sleep(6)  # unshifted traffic first: the reference windows look like version 1
        for t in traffic:
            t.shift()
        _wait_until(lambda: "drift_alarm" in kinds(), 40, story)
        _wait_until(lambda: {"retrain_succeeded", "canary_started"} <= kinds(), 60, story)
        _wait_until(lambda: "promotion" in kinds(), 60, story)
        events = monitor.events(MODEL, limit=200)
        # one policy runner: each step of the cycle once, for version 2 (two would duplicate)
        for kind in ("retrain_succeeded", "canary_started", "promotion"):
            assert [e.version for e in events if e.kind == kind] == [2], (kind, story())

        def both_answer_with_v2() -> bool:
            return all(g.infer(MODEL, {"input": t.x[:2]}).version == "2"
                       for g, t in zip(gateways, traffic, strict=True))  # fmt: skip

        _wait_until(both_answer_with_v2, 10, story)
    for t in traffic:
        assert t.failures == [], story()
        assert t.answered.get("1", 0) > 100 and t.answered.get("2", 0) > 0, t.answered
    assert sorted(_leaders(stack)) == [0.0, 1.0]
    for gateway in gateways:
        gateway.close()
    codes = stack.stop()
    assert set(codes.values()) == {0}, (codes, stack.logs())

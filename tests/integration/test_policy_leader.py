"""One policy runner among several monitors, under faults, with real processes.

Two monitors on one PostgreSQL store (the shared test server, a scratch database each test),
a gateway under steady traffic reporting to the second one; leader checks every second.

- The leader is SIGKILLed in the middle of a canary analysis: the other monitor leads within
  the stated bound and finishes the analysis once (one promotion, each step once), the
  gateway never fails a request.
- The leader is SIGKILLed while its retraining worker trains (a trainer the test holds): the
  worker's process group goes with it, the new leader reports the retrain failed (interrupted)
  once and runs it again; the retrain was asked of the follower, which stores the request
  for the leader.
- PostgreSQL (a cluster of the test's own) is restarted while a gateway reports: every
  statistic the gateway counted reaches the store (what was not acknowledged is re-sent),
  and the monitor leads again.

SQLite: a second monitor on the same file refuses to start and says to use PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core._proto.driftgate.control.v1 import control_pb2 as control
from driftgate.core._proto.driftgate.control.v1 import control_pb2_grpc as control_grpc
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2_grpc as fb_grpc
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from driftgate.monitor.store import Store
from tests.postgres import scratch_database
from tests.postgres_cluster import PostgresCluster
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "m"
CHECK = 1.0  # --leader-check-interval of every monitor here
# A follower leads within one check interval of the leader's death; the slack is for a
# loaded 2-core CI machine (process start-up and scheduling), not for the product.
TAKEOVER_BOUND = CHECK + 4.0
CANARY_POLICY = """\
[drift]
interval = 3600
[retrain]
enabled = false
[canary]
interval = 2
steps = [20, 50, 80]
deadline = 90
min_requests = 10
[canary.checks]
latency_p99_slack_ms = 1000
"""
RETRAIN_POLICY = """\
[drift]
interval = 3600
[canary]
enabled = false
[retrain]
enabled = false
min_rows = 40
holdout_fraction = 0.5
tolerance = 0.2  # a margin the judge can test on a holdout of 80 rows
trainer = "held_trainer:fit"
timeout = "2m"
"""
# The test's trainer: writes its process group and a run number, then waits (bounded) for
# the test's go-ahead before fitting a clone of the stable estimator.
TRAINER = """\
import os
import time
from pathlib import Path

from sklearn.base import clone

from driftgate import converter

RUNS = Path({runs!r})
RELEASE = Path({release!r})
STABLE = Path({stable!r})


def fit(table):
    with RUNS.open("a") as runs:
        runs.write(f"{{os.getpgid(0)}}\\n")
    deadline = time.monotonic() + 60
    while not RELEASE.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the trainer")
        time.sleep(0.05)
    stable = converter.load_estimator(STABLE)
    layout = converter.make_layout(stable, table)
    return clone(stable).fit(layout.sklearn_input(table), table.target)
"""
ENDED = {"retrain_rejected", "retrain_succeeded", "retrain_failed"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _monitor(
    repository: Path, workdir: Path, store_url: str, name: str, *extra: str, port: int = 0,
    env: dict[str, str] | None = None,
) -> DriftgateProcess:  # fmt: skip
    args = [
        "--repository", str(repository), "--data-dir", str(workdir / f"data-{name}"),
        "--store-url", store_url, "--host", "127.0.0.1", "--grpc-port", str(port),
        "--metrics-port", "0", "--bucket-seconds", "1", "--policy-sync-interval", "0.5",
        "--leader-check-interval", str(CHECK), "--monitor-id", name, *extra,
    ]  # fmt: skip
    return DriftgateProcess("monitor", args, workdir, env or {}).wait_ready()


def _leads(monitor: DriftgateProcess) -> bool:
    with grpc.insecure_channel(monitor.address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="policy-runner"), timeout=5
        )
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _events(monitor: DriftgateProcess, model: str = "") -> list[mpb.Event]:
    """Events, oldest first (every model's with ``model`` empty)."""
    with grpc.insecure_channel(monitor.address) as channel:
        listed = mpb_grpc.MonitorStub(channel).ListEvents(
            mpb.ListEventsRequest(model=model, limit=200), timeout=10
        )
    return list(reversed(listed.events))


def _wait_for(monitor: DriftgateProcess, kinds: set[str], timeout: float) -> list[mpb.Event]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(monitor)
        if kinds & {e.kind for e in events}:
            return events
        assert monitor.process.poll() is None, monitor.log
        time.sleep(0.2)
    raise AssertionError(f"no {kinds} within {timeout} s: {[e.kind for e in _events(monitor)]}")


def _wait_leading(monitor: DriftgateProcess, timeout: float) -> float:
    """Seconds until ``monitor`` leads (bounded)."""
    start = time.monotonic()
    while not _leads(monitor):
        assert time.monotonic() - start < timeout, f"not leading within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _kill(process: DriftgateProcess) -> None:
    process.process.send_signal(signal.SIGKILL)
    process.terminate()  # reaps it and closes its log


def _repository(tmp_path: Path, versions: int, policy: str) -> tuple[Path, np.ndarray, np.ndarray]:
    x, y = make_classification(1200, 4, n_informative=3, n_redundant=0, random_state=5)
    x = x.astype(np.float32).round(2)
    repository = tmp_path / "models"
    for seed in range(versions):
        estimator = LogisticRegression(C=1.0 + seed, max_iter=500).fit(x[:800], y[:800])
        convert(estimator, x[:800], MODEL, repository, labels=y[:800])
    (repository / MODEL / "deployment.json").write_text(json.dumps({"stable": 1, "revision": 1}))
    (repository / MODEL / "policy.toml").write_text(policy)
    return repository, x[800:], y[800:]


class Traffic:
    """Requests to the gateway from a thread until stopped; answers and failures counted."""

    def __init__(self, gateway: DriftgateProcess, x: np.ndarray, pause: float = 0.002) -> None:
        self.gateway, self.x, self.pause = gateway, x, pause
        self.answered, self.failures = 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _send(self) -> None:
        with grpc.insecure_channel(self.gateway.address) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            i = 0
            while not self._stop.is_set():
                row = self.x[i % len(self.x)][None, :]
                request = pb.ModelInferRequest(
                    model_name=MODEL, id=f"t{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, row.shape[1]]}],
                    raw_input_contents=[row.tobytes()],
                )  # fmt: skip
                try:
                    infer(request, timeout=10)
                    self.answered += 1
                except grpc.RpcError as exc:
                    self.failures.append(exc.code())
                i += 1
                time.sleep(self.pause)


@pytest.fixture
def store_url() -> Iterator[str]:
    with scratch_database("driftgate_leader") as url:
        yield url


def test_the_other_monitor_takes_over_a_canary_analysis_and_finishes_it_once(
    tmp_path: Path, store_url: str
) -> None:
    repository, x, _ = _repository(tmp_path, 2, CANARY_POLICY)
    port_b = _free_port()
    gateway = start_gateway(
        repository, tmp_path, "--monitor", f"127.0.0.1:{port_b}", "--report-interval", "0.2"
    )
    first = _monitor(repository, tmp_path, store_url, "first", "--gateway", gateway.address)
    second = _monitor(
        repository, tmp_path, store_url, "second", "--gateway", gateway.address, port=port_b
    )
    try:
        assert _leads(first) and not _leads(second)
        with Traffic(gateway, x) as traffic:
            with grpc.insecure_channel(gateway.address) as channel:
                control_grpc.ControlStub(channel).Deploy(
                    control.DeployRequest(
                        model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=5,
                        reason="a canary to analyse",
                    ),
                    timeout=10,
                )  # fmt: skip
            _wait_for(second, {"canary_step"}, timeout=60)
            _kill(first)  # mid-analysis: the first step is made, two remain
            took = _wait_leading(second, timeout=30)
            events = _wait_for(second, {"promotion", "rollback"}, timeout=90)
        second_log = second.log
    finally:
        second.terminate()
        first.terminate()
        gateway.terminate()

    assert took < TAKEOVER_BOUND, f"took over after {took:.1f} s"
    kinds = [e.kind for e in events if e.model == MODEL]
    assert kinds.count("canary_started") == 1, kinds  # resumed, not started over
    assert kinds.count("canary_step") == 2, kinds  # 20 -> 50 -> 80, each once
    assert kinds.count("promotion") == 1 and "rollback" not in kinds, kinds
    steps = [(e.kind, e.reason) for e in events if e.kind == "canary_step"]
    assert len(set(steps)) == len(steps), steps  # no duplicate events
    elected = [json.loads(e.figures_json) for e in events if e.kind == "leader_elected"]
    assert [(f["identity"], f["epoch"]) for f in elected] == [("first", 1), ("second", 2)]
    assert elected[1]["previous"] == "first"
    assert "leads the policy" in second_log
    deployment = json.loads((repository / MODEL / "deployment.json").read_text())
    assert deployment["stable"] == 2 and not (deployment.get("canary") or {}).get("version")
    assert traffic.failures == [] and traffic.answered > 0


class HeldTrainer:
    """The trainer module on PYTHONPATH; ``runs`` lists each run's process group."""

    def __init__(self, directory: Path, stable: Path) -> None:
        modules = directory / "trainers"
        modules.mkdir()
        self.runs, self.release = directory / "trainer.runs", directory / "trainer.release"
        source = TRAINER.format(runs=str(self.runs), release=str(self.release), stable=str(stable))
        (modules / "held_trainer.py").write_text(source, encoding="utf-8")
        path = [str(modules), os.environ.get("PYTHONPATH", "")]
        self.env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}

    def groups(self) -> list[int]:
        return [int(g) for g in self.runs.read_text().split()] if self.runs.exists() else []

    def wait_runs(self, count: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.groups()) < count:
            assert time.monotonic() < deadline, f"trainer run {count} did not start"
            time.sleep(0.05)
        return self.groups()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _labelled_traffic(gateway: DriftgateProcess, x: np.ndarray, y: np.ndarray, rows: int) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        for i in range(rows):
            infer(
                pb.ModelInferRequest(
                    model_name=MODEL, id=f"r{i}",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [1, x.shape[1]]}],
                    raw_input_contents=[x[i][None, :].tobytes()],
                ),
                timeout=10,
            )  # fmt: skip
        labels = [fb.Label(request_id=f"r{i}", int64_value=int(y[i])) for i in range(rows)]
        fb_grpc.FeedbackStub(channel).SendLabels(fb.SendLabelsRequest(labels=labels), timeout=10)


def _wait_labels(monitor: DriftgateProcess, rows: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        with grpc.insecure_channel(monitor.address) as channel:
            answer = mpb_grpc.MonitorStub(channel).GetAccuracy(
                mpb.GetAccuracyRequest(model=MODEL, version=1), timeout=10
            )
        if answer.label_count >= rows:
            return
        assert time.monotonic() < deadline, f"{answer.label_count} of {rows} labels joined"
        time.sleep(0.2)


def test_a_retrain_of_a_killed_leader_leaves_no_worker_and_runs_again_on_the_next(
    tmp_path: Path, store_url: str
) -> None:
    repository, x, y = _repository(tmp_path, 1, RETRAIN_POLICY)
    trainer = HeldTrainer(tmp_path, repository / MODEL / "1" / "estimator.joblib")
    port_b = _free_port()
    gateway = start_gateway(
        repository, tmp_path, "--monitor", f"127.0.0.1:{port_b}", "--report-interval", "0.2",
        "--record-max-per-second", "0",
    )  # fmt: skip
    first = _monitor(repository, tmp_path, store_url, "first", env=trainer.env)
    second = _monitor(repository, tmp_path, store_url, "second", port=port_b, env=trainer.env)
    try:
        _labelled_traffic(gateway, x, y, rows=160)
        _wait_labels(second, 160)
        with grpc.insecure_channel(second.address) as channel:  # asked of the follower
            mpb_grpc.MonitorStub(channel).Retrain(
                mpb.RetrainRequest(model=MODEL, reason="asked of the follower"), timeout=10
            )
        (group,) = trainer.wait_runs(1)  # the leader's worker trains
        _kill(first)
        deadline = time.monotonic() + 15  # the worker checks its parent every second
        while _group_alive(group):
            assert time.monotonic() < deadline, "the killed leader's worker is still running"
            time.sleep(0.1)
        _wait_leading(second, timeout=30)
        groups = trainer.wait_runs(2)  # queued again by the new leader
        trainer.release.touch()
        events = _wait_for(second, {"retrain_succeeded", "retrain_rejected"}, timeout=90)
    finally:
        trainer.release.touch()
        second.terminate()
        first.terminate()
        gateway.terminate()

    assert groups[1] != group and not _group_alive(groups[1])
    kinds = [e.kind for e in events if e.model == MODEL]
    assert kinds.count("retrain_started") == 2, kinds
    failed = [e for e in events if e.kind == "retrain_failed"]
    assert len(failed) == 1, kinds
    assert failed[0].reason.startswith("interrupted: monitor first (leader epoch 1)")
    assert "asked of the follower" in failed[0].reason
    assert len([k for k in kinds if k in ENDED]) == 2, kinds  # the interrupted one, the rerun
    started = [json.loads(e.figures_json) for e in events if e.kind == "retrain_started"]
    assert "queued again after an interrupted retrain" in started[1]["trigger"]


def _stored_requests(url: str) -> int:
    store = Store(url, bucket_seconds=1)
    try:
        return int(store.traffic(MODEL, 1, None, None)["requests"])
    finally:
        store.close()


def test_postgres_restarted_during_ingest_loses_no_acknowledged_statistics(
    tmp_path: Path,
) -> None:
    cluster = PostgresCluster()
    try:
        cluster.start()
        repository, x, _ = _repository(tmp_path, 1, CANARY_POLICY)
        port = _free_port()
        gateway = start_gateway(
            repository, tmp_path, "--monitor", f"127.0.0.1:{port}", "--report-interval", "0.2"
        )
        monitor = _monitor(repository, tmp_path, cluster.url, "only", port=port)
        try:
            with Traffic(gateway, x, pause=0.005) as traffic:
                _wait_until(lambda: _stored_requests(cluster.url) > 0, 30)
                cluster.stop()  # every session ends: ingest and the lock's connection
                time.sleep(2 * CHECK)  # reports fail meanwhile; the gateway keeps them
                cluster.start()
                time.sleep(1.0)
            answered = traffic.answered
            _wait_until(lambda: _stored_requests(cluster.url) >= answered, 60)
            stored = _stored_requests(cluster.url)
            _wait_leading(monitor, timeout=30)
            elected = [e for e in _events(monitor) if e.kind == "leader_elected"]
        finally:
            monitor.terminate()
            gateway.terminate()
    finally:
        cluster.remove()

    assert traffic.failures == []
    assert stored == answered, (stored, answered)  # none lost, none counted twice
    assert len(elected) == 2  # led again after the restart, a new epoch


def _wait_until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.2)


def test_a_second_monitor_on_one_sqlite_file_refuses_to_run_the_policy(tmp_path: Path) -> None:
    repository, _, _ = _repository(tmp_path, 1, CANARY_POLICY)
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    first = _monitor(repository, tmp_path, url, "first")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "driftgate", "monitor", "--repository", str(repository),
             "--store-url", url, "--grpc-port", "0", "--metrics-port", "-1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert _leads(first)
    finally:
        first.terminate()
    assert second.returncode == 1, second.stderr
    assert "another monitor (" in second.stderr and "runs the policy" in second.stderr
    assert "use a PostgreSQL store" in second.stderr
    assert "Traceback" not in second.stderr

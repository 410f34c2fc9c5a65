"""The dashboard and the alert rules against a real Prometheus scraping real driftgate processes.

A gateway (canary, promotion, rollbacks by an operator and by a canary analysis, shadow, a
version that fails to load, good and bad requests) and a monitor (a report with drifted bin
counts, prediction records and labels of a classifier and of a regressor) run on free ports;
Prometheus runs with ``deploy/prometheus/prometheus.yml`` (its job names and rule file, the
targets and intervals replaced) on a free port with its own storage. Every dashboard query and
every alert's measure is then evaluated through ``/api/v1/query`` and must return series
carrying the labels its legend or annotations print. A panel that queries a metric the code
does not export returns nothing and fails here.

Series of a retired version must leave ``/metrics``: a gateway whose canary is rolled back and
whose shadow is stopped, and a monitor whose version leaves the window, are scraped until they
are gone (their own processes, so that the stack above keeps its state).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import driftgate
from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as mpb
from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from driftgate.core.profile import FeatureProfile, ReferenceProfile, categorical_bins, numeric_bins
from driftgate.core.telemetry import CAUSE_METADATA
from tests.integration.control_client import control, control_stub, infer_call, infer_request
from tests.processes import DriftgateProcess, start_gateway
from tests.triton.helpers import logistic_model, write_deployment, write_version

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "driftgate.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
MODEL = "m"
BROKEN = "broken"  # a model whose only version fails to load
REGRESSOR = "r"  # a regressor known to the monitor only: its MAE and RMSE
# Grafana's variables as a user would set them; $__rate_interval as Grafana computes it for a
# short range at a 1 s scrape interval.
VARIABLES = {
    "$__rate_interval": "30s",
    "$instance": ".+",
    "$model": f"{MODEL}|{BROKEN}|{REGRESSOR}",
    "$version": "1|2|3",
}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ANNOTATION_LABEL = re.compile(r"\$labels\.(\w+)")
# "<measure> <comparison> <number>": the form every alert in alerts.yml is written in.
COMPARISON = re.compile(r"^(?P<measure>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$", re.DOTALL)


def _substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _panel_queries() -> list[tuple[str, str, set[str]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            legend = target.get("legendFormat", "")
            queries.append(
                (
                    f"{panel['title']}/{target['refId']}",
                    target["expr"],
                    set(LEGEND_LABEL.findall(legend)),
                )
            )
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            text = annotation["titleFormat"] + annotation["textFormat"]
            labels = set(LEGEND_LABEL.findall(text)) | set(annotation["tagKeys"].split(","))
            queries.append((f"annotation {annotation['name']}", annotation["expr"], labels))
    return queries


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """A prometheus binary with its own config, storage and port."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.processes: dict[str, DriftgateProcess] = {}
        self.port = _free_port()
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # holds an open response: close it here
            exc.close()
            raise OSError(f"prometheus answered {exc.code} for {path}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait(self, condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                if condition():
                    return
            except (OSError, AssertionError) as exc:
                last = repr(exc)  # not the exception: its traceback would keep sockets alive
            time.sleep(0.25)
        raise TimeoutError(f"{what} within {timeout} s ({last}):\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("the prometheus binary is missing: .ci/run installs Debian's prometheus")
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    return binary


def _repositories(root: Path) -> tuple[Path, Path, ReferenceProfile]:
    serving = root / "models"
    for version, seed in ((1, 0), (2, 7), (3, 3)):
        write_version(serving, MODEL, version, logistic_model(seed).onnx, driftgate=True)
    write_deployment(serving, MODEL, {"stable": 1})
    # A checksum that does not match model.onnx: the gateway counts a load failure.
    write_version(serving, BROKEN, 1, logistic_model(1).onnx, driftgate=True, sha256="0" * 64)

    # The monitor's view of version 1: a reference profile of four numeric features.
    profiles = root / "profiles"
    rng = np.random.default_rng(0)
    profile = ReferenceProfile(
        rows=4000,
        features=tuple(
            FeatureProfile(f"f{i}", "X", i, numeric_bins(rng.standard_normal(4000), 10))
            for i in range(4)
        ),
        prediction=categorical_bins(rng.choice(["0", "1"], 4000), categories=["0", "1"]),
    )
    version = profiles / MODEL / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"not read by the monitor")
    (version / "reference.json").write_text(json.dumps(profile.to_dict()))
    (version / "model.json").write_text(
        json.dumps({"task": "classification", "class_labels": [0, 1]})
    )
    regressor = profiles / REGRESSOR / "1"
    regressor.mkdir(parents=True)
    (regressor / "model.onnx").write_bytes(b"not read by the monitor")
    (regressor / "model.json").write_text(json.dumps({"task": "regression"}))
    return serving, profiles, profile


def _drive_gateway(gateway: DriftgateProcess) -> None:
    """Promote, roll back, deploy a canary again, shadow, then serve good and bad requests."""
    with grpc.insecure_channel(gateway.address) as channel:
        stub = control_stub(channel)
        canary = control.DeployRequest(
            model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=50, reason="try"
        )
        stub.Deploy(canary)
        stub.Promote(control.PromoteRequest(model=MODEL, reason="healthy"))
        stub.Rollback(control.RollbackRequest(model=MODEL, reason="accuracy drop"))
        stub.Deploy(canary)
        # as the monitor's canary analysis rolls back: the cause in the call's metadata
        stub.Rollback(
            control.RollbackRequest(model=MODEL, reason="errors check failed: 12 of 60"),
            metadata=[(CAUSE_METADATA, "canary_failed")],
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Promote(control.PromoteRequest(model=MODEL), metadata=[(CAUSE_METADATA, "x")])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "operator, canary_passed" in (refused.value.details() or "")
        stub.Deploy(canary)
        stub.StartShadow(control.StartShadowRequest(model=MODEL, version=3, reason="compare"))
        time.sleep(1.0)  # the shadow version loads off the request path
        infer = infer_call(channel)
        rng = np.random.default_rng(1)
        for i in range(300):
            infer(infer_request(MODEL, rng.normal(size=(2, 4)), f"r{i}"), timeout=10)
        for version in ("1", "2"):  # wrong shape: INVALID_ARGUMENT, counted for the version
            for i in range(5):
                with pytest.raises(grpc.RpcError):
                    request = infer_request(MODEL, np.zeros((1, 3)), f"bad{i}")
                    request.model_version = version
                    infer(request, timeout=10)


def _drive_monitor(monitor: DriftgateProcess, profile: ReferenceProfile) -> None:
    """A report whose f1 has drifted, 60 prediction records, then labels for 50 of them."""
    stats = mpb.VersionStats(model=MODEL, version=1, requests=300, rows=600)
    for index, feature in enumerate(profile.features):
        counts = np.asarray(feature.bins.counts) * 2
        if index == 1:
            counts[1:3] *= 8
        stats.features.add(name=feature.name, counts=counts.tolist())
    stats.predictions.CopyFrom(mpb.BinCounts(name="label", counts=[4000, 4000, 0]))  # + "other"
    stats.latency.upper_bounds_seconds.extend([0.001, 0.01])
    stats.latency.counts.extend([250, 45, 5])
    report = mpb.ReportRequest(instance_id="gateway-1", sequence=1, versions=[stats])
    now = time.time()
    report.sent_time.FromNanoseconds(int(now * 1e9))
    report.window_start.FromNanoseconds(int((now - 5) * 1e9))
    for i in range(60):
        record = report.records.add(request_id=f"r{i}", model=MODEL, version=1)
        record.time.FromNanoseconds(int((now - 2) * 1e9))
        record.numeric_values.extend([0.1, -0.2, 0.3, 0.0])
        record.prediction.int64_value = i % 2
        record.prediction.probabilities.extend([0.2, 0.8] if i % 2 else [0.9, 0.1])
    labels = [
        fpb.Label(request_id=f"r{i}", model=MODEL, int64_value=(i % 2) ^ (i % 5 == 0))
        for i in range(50)
    ]
    # A regressor (no reference profile: no features) whose predictions are off by 0.5 each:
    # MAE and RMSE 0.5, in the target's unit.
    report.versions.add(model=REGRESSOR, version=1, requests=20, rows=20)
    for i in range(20):
        record = report.records.add(request_id=f"y{i}", model=REGRESSOR, version=1)
        record.time.FromNanoseconds(int((now - 2) * 1e9))
        record.prediction.double_value = float(i)
    labels += [
        fpb.Label(request_id=f"y{i}", model=REGRESSOR, double_value=i + 0.5) for i in range(20)
    ]
    with grpc.insecure_channel(monitor.address) as channel:
        stub = mpb_grpc.MonitorStub(channel)
        assert stub.Report(report, timeout=10).committed_sequence == 1
        assert stub.SendLabels(fpb.SendLabelsRequest(labels=labels), timeout=10).accepted == 70


def _scrape_config(gateway: DriftgateProcess, monitor: DriftgateProcess) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with these processes as targets, every second."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    ports = {"driftgate-gateway": gateway.metrics_port, "driftgate-monitor": monitor.metrics_port}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports.pop(job['job_name'])}"]}]
    assert not ports, f"prometheus.yml has no job for {sorted(ports)}"
    return config


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = _prometheus_binary()
    root = tmp_path_factory.mktemp("prometheus-stack")
    serving, profiles, profile = _repositories(root)
    processes: list[DriftgateProcess] = []
    server: Prometheus | None = None
    try:
        # A monitor address where nothing listens: the gateway holds its reports (and exports
        # what reporting loses) without mixing its traffic into the monitor's figures below.
        gateway = start_gateway(serving, root, "--monitor", f"127.0.0.1:{_free_port()}")
        processes.append(gateway)
        monitor_args = [
            "--repository", str(profiles), "--data-dir", str(root / "monitor-data"),
            "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
            "--evaluate-interval", "0.5",
        ]  # fmt: skip
        monitor = DriftgateProcess("monitor", monitor_args, root, {}).wait_ready()
        processes.append(monitor)
        _drive_gateway(gateway)
        _drive_monitor(monitor, profile)
        (root / "prometheus").mkdir()
        server = Prometheus(binary, _scrape_config(gateway, monitor), root / "prometheus")
        server.wait(
            lambda: {t["health"] for t in server.api("targets")["activeTargets"]} == {"up"},
            "both targets up",
        )
        # Three scrapes of each target with the monitor's gauges evaluated: rates have data.
        server.wait(
            lambda: (
                len(server.query("count_over_time(driftgate_monitor_dataset_drift_share[1m]) >= 3"))
                == 1
                and len(server.query("count_over_time(driftgate_queue_depth[1m]) >= 3")) > 0
            ),
            "three scrapes with the monitor's drift evaluated",
        )
        server.processes = {"gateway": gateway, "monitor": monitor}
        yield server
    finally:
        if server is not None:
            server.stop()
        for process in reversed(processes):
            process.terminate()


def test_both_jobs_are_scraped(prometheus: Prometheus) -> None:
    up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
    assert up == {"driftgate-gateway": "1", "driftgate-monitor": "1"}


@pytest.mark.parametrize(
    ("name", "expr", "labels"), [pytest.param(*query, id=query[0]) for query in _panel_queries()]
)
def test_dashboard_query_returns_series(
    prometheus: Prometheus, name: str, expr: str, labels: set[str]
) -> None:
    result = prometheus.query(_substitute(expr))
    assert result, f"{name}: no series for {_substitute(expr)}"
    for series in result:
        missing = labels - series["metric"].keys()
        assert not missing, f"{name}: series {series['metric']} lacks {missing} for its legend"
        if "model" in series["metric"]:
            assert series["metric"]["model"] in {MODEL, BROKEN, REGRESSOR}, series


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_measure_returns_series(prometheus: Prometheus, rule: dict[str, Any]) -> None:
    prometheus.query(rule["expr"])  # the whole rule evaluates without error
    match = COMPARISON.match(rule["expr"])
    assert match, f"{rule['alert']}: not written as '<measure> <comparison> <number>'"
    result = prometheus.query(match["measure"])
    assert result, f"{rule['alert']}: its measure has no series: {match['measure']}"
    wanted = set(ANNOTATION_LABEL.findall(json.dumps(rule["annotations"])))
    for series in result:
        missing = wanted - series["metric"].keys()
        assert not missing, f"{rule['alert']}: {series['metric']} lacks {missing}"


@pytest.mark.parametrize("name", ["gateway", "monitor"])
def test_health_command_sees_both_processes_serving(prometheus: Prometheus, name: str) -> None:
    # The Dockerfile's HEALTHCHECK and the compose health checks run this command.
    address = prometheus.processes[name].address
    done = subprocess.run(
        [sys.executable, "-m", "driftgate", "health", "--address", address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"{address} (server): SERVING")


def test_rules_load_and_evaluate_cleanly(prometheus: Prometheus) -> None:
    prometheus.wait(
        lambda: all(
            rule.get("lastEvaluation", "").startswith("20")
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
        ),
        "every rule evaluated once",
    )
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in _alert_rules())
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}


def test_rollback_alert_fires_on_the_real_rollbacks_by_cause(prometheus: Prometheus) -> None:
    # DriftgateRolledBack has no "for": the rollbacks the fixture made must make it fire, one
    # alert per bounded cause (the reasons, free text, stay in the history).
    def causes() -> set[str]:
        return {
            a["labels"]["cause"]
            for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "DriftgateRolledBack"
        }

    prometheus.wait(lambda: causes() == {"operator", "canary_failed"}, "two rollback alerts")
    counted = prometheus.query("driftgate_rollbacks_total")
    assert {r["metric"]["cause"]: r["value"][1] for r in counted} == {
        "operator": "1",
        "canary_failed": "1",
    }


def test_regression_errors_have_their_own_families(prometheus: Prometheus) -> None:
    for name in ("mean_absolute_error", "root_mean_squared_error"):
        result = prometheus.query(f'driftgate_monitor_{name}{{model="{REGRESSOR}"}}')
        assert {r["metric"]["window"] for r in result} == {"1h", "total"}, name
        assert all(float(r["value"][1]) == pytest.approx(0.5) for r in result), result
    # the classifier's figures are not mixed in, nor the regressor's in the classifier's
    assert not prometheus.query(f'driftgate_monitor_mean_absolute_error{{model="{MODEL}"}}')
    assert not prometheus.query(f'driftgate_monitor_accuracy{{model="{REGRESSOR}"}}')


@pytest.mark.parametrize("job", ["driftgate-gateway", "driftgate-monitor"])
def test_both_processes_export_process_metrics_and_build_info(
    prometheus: Prometheus, job: str
) -> None:
    memory = prometheus.query(f'process_resident_memory_bytes{{job="{job}"}}')
    assert len(memory) == 1 and float(memory[0]["value"][1]) > 10e6
    assert prometheus.query(f'process_cpu_seconds_total{{job="{job}"}}')
    (build,) = prometheus.query(f'driftgate_build_info{{job="{job}"}}')
    assert build["metric"]["version"] == driftgate.__version__
    assert build["metric"]["python"] == platform.python_version()
    assert build["metric"]["onnxruntime"] and build["metric"]["grpcio"]


def _metrics(process: DriftgateProcess) -> list[tuple[str, dict[str, str], float]]:
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _versions(samples: list[tuple[str, dict[str, str], float]], model: str) -> set[str]:
    return {
        labels["version"]
        for _, labels, _ in samples
        if labels.get("model") == model and "version" in labels
    }


def _until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_series_of_a_retired_version_leave_the_gateways_metrics(tmp_path: Path) -> None:
    serving, _profiles, _profile = _repositories(tmp_path)
    gateway = start_gateway(serving, tmp_path)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = control_stub(channel)
            stub.Deploy(
                control.DeployRequest(
                    model=MODEL, version=2, role=control.ROLE_CANARY, canary_weight=50
                )
            )
            stub.StartShadow(control.StartShadowRequest(model=MODEL, version=3))
            time.sleep(1.0)  # the shadow version loads off the request path
            infer = infer_call(channel)
            for i in range(60):
                infer(infer_request(MODEL, np.ones((1, 4)), f"q{i}"), timeout=10)
            _until(
                lambda: _versions(_metrics(gateway), MODEL) == {"1", "2", "3"},
                "stable, canary and shadow series",
            )
            shadow = [n for n, lab, _ in _metrics(gateway) if lab.get("version") == "3"]
            assert "driftgate_shadow_requests_total" in shadow
            assert "driftgate_model_load_duration_seconds_count" in shadow
            stub.StopShadow(control.StopShadowRequest(model=MODEL, version=3))
            stub.Rollback(
                control.RollbackRequest(model=MODEL, reason="latency check failed"),
                metadata=[(CAUSE_METADATA, "canary_failed")],
            )
            # Drained, then released: nothing of versions 2 and 3 stays on /metrics.
            _until(
                lambda: _versions(_metrics(gateway), MODEL) == {"1"},
                f"only version 1 left: {_versions(_metrics(gateway), MODEL)}",
            )
        samples = _metrics(gateway)
        rollbacks = [(lab, v) for n, lab, v in samples if n == "driftgate_rollbacks_total"]
        assert rollbacks == [({"model": MODEL, "cause": "canary_failed"}, 1.0)]
        ratio = {lab["role"]: v for n, lab, v in samples if n == "driftgate_traffic_ratio"}
        assert ratio == {"stable": 1.0}
    finally:
        gateway.terminate()


def test_series_of_a_version_that_left_the_window_leave_the_monitors_metrics(
    tmp_path: Path,
) -> None:
    _serving, profiles, profile = _repositories(tmp_path)
    shutil.copytree(profiles / MODEL / "1", profiles / MODEL / "2")
    monitor_args = [
        "--repository", str(profiles), "--data-dir", str(tmp_path / "monitor-data"),
        "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
        "--evaluate-interval", "0.3", "--window", "3s", "--bucket-seconds", "1",
    ]  # fmt: skip
    monitor = DriftgateProcess("monitor", monitor_args, tmp_path, {}).wait_ready()
    try:
        with grpc.insecure_channel(monitor.address) as channel:
            stub = mpb_grpc.MonitorStub(channel)
            sequence = 0

            def report(*versions: int) -> None:
                nonlocal sequence
                sequence += 1
                request = mpb.ReportRequest(instance_id="gateway-1", sequence=sequence)
                now = time.time()
                request.sent_time.FromNanoseconds(int(now * 1e9))
                request.window_start.FromNanoseconds(int((now - 0.5) * 1e9))
                request.window_end.FromNanoseconds(int(now * 1e9))
                for version in versions:
                    stats = request.versions.add(model=MODEL, version=version, requests=100)
                    stats.rows = 100
                    for feature in profile.features:
                        counts = np.asarray(feature.bins.counts) // 40
                        stats.features.add(name=feature.name, counts=counts.tolist())
                stub.Report(request, timeout=10)

            report(1, 2)
            _until(
                lambda: _versions(_metrics(monitor), MODEL) == {"1", "2"},
                "drift series of both versions",
            )
            names = {n for n, lab, _ in _metrics(monitor) if lab.get("version") == "2"}
            assert {"driftgate_monitor_drift_psi", "driftgate_monitor_drift_verdict"} <= names
            assert "driftgate_monitor_label_coverage" in names

            def only_version_1() -> bool:
                report(1)  # version 1 keeps its traffic; version 2 has none any more
                return _versions(_metrics(monitor), MODEL) == {"1"}

            _until(only_version_1, "version 2 gone from /metrics after the 3 s window")
    finally:
        monitor.terminate()

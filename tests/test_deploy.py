"""deploy/, the Dockerfile and their agreement with the code, without Docker or a cluster.

``docker build`` and ``docker compose`` cannot run on the CI machines, and the KServe and
Prometheus Operator resources have no schema offline, so these tests parse every file and check
what a mistake would break: metric names the code exports, ports and commands the CLI accepts,
probes on the ports that serve, names that refer to each other. ``scripts/check.sh`` also runs
hadolint, promtool and kubernetes-validate (core resources, strict) on the same files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from driftgate.cli import build_parser
from driftgate.gateway.metrics import GatewayMetrics, ServingSnapshot
from driftgate.gateway.reporter import LabelBuffer, MonitorReporter, StatisticsHub
from driftgate.gateway.settings import GatewaySettings
from driftgate.monitor.leader import Leadership
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.settings import MonitorSettings
from driftgate.monitor.store import Store

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GATEWAY, MONITOR = GatewaySettings(), MonitorSettings()
PORTS = {
    "grpc": GATEWAY.grpc_port,
    "metrics": GATEWAY.metrics_port,
    "monitor-grpc": MONITOR.grpc_port,
    "monitor-metrics": MONITOR.metrics_port,
}
JOBS = {"driftgate-gateway": GATEWAY.metrics_port, "driftgate-monitor": MONITOR.metrics_port}
METRIC = re.compile(r"\b(driftgate_[a-z0-9_]+)\b")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _exported_metrics() -> set[str]:
    """Every series name the gateway (with a monitor to report to) and the monitor can
    expose (``*_created`` is disabled)."""
    gateway, monitor = CollectorRegistry(), CollectorRegistry()
    GatewayMetrics(gateway).watch(ServingSnapshot)  # the live families, with no version
    MonitorReporter("127.0.0.1:1", StatisticsHub(), LabelBuffer(), registry=gateway)
    MonitorMetrics(monitor)
    Leadership(Store("sqlite://"), "deploy", 5.0, monitor, lambda leading: None)  # not started
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    names = set()
    for family in [*gateway.collect(), *monitor.collect()]:
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana/dashboards/driftgate.json").read_text())
    return data


def _dashboard_exprs() -> list[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs + [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]


def _alerts() -> list[dict[str, Any]]:
    groups = _yaml(DEPLOY / "prometheus/alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _parses(argv: list[str]) -> Any:
    """The CLI accepts ``argv`` (``driftgate`` itself left out)."""
    return build_parser().parse_args(argv)


# -- metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_is_exported_by_the_code(source: str) -> None:
    exprs = _dashboard_exprs() if source == "dashboard" else [r["expr"] for r in _alerts()]
    queried = {name for expr in exprs for name in METRIC.findall(expr)}
    assert queried, "no driftgate metric queried"
    assert queried <= _exported_metrics(), sorted(queried - _exported_metrics())


def test_dashboard_shape() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "instance", "model", "version"]
    # one model at a time: the version list holds that model's versions only
    assert variables["model"]["multi"] is False and variables["model"]["includeAll"] is False
    assert 'model=~"$model"' in variables["version"]["definition"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"] and panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Traffic", "Deployment", "Drift", "Accuracy", "Monitor"]
    annotations = {a["name"] for a in dashboard["annotations"]["list"] if "expr" in a}
    assert annotations == {"Promotions", "Rollbacks"}


def test_dashboard_scopes_every_query_to_the_instances_and_never_merges_models() -> None:
    aggregation = re.compile(r"\b(?:sum|max|min|avg|count)\s+by\s*\(([^)]*)\)")
    for expr in _dashboard_exprs():
        selectors = re.findall(r"\b(?:driftgate_[a-z0-9_]+|process_[a-z_]+|up)\{([^}]*)\}", expr)
        assert selectors, expr
        for selector in selectors:
            assert 'instance=~"$instance"' in selector, expr
        if 'model=~"$model"' in expr:
            for labels in aggregation.findall(expr):
                assert "model" in {label.strip() for label in labels.split(",")}, expr


def test_files_named_in_the_prometheus_config_exist() -> None:
    for name in ("prometheus.yml", "alerts.yml", "alerts_test.yml"):
        text = (DEPLOY / "prometheus" / name).read_text()
        for path in re.findall(r"\b(deploy/[\w./-]+\w|[\w-]+\.ya?ml)\b", text):
            base = ROOT if path.startswith("deploy/") else DEPLOY / "prometheus"
            assert (base / path).exists(), f"{name} names {path}, which does not exist"


def test_every_alert_has_runbook_text_and_a_promtool_test() -> None:
    tests = _yaml(DEPLOY / "prometheus/alerts_test.yml")["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        for check in test["alert_rule_test"]:
            expected = check["exp_alerts"]
            (fires if expected else silent).add(check["alertname"])
            if expected and len(test["input_series"]) > len(expected):
                silent.add(check["alertname"])  # other series in the same test stay silent
    for rule in _alerts():
        name = rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, name
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert re.match(r"^.*\S\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+\s*$", rule["expr"], re.S), name
        assert name in fires, f"{name}: no promtool test where it fires"
        assert name in silent, f"{name}: no promtool test where it stays silent"


# -- Prometheus and compose ----------------------------------------------------------------


def test_prometheus_scrapes_the_default_metrics_ports_of_the_compose_services() -> None:
    config = _yaml(DEPLOY / "prometheus/prometheus.yml")
    compose = _yaml(DEPLOY / "compose.yaml")
    assert config["rule_files"] == ["alerts.yml"]
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert set(targets) == set(JOBS)
    for job, target in targets.items():
        host, port = target.split(":")
        assert host in compose["services"] and int(port) == JOBS[job]


def test_compose_stack() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"gateway", "monitor", "prometheus", "grafana"}
    assert (DEPLOY / services["gateway"]["build"]["context"] / "Dockerfile").is_file()
    published = {
        name: {int(p.rsplit(":", 1)[1]) for p in services[name]["ports"]}
        for name in ("gateway", "monitor")
    }
    for service in services.values():  # the host publishes on its loopback only
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), service
    assert published == {
        "gateway": {GATEWAY.grpc_port, GATEWAY.metrics_port},
        "monitor": {MONITOR.grpc_port, MONITOR.metrics_port},
    }
    assert services["gateway"]["environment"]["DRIFTGATE_MONITOR"] == f"monitor:{MONITOR.grpc_port}"
    for name, port in (("gateway", GATEWAY.grpc_port), ("monitor", MONITOR.grpc_port)):
        _parses(services[name]["command"])
        test = services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "driftgate"]
        assert _parses(test[2:]).address == f"localhost:{port}"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists() or source == "../models", volume


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = _yaml(DEPLOY / "grafana/provisioning/dashboards/driftgate.yaml")["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    source = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


# -- listening beyond loopback: addresses and tokens ---------------------------------------


class _Started(Exception):
    """Raised in place of serving: the command got past every check made before listening."""

    def __init__(self, settings: Any) -> None:
        super().__init__("started")
        self.settings = settings


def _start(
    command: list[str],
    environment: dict[str, str],
    secret_files: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Run ``driftgate <command>`` with exactly ``environment`` up to the point where it would
    listen, and return its settings; SystemExit if it refuses. Token files are the container
    paths of ``secret_files`` (path -> secret key), written here with a token each."""
    from driftgate.gateway import _cli as gateway_cli
    from driftgate.monitor import server as monitor_server

    for name in [n for n in os.environ if n.startswith("DRIFTGATE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.endswith("_TOKEN_FILE"):
            assert value in secret_files, f"{name}={value} is not a mounted secret key"
            role = name.removeprefix("DRIFTGATE_").removesuffix("_FILE").lower()
            assert secret_files[value] == role.replace("_", "-"), (name, secret_files[value])
            local = tmp_path / secret_files[value]
            local.write_text(f"a {secret_files[value]} for the test\n")
            value = str(local)
        monkeypatch.setenv(name, value)

    async def serve(settings: Any) -> None:
        raise _Started(settings)

    class MonitorServer:
        def __init__(self, settings: Any) -> None:
            self.settings = settings

        async def serve(self) -> None:
            raise _Started(self.settings)

    monkeypatch.setattr(gateway_cli, "_serve", serve)
    monkeypatch.setattr(monitor_server, "MonitorServer", MonitorServer)
    args = build_parser().parse_args(command)
    with pytest.raises(_Started) as started:
        args.handler(args)
    return started.value.settings


def _check_listens_with_tokens(
    command: list[str],
    environment: dict[str, str],
    secret_files: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On every address, metrics included, and only because the tokens are there."""
    settings = _start(command, environment, secret_files, tmp_path, monkeypatch)
    assert settings.host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
    assert settings.security.control_token_file is not None
    if command[0] == "monitor" or settings.monitor:
        assert settings.security.ingest_token_file is not None
    without = {k: v for k, v in environment.items() if not k.endswith("_TOKEN_FILE")}
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0"):
        _start(command, without, secret_files, tmp_path, monkeypatch)


def _secret_keys(name: str) -> set[str]:
    secret = _yaml(DEPLOY / "kubernetes/secret.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == name
    return set(secret["stringData"])


def test_secret_ships_no_usable_token() -> None:
    secret = _yaml(DEPLOY / "kubernetes/secret.yaml")
    assert set(secret["stringData"]) == {"control-token", "ingest-token"}
    # empty: a server refuses an empty token file, so an unset Secret fails closed
    assert all(value == "" for value in secret["stringData"].values())
    assert "data" not in secret


@pytest.mark.parametrize("service", ["gateway", "monitor"])
def test_compose_services_listen_on_every_address_with_their_tokens(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    spec = compose["services"][service]
    files = {}
    for name in spec["secrets"]:
        source = compose["secrets"][name]["file"]
        assert source.startswith("./secrets/"), source
        files[f"/run/secrets/{name}"] = name
    ignored = (DEPLOY / "secrets/.gitignore").read_text().split()
    assert ignored[-2:] == ["*", "!.gitignore"]  # the token files are never committed
    environment = {k: str(v) for k, v in spec["environment"].items()}
    _check_listens_with_tokens(spec["command"], environment, files, tmp_path, monkeypatch)


def _mounted_secret_files(container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict:
    """Container path -> secret key, for every Secret volume the container mounts."""
    by_name = {v["name"]: v for v in volumes}
    files = {}
    for mount in container.get("volumeMounts", []):
        secret = by_name[mount["name"]].get("secret")
        if secret is None:
            continue
        # a subPath mount is never updated by the kubelet: a rotated token would not arrive
        assert "subPath" not in mount, mount
        keys = {i["key"]: i["path"] for i in secret["items"]} if "items" in secret else None
        for key in _secret_keys(secret["secretName"]):
            if keys is None or key in keys:
                path = keys[key] if keys else key
                files[f"{mount['mountPath']}/{path}"] = key
    return files


@pytest.mark.parametrize("name", ["gateway", "monitor"])
def test_kubernetes_containers_listen_on_every_address_with_their_tokens(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = _pod()["spec"]
    container = next(c for c in pod["containers"] if c["name"] == name)
    environment = {
        k: str(v) for k, v in _yaml(DEPLOY / "kubernetes/configmap.yaml")["data"].items()
    }
    environment |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    files = _mounted_secret_files(container, pod["volumes"])
    _check_listens_with_tokens(container["args"], environment, files, tmp_path, monkeypatch)


def test_kserve_runtime_listens_on_every_address_with_the_operator_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _yaml(DEPLOY / "kubernetes/kserve/servingruntime.yaml")["spec"]
    container = spec["containers"][0]
    environment = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    files = _mounted_secret_files(container, spec["volumes"])
    _check_listens_with_tokens(container["args"], environment, files, tmp_path, monkeypatch)


# -- Dockerfile ----------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_like_the_readme_and_runs_unprivileged() -> None:
    instructions = _dockerfile()
    runs = " && ".join(args for op, args in instructions if op == "RUN")
    readme = (ROOT / "README.md").read_text()
    for step in ("pip install -r requirements.lock", "pip install --no-deps ."):
        assert step in runs and step in readme, step
    assert len([op for op, _ in instructions if op == "FROM"]) == 2  # build, then runtime
    users = [args for op, args in instructions if op == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    exposed = {int(p) for op, args in instructions if op == "EXPOSE" for p in args.split()}
    assert exposed == set(PORTS.values())
    entrypoint = [json.loads(args) for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoint == [["driftgate"]]
    command = json.loads([args for op, args in instructions if op == "CMD"][-1])
    _parses(command)
    health = [args for op, args in instructions if op == "HEALTHCHECK"][-1]
    probe = json.loads(health.split("CMD", 1)[1])
    assert probe[0] == "driftgate"
    assert _parses(probe[1:]).address == f"localhost:{GATEWAY.grpc_port}"
    copied = {args.split()[0] for op, args in instructions if op == "COPY" and "--from" not in args}
    allowed = (ROOT / ".dockerignore").read_text()
    for source in copied:
        assert f"!{source}" in allowed or f"!{source}/" in allowed, source


# -- Kubernetes ----------------------------------------------------------------------------


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _yaml(DEPLOY / "kubernetes/deployment.yaml")["spec"]["template"]
    return spec


def test_deployment_runs_the_gateway_with_the_monitor_sidecar_on_the_default_ports() -> None:
    pod = _pod()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert set(containers) == {"gateway", "monitor"}
    assert [containers[n]["args"][0] for n in ("gateway", "monitor")] == ["serve", "monitor"]
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    for container in containers.values():
        _parses(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert all(PORTS[name] == port for name, port in ports.items()), ports
        grpc_port = next(port for name, port in ports.items() if name.endswith("grpc"))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port, (container["name"], probe)
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_deployment_refers_to_the_pvc_configmap_and_service() -> None:
    pod = _pod()
    labels = pod["metadata"]["labels"]
    claim = next(v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v)
    pvc = _yaml(DEPLOY / "kubernetes/pvc.yaml")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    configmap = _yaml(DEPLOY / "kubernetes/configmap.yaml")
    for container in pod["spec"]["containers"]:
        assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
    service = _yaml(DEPLOY / "kubernetes/service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    pod_ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in pod_ports and port["port"] == PORTS[port["targetPort"]]


def test_configmap_sets_only_variables_the_cli_reads_with_the_container_ports() -> None:
    data = _yaml(DEPLOY / "kubernetes/configmap.yaml")["data"]
    sources = "".join(
        (ROOT / path).read_text()
        for path in (
            "driftgate/cli.py",
            "driftgate/core/cli.py",
            "gateway/_cli.py",
            "monitor/_cli.py",
        )
    )
    for key in data:
        short = key.removeprefix("DRIFTGATE_")
        assert f'"{key}"' in sources or f'env("{short}"' in sources, key
    assert int(data["DRIFTGATE_GRPC_PORT"]) == PORTS["grpc"]
    assert int(data["DRIFTGATE_METRICS_PORT"]) == PORTS["metrics"]
    assert int(data["DRIFTGATE_MONITOR_GRPC_PORT"]) == PORTS["monitor-grpc"]
    assert int(data["DRIFTGATE_MONITOR_METRICS_PORT"]) == PORTS["monitor-metrics"]


def test_podmonitor_scrapes_both_ports_under_the_alerting_job_names() -> None:
    monitor = _yaml(DEPLOY / "kubernetes/podmonitor.yaml")
    pod_ports = {p["name"] for c in _pod()["spec"]["containers"] for p in c["ports"]}
    jobs = {}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in pod_ports
        jobs[endpoint["relabelings"][0]["replacement"]] = PORTS[endpoint["port"]]
    assert jobs == JOBS


def test_kserve_runtime_serves_grpc_v2_on_the_gateway_port() -> None:
    runtime = _yaml(DEPLOY / "kubernetes/kserve/servingruntime.yaml")
    service = _yaml(DEPLOY / "kubernetes/kserve/inferenceservice.yaml")
    assert runtime["kind"] == "ServingRuntime" and service["kind"] == "InferenceService"
    assert runtime["spec"]["protocolVersions"] == ["grpc-v2"]
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    args = _parses(container["args"])
    assert str(args.repository) == "/mnt/models" and args.grpc_port == PORTS["grpc"]
    assert container["ports"] == [
        {"name": "h2c", "containerPort": PORTS["grpc"], "protocol": "TCP"},
        {"name": "metrics", "containerPort": PORTS["metrics"], "protocol": "TCP"},
    ]
    assert args.metrics_port == PORTS["metrics"]
    assert runtime["spec"]["grpcDataEndpoint"] == f"port:{PORTS['grpc']}"
    # KServe's documented metrics annotations, and scraping turned on by the InferenceService
    assert runtime["spec"]["annotations"] == {
        "prometheus.kserve.io/port": str(PORTS["metrics"]),
        "prometheus.kserve.io/path": "/metrics",
    }
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    # Knative admits one container port: with the metrics port declared, RawDeployment
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    environment = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    host, port = environment["DRIFTGATE_MONITOR"].rsplit(":", 1)
    monitor_service = _yaml(DEPLOY / "kubernetes/service.yaml")
    assert host == monitor_service["metadata"]["name"] and int(port) == PORTS["monitor-grpc"]
    model = service["spec"]["predictor"]["model"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert (
        model["runtime"] == runtime["metadata"]["name"] and model["modelFormat"]["name"] in formats
    )
    assert model["protocolVersion"] == "grpc-v2"


def test_readme_documents_the_deploy_files() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Deployment" in readme
    for path in ("deploy/compose.yaml", "deploy/kubernetes", "postgresql+psycopg://"):
        assert path in readme, path
    assert "docker build" in readme

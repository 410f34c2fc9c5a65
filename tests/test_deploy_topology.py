"""The shipped topologies wire the loop: each monitor writes the repository its gateways serve,
acts on a gateway, and exactly one runs the policy (one SQLite monitor, or monitors electing a
leader over one PostgreSQL store). Read from deploy/ with the real CLI parser, offline;
tests/integration/test_compose_topology.py and test_compose_replicated.py run the compose
stacks (compose.yaml, compose.replicated.yaml) as processes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftgate.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    """``kind/name`` -> resource, for every document of a manifest."""
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(path.read_text())}


def _parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI's reading of ``argv`` under exactly ``env`` (its defaults come from it)."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DRIFTGATE_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return build_parser().parse_args(argv)


# -- Kubernetes ----------------------------------------------------------------------------


def _deployment() -> dict[str, Any]:
    return _documents(KUBERNETES / "deployment.yaml")["Deployment/driftgate"]


def _containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _deployment()["spec"]["template"]["spec"]["containers"]}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    configmap = _documents(KUBERNETES / "configmap.yaml")["ConfigMap/driftgate"]["data"]
    given = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return {k: str(v) for k, v in configmap.items()} | given


def _args(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    container = _containers()[name]
    return _parse(container["args"], _environment(container), monkeypatch)


def _port(container: dict[str, Any], suffix: str) -> int:
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"].endswith(suffix))


def test_kubernetes_monitor_writes_the_repository_its_gateway_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mounts = {}
    for name in ("gateway", "monitor"):
        repository = str(_args(name, monkeypatch).repository)
        mount = next(m for m in _containers()[name]["volumeMounts"] if m["mountPath"] == repository)
        assert not mount.get("readOnly", False), f"{name} cannot write {repository}"
        mounts[name] = mount["name"]
    assert mounts["gateway"] == mounts["monitor"]
    pvc = _documents(KUBERNETES / "pvc.yaml")["PersistentVolumeClaim/driftgate-models"]
    volumes = {v["name"]: v for v in _deployment()["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts["monitor"]]["persistentVolumeClaim"]["claimName"]
    assert claim == pvc["metadata"]["name"] and "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_kubernetes_monitor_and_gateway_reach_each_other_in_the_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    containers = _containers()
    gateway, monitor = _args("gateway", monkeypatch), _args("monitor", monkeypatch)
    assert monitor.gateway == f"localhost:{_port(containers['gateway'], 'grpc')}"
    assert gateway.monitor == f"localhost:{_port(containers['monitor'], 'grpc')}"
    assert monitor.grpc_port == _port(containers["monitor"], "grpc")
    assert gateway.grpc_port == _port(containers["gateway"], "grpc")


def _store_url(monitor: dict[str, Any]) -> dict[str, Any]:
    variable = next(e for e in monitor["env"] if e["name"] == "DRIFTGATE_STORE_URL")
    reference: dict[str, Any] = variable["valueFrom"]["secretKeyRef"]
    return reference


def test_kubernetes_replicas_share_one_postgresql_and_all_may_lead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _deployment()["spec"]["replicas"] > 1
    # Several monitors on SQLite would each lead on their own pod's traffic: the store URL
    # is required, a pod without it does not start.
    reference = _store_url(_containers()["monitor"])
    assert reference.get("optional", False) is False
    assert _args("monitor", monkeypatch).scheduler is True  # every one stands for election
    postgres = _documents(KUBERNETES / "postgres.yaml")
    server = postgres["StatefulSet/driftgate-postgres"]["spec"]
    (container,) = server["template"]["spec"]["containers"]
    password = next(e for e in container["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["name"] == reference["name"]
    service = postgres["Service/driftgate-postgres"]["spec"]
    assert service["selector"].items() <= server["template"]["metadata"]["labels"].items()
    (port,) = service["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    # the URL the file tells operators to store names this Service, its port and database
    env = {e["name"]: e.get("value") for e in container["env"]}
    url = f"@{postgres['Service/driftgate-postgres']['metadata']['name']}:{port['port']}/"
    comment = (KUBERNETES / "postgres.yaml").read_text()
    assert re.search(rf"postgresql\+psycopg://{env['POSTGRES_USER']}:\S+{url}", comment)
    assert f"{url}{env['POSTGRES_DB']}" in comment


def test_kubernetes_postgres_probes_run_inside_its_container() -> None:
    server = _documents(KUBERNETES / "postgres.yaml")["StatefulSet/driftgate-postgres"]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe
    claims = {c["metadata"]["name"] for c in server["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in container["volumeMounts"]} - claims <= {
        v["name"] for v in server["spec"]["template"]["spec"]["volumes"]
    }


# -- compose -------------------------------------------------------------------------------

COMPOSE_FILES = ("compose.yaml", "compose.replicated.yaml")


def _compose(file: str = "compose.yaml") -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((DEPLOY / file).read_text())
    return spec


def _compose_args(name: str, monkeypatch: pytest.MonkeyPatch, file: str = "compose.yaml") -> Any:
    service = _compose(file)["services"][name]
    env = {k: str(v) for k, v in service["environment"].items()}
    return _parse(service["command"], env, monkeypatch)


def _volume(service: dict[str, Any], target: str) -> tuple[str, list[str]]:
    for entry in service["volumes"]:
        source, mounted, *mode = entry.split(":")
        if mounted == target:
            return source, mode
    raise AssertionError(f"nothing mounted at {target}: {service['volumes']}")


def _commands(file: str, command: str) -> list[str]:
    services = _compose(file)["services"]
    return [n for n, s in services.items() if s.get("command", [""])[0] == command]


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_monitor_writes_the_repository_and_acts_on_the_gateway(
    file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _compose(file)["services"]
    gateways = {n: _compose_args(n, monkeypatch, file) for n in _commands(file, "serve")}
    monitors = {n: _compose_args(n, monkeypatch, file) for n in _commands(file, "monitor")}
    assert gateways and monitors
    sources = {_volume(services[n], str(a.repository))[0] for n, a in gateways.items()}
    assert len(sources) == 1, f"the gateways serve different repositories: {sources}"
    for name, monitor in monitors.items():
        source, mode = _volume(services[name], str(monitor.repository))
        assert source in sources and "ro" not in mode, name
        host, port = str(monitor.gateway).split(":")
        assert host in gateways and int(port) == gateways[host].grpc_port, name
    for name, gateway in gateways.items():
        host, port = str(gateway.monitor).split(":")
        assert host in monitors and int(port) == monitors[host].grpc_port, name
    # every gateway on host ports of its own, so each is reachable without a load balancer
    published = [p.rsplit(":", 1)[0] for n in gateways for p in services[n]["ports"]]
    assert len(published) == len(set(published)), published


def _compose_store(args: Any, service: dict[str, Any]) -> str:
    """The monitor's store URL, or for a URL in a secret file the secret's name."""
    if args.store_url_file is None:
        return str(args.store_url)
    path = Path(str(args.store_url_file))
    assert path.parent == Path("/run/secrets") and path.name in service["secrets"], path
    return f"secret:{path.name}"


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_runs_one_policy_runner(file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runners = []
    for name, service in _compose(file)["services"].items():
        if service.get("command", [""])[0] == "monitor":
            args = _compose_args(name, monkeypatch, file)
            replicas = service.get("deploy", {}).get("replicas", 1)
            runners += [_compose_store(args, service)] * (replicas if args.scheduler else 0)
    assert runners, "no monitor runs the policy"
    # Several would need one PostgreSQL store to elect a leader on (on SQLite the second
    # refuses to start).
    if len(runners) > 1:
        assert len(set(runners)) == 1, runners
        if not runners[0].startswith("secret:"):
            assert runners[0].startswith("postgresql"), runners


def test_compose_replicated_store_url_names_its_postgres_service() -> None:
    spec = _compose("compose.replicated.yaml")
    postgres = spec["services"]["postgres"]
    env = postgres["environment"]
    password = Path(env["POSTGRES_PASSWORD_FILE"])
    assert password.parent == Path("/run/secrets") and password.name in postgres["secrets"]
    assert set(spec["secrets"]) >= {"store-url", password.name}
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    for name in _commands("compose.replicated.yaml", "monitor"):
        condition = spec["services"][name]["depends_on"]["postgres"]["condition"]
        assert condition == "service_healthy", name
    # the URL the header tells operators to write names this service, its user and database
    header = (DEPLOY / "compose.replicated.yaml").read_text()
    url = rf"postgresql\+psycopg://{env['POSTGRES_USER']}:\S+@postgres:5432/{env['POSTGRES_DB']}"
    assert re.search(url, header)
    assert f"> deploy/secrets/{password.name}" in header

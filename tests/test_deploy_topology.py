"""The shipped topologies wire the loop: each monitor writes the repository its gateways serve,
acts on a gateway, and exactly one runs the policy (one SQLite monitor, or monitors electing a
leader over one PostgreSQL store). Read from deploy/ with the real CLI parser, offline;
tests/integration/test_compose_topology.py runs the compose stack as processes.
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


def _compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return spec


def _compose_args(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    service = _compose()["services"][name]
    env = {k: str(v) for k, v in service["environment"].items()}
    return _parse(service["command"], env, monkeypatch)


def _volume(service: dict[str, Any], target: str) -> tuple[str, list[str]]:
    for entry in service["volumes"]:
        source, mounted, *mode = entry.split(":")
        if mounted == target:
            return source, mode
    raise AssertionError(f"nothing mounted at {target}: {service['volumes']}")


def test_compose_monitor_writes_the_repository_and_acts_on_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    gateway, monitor = (_compose_args(n, monkeypatch) for n in ("gateway", "monitor"))
    gateway_source, _ = _volume(services["gateway"], str(gateway.repository))
    monitor_source, mode = _volume(services["monitor"], str(monitor.repository))
    assert monitor_source == gateway_source and "ro" not in mode
    assert monitor.gateway == f"gateway:{gateway.grpc_port}"
    assert gateway.monitor == f"monitor:{monitor.grpc_port}"


def test_compose_runs_one_policy_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    runners = []
    for name, service in _compose()["services"].items():
        if service.get("command", [""])[0] == "monitor":
            args = _compose_args(name, monkeypatch)
            replicas = service.get("deploy", {}).get("replicas", 1)
            runners += [args] * (replicas if args.scheduler else 0)
    assert runners, "no monitor runs the policy"
    # Several would need one PostgreSQL store to elect a leader on (on SQLite the second
    # refuses to start).
    if len(runners) > 1:
        assert all(str(a.store_url).startswith("postgresql") for a in runners), runners

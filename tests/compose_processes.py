"""deploy/compose.yaml brought up as processes on this machine, for want of a Docker engine.

Each driftgate service runs its own ``command`` with exactly its ``environment`` (no other
``DRIFTGATE_`` variable), as a container would; what Docker would provide is rewritten the way
Docker's networking and mounts make it look from inside:

- a service's host name and container port (``monitor:8003``) become ``127.0.0.1`` and a free
  port of its own; ``localhost:PORT`` in a service's own health check its own free port; the
  server binds that port through the port variable of its command (the containers use the
  CLI's defaults, so a container port is the default unless the file sets the variable);
- ``0.0.0.0`` becomes ``127.0.0.1`` (the tokens are still required: the servers enforce them
  on any address other than loopback only, so the unit tests in test_deploy.py check that);
- a volume's container path becomes a directory of the test, shared by the services that mount
  the same source; a read-only (``:ro``) mount is a copy of its own made at start, since the
  tests may run as root, which file modes would not stop: writes through it reach no other
  service, as they would fail in a container;
- a Compose secret ``/run/secrets/NAME`` becomes a file holding a fresh token, or the value
  the test gives for it (the URL of a PostgreSQL server of its own for a store-URL secret);
- services built from elsewhere (``postgres``) do not run: the test starts what stands for
  them and passes its address in a secret.

Override files (``docker compose -f FILE -f OVERRIDE``) may add environment variables to a
service, merged over the file's as Compose merges mappings.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from driftgate.gateway.settings import GatewaySettings
from driftgate.monitor.settings import MonitorSettings
from tests.processes import DriftgateProcess

_GATEWAY, _MONITOR = GatewaySettings(), MonitorSettings()
PORT_VARIABLES = {
    "serve": {
        "DRIFTGATE_GRPC_PORT": _GATEWAY.grpc_port,
        "DRIFTGATE_METRICS_PORT": _GATEWAY.metrics_port,
    },
    "monitor": {
        "DRIFTGATE_MONITOR_GRPC_PORT": _MONITOR.grpc_port,
        "DRIFTGATE_MONITOR_METRICS_PORT": _MONITOR.metrics_port,
    },
}
"""For each command the variables setting the ports it binds, with the CLI's defaults."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _merge_environment(spec: dict[str, Any], override: dict[str, Any]) -> None:
    """An override file's environment variables over ``spec``'s (nothing else overridden)."""
    for name, service in override["services"].items():
        assert set(service) == {"environment"}, f"{name}: only environment is overridden"
        base = spec["services"][name]
        base["environment"] = {**base.get("environment", {}), **service["environment"]}


class ComposeProject:
    """The driftgate services of a compose file (those built from this repository), mapped
    onto ``workdir``; ``start()`` runs them, ``stop()`` ends them."""

    def __init__(
        self,
        compose_file: Path,
        workdir: Path,
        overrides: Sequence[Path] = (),
        secret_values: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = compose_file.parent
        self.spec: dict[str, Any] = yaml.safe_load(compose_file.read_text())
        for override in overrides:
            _merge_environment(self.spec, yaml.safe_load(override.read_text()))
        self.workdir = workdir
        self.services = {
            name: service
            for name, service in self.spec["services"].items()
            if "build" in service and service["command"][0] in PORT_VARIABLES
        }
        self.ports = {
            (name, port): _free_port()
            for name, service in self.services.items()
            for port in self.container_ports(name).values()
        }
        self.tokens = {name: secrets.token_hex(16) for name in self.spec.get("secrets", {})}
        self.tokens.update(secret_values or {})
        self.processes: dict[str, DriftgateProcess] = {}

    def container_ports(self, name: str) -> dict[str, int]:
        """Port variable -> the port the service binds inside its container."""
        service = self.services[name]
        environment = service.get("environment", {})
        return {
            variable: int(environment.get(variable, default))
            for variable, default in PORT_VARIABLES[service["command"][0]].items()
        }

    def address(self, name: str, container_port: int) -> str:
        """Where a client on this machine reaches ``name``'s container port."""
        return f"127.0.0.1:{self.ports[(name, container_port)]}"

    def volume(self, name: str, target: str) -> Path:
        """The directory standing for the container path ``target`` of service ``name``."""
        for entry in self.services[name].get("volumes", []):
            source, mounted, *_ = entry.split(":")
            if mounted == target:
                return self._shared(source)
        raise KeyError(f"{name} mounts nothing at {target}")

    def _shared(self, source: str) -> Path:
        if source.startswith("."):  # a bind mount, relative to the compose file
            relative = (self.directory / source).resolve().relative_to(self.directory.parent)
            path = self.workdir / "binds" / relative
        else:
            path = self.workdir / "volumes" / source
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _mounts(self, name: str) -> dict[str, Path]:
        mounts = {}
        for entry in self.services[name].get("volumes", []):
            source, target, *mode = entry.split(":")
            path = self._shared(source)
            if mode and mode[0].split(",")[0] == "ro":
                copy = self.workdir / "read-only" / name / target.strip("/")
                shutil.copytree(path, copy, dirs_exist_ok=True)
                path = copy
            mounts[target] = path
        for secret in self.services[name].get("secrets", []):
            path = self.workdir / "secrets" / secret
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.tokens[secret] + "\n")
            mounts[f"/run/secrets/{secret}"] = path
        return mounts

    def _rewrite(self, name: str, value: str, mounts: dict[str, Path]) -> str:
        """One environment value or argument as it must read outside the containers."""
        if value == "0.0.0.0":
            return "127.0.0.1"
        for target in sorted(mounts, key=len, reverse=True):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(mounts[target]) + value[len(target.rstrip("/")) :]
        for (service, port), free in self.ports.items():
            own = [f"localhost:{port}"] if service == name else []
            if value in (f"{service}:{port}", *own):
                return f"127.0.0.1:{free}"
        return value

    def environment(self, name: str) -> dict[str, str]:
        mounts = self._mounts(name)
        given = self.services[name].get("environment", {})
        environment = {k: self._rewrite(name, str(v), mounts) for k, v in given.items()}
        for variable, port in self.container_ports(name).items():
            environment[variable] = str(self.ports[(name, port)])
        return environment

    def start(self, timeout: float = 60.0) -> None:
        for name, service in self.services.items():
            command = [self._rewrite(name, str(a), {}) for a in service["command"]]
            workdir = self.workdir / "logs"
            workdir.mkdir(exist_ok=True)
            env = self.environment(name)
            self.processes[name] = DriftgateProcess(command[0], command[1:], workdir, env)
        for process in self.processes.values():
            process.wait_ready(timeout)

    def healthcheck(self, name: str) -> subprocess.CompletedProcess[str]:
        """Run the service's health check command against it."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "driftgate"], test
        argv = [self._rewrite(name, str(a), {}) for a in test[2:]]
        return subprocess.run(
            [sys.executable, "-m", "driftgate", *argv], capture_output=True, text=True, timeout=30
        )

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log}" for name, p in self.processes.items())

    def stop(self) -> dict[str, int]:
        return {name: p.terminate() for name, p in self.processes.items()}

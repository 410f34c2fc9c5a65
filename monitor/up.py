"""``driftgate up``: a gateway and a monitor together on one machine, until Ctrl-C.

Two subprocesses of ``driftgate`` wired to each other: the gateway gets ``--monitor`` (its
statistics, prediction records and labels go to the monitor) and the monitor ``--gateway``
(its canary analysis and retraining act through the gateway's Control service). The control
token, when there is one, reaches both through the environment, never a flag. SIGINT and
SIGTERM are forwarded to both; when either exits, the other is stopped; ``up`` exits with
the first non-zero status. ``LocalStack`` is the same supervisor as a class (the demo uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from driftgate.core.cli import add_control_token_flags, add_token_flags, control_token, token
from driftgate.core.objectstore import repository_location

__all__ = ["LocalStack", "StackSettings", "free_port", "register"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for wiring processes that must know each other)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class StackSettings:
    """Where the two processes listen and what they serve."""

    repository: Path | str = Path("models")  # a directory or an s3:// URL
    data_dir: Path = Path("driftgate-data")
    host: str = "127.0.0.1"
    grpc_port: int = 8001  # the gateway's; 0 picks a free one
    metrics_port: int = 8002
    monitor_grpc_port: int = 8003
    monitor_metrics_port: int = 8004
    control_token: str | None = None
    ingest_token: str | None = None
    #: certificate and key both servers present, and the CA each uses to verify the other
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    insecure: bool = False
    gateway_args: tuple[str, ...] = ()  # extra `driftgate serve` flags
    monitor_args: tuple[str, ...] = ()  # extra `driftgate monitor` flags
    logs: Path | None = None  # directory for the two logs; None: inherit stdout/stderr
    env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    """Start, wait for, and stop the gateway and the monitor subprocesses."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self._files: list[IO[bytes]] = []
        self._ready_dir = Path(tempfile.mkdtemp(prefix="driftgate-up-"))

    @property
    def gateway(self) -> str:
        return f"{self.settings.host}:{self.ports['grpc']}"

    @property
    def monitor(self) -> str:
        return f"{self.settings.host}:{self.ports['monitor_grpc']}"

    def start(self, timeout: float = 60.0) -> None:
        s = self.settings
        pick = {
            "grpc": s.grpc_port,
            "metrics": s.metrics_port,
            "monitor_grpc": s.monitor_grpc_port,
            "monitor_metrics": s.monitor_metrics_port,
        }
        self.ports = {k: (free_port(s.host) if v == 0 else v) for k, v in pick.items()}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **s.env}
        env.update(self._security_env())
        common = ["--repository", str(s.repository), "--host", s.host]
        monitor = [
            "monitor", *common, "--data-dir", str(s.data_dir),
            "--grpc-port", str(self.ports["monitor_grpc"]),
            "--metrics-port", str(self.ports["monitor_metrics"]),
            "--gateway", self.gateway, *s.monitor_args,
        ]  # fmt: skip
        gateway = [
            "serve", *common,
            "--grpc-port", str(self.ports["grpc"]),
            "--metrics-port", str(self.ports["metrics"]),
            "--monitor", self.monitor, *s.gateway_args,
        ]  # fmt: skip
        self._spawn("monitor", monitor, env)
        self._spawn("gateway", gateway, env)
        self.wait_ready(timeout)

    def _security_env(self) -> dict[str, str]:
        """Credentials and TLS for both processes, as the variables their flags read."""
        s, env = self.settings, {}
        for variable, value in (
            ("DRIFTGATE_CONTROL_TOKEN", s.control_token),
            ("DRIFTGATE_INGEST_TOKEN", s.ingest_token),
            ("DRIFTGATE_TLS_CERT", s.tls_cert),
            ("DRIFTGATE_TLS_KEY", s.tls_key),
            ("DRIFTGATE_MONITOR_TLS_CA", s.tls_ca),  # the gateway verifies the monitor
            ("DRIFTGATE_GATEWAY_TLS_CA", s.tls_ca),  # and the monitor the gateway
        ):
            if value:
                env[variable] = str(value)
        if s.insecure:
            env["DRIFTGATE_INSECURE"] = "1"
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        ready = self._ready_dir / f"{name}.json"
        command = [sys.executable, "-m", "driftgate", *args, "--ready-file", str(ready)]
        output: Any = None
        if self.settings.logs is not None:
            self.settings.logs.mkdir(parents=True, exist_ok=True)
            handle = (self.settings.logs / f"{name}.log").open("ab")
            self._files.append(handle)
            output = handle
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT if output else None
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            ready = self._ready_dir / f"{name}.json"
            while not ready.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} exited with status {process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {name} was not serving within {timeout:g} s")
                time.sleep(0.05)

    def poll(self) -> tuple[str, int] | None:
        """(name, status) of a process that has exited, or None while both run."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name, process.returncode
        return None

    def signal(self, signum: int) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM both (gateway first), wait, SIGKILL stragglers; the worst exit status."""
        for name in ("gateway", "monitor"):
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        status = 0
        for process in self.processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            code = process.returncode
            if code not in (0, -signal.SIGTERM, -signal.SIGINT) and status == 0:
                status = code if code > 0 else 1
        for handle in self._files:
            handle.close()
        return status


def register(subparsers: Any) -> None:
    d = StackSettings()
    parser = subparsers.add_parser(
        "up",
        help="run a gateway and a monitor together on this machine, until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    repository = os.environ.get("DRIFTGATE_REPOSITORY", "models")
    data_dir = os.environ.get("DRIFTGATE_DATA_DIR", str(d.data_dir))
    add("--repository", type=repository_location, default=repository_location(repository),
        help="model repository: a directory or s3://BUCKET/PREFIX "
        "(DRIFTGATE_REPOSITORY; default ./models)")  # fmt: skip
    add("--data-dir", type=Path, default=Path(data_dir),
        help="the monitor's store (DRIFTGATE_DATA_DIR; default ./driftgate-data)")  # fmt: skip
    add("--host", default=d.host, help="address both bind (default 127.0.0.1)")
    add("--grpc-port", type=int, default=d.grpc_port, help="gateway gRPC port (default 8001)")
    add("--metrics-port", type=int, default=d.metrics_port, help="gateway /metrics (8002)")
    add("--monitor-grpc-port", type=int, default=d.monitor_grpc_port, help="monitor gRPC (8003)")
    add("--monitor-metrics-port", type=int, default=d.monitor_metrics_port,
        help="monitor /metrics (8004)")  # fmt: skip
    add_control_token_flags(add, "required by the gateway and used by the monitor (default none)")
    add_token_flags(add, "ingest", "ingest token", "which the gateway reports to the monitor "
                    "with, and applications send labels with")  # fmt: skip
    add("--tls-cert", type=Path, default=None, help="PEM certificate both servers present "
        "(valid for --host); turns TLS on")  # fmt: skip
    add("--tls-key", type=Path, default=None, help="PEM key of --tls-cert")
    add("--tls-ca", type=Path, default=None, help="PEM CA that signed --tls-cert: the gateway "
        "and the monitor verify each other with it")  # fmt: skip
    add("--insecure", action="store_true", help="bind beyond loopback without tokens")
    add("--report-interval", type=float, default=None,
        help="seconds between gateway reports to the monitor (default: the gateway's)")  # fmt: skip
    add("--ready-file", type=Path, default=None,
        help="write both processes' ports as JSON here once they serve")  # fmt: skip
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    control = control_token(args)
    gateway_args: tuple[str, ...] = ()
    if args.report_interval is not None:
        gateway_args = ("--report-interval", str(args.report_interval))
    stack = LocalStack(
        StackSettings(
            repository=args.repository,
            data_dir=args.data_dir,
            host=args.host,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            monitor_grpc_port=args.monitor_grpc_port,
            monitor_metrics_port=args.monitor_metrics_port,
            control_token=control,
            ingest_token=token(args, "ingest"),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            insecure=args.insecure,
            gateway_args=gateway_args,
        )
    )
    stopping: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        stack.start()
        if args.ready_file is not None:
            info = {"gateway": stack.gateway, "monitor": stack.monitor, **stack.ports}
            args.ready_file.write_text(json.dumps(info), encoding="utf-8")
        print(
            f"driftgate up: gateway {stack.gateway} (metrics :{stack.ports['metrics']}), "
            f"monitor {stack.monitor} (metrics :{stack.ports['monitor_metrics']}); "
            "Ctrl-C stops both",
            flush=True,
        )
        while not stopping:
            exited = stack.poll()
            if exited is not None:
                print(f"driftgate up: the {exited[0]} exited ({exited[1]}); stopping", flush=True)
                status = stack.stop()
                return exited[1] if exited[1] > 0 else max(status, 1)
            time.sleep(0.2)
        return stack.stop()
    except (RuntimeError, TimeoutError) as exc:
        print(f"driftgate up: {exc}", file=sys.stderr)
        stack.stop()
        return 1

"""Start and stop the servers under test as subprocesses on free ports of 127.0.0.1.

Each ``start_*`` returns a ``Server`` once it answers ModelReady for every model; ``stop()``
sends SIGTERM and waits (then kills). A server that dies while starting raises with the tail
of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from procfs import descendants

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MLSERVER_VENV = HERE / ".mlserver-venv"
MLSERVER_REQUIREMENTS = ("mlserver==1.7.1", "uvloop<0.22", "onnxruntime", "numpy")


class ServerFailed(RuntimeError):
    """A server under test did not start; the message carries its log's tail."""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(self.process.pid)
                self.process.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(
    cmd: Sequence[str], log: Path, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def _kill_tree(pid: int) -> None:
    for child in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_file(path: Path, process: subprocess.Popen[bytes], log: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"exited with {process.returncode}:\n{log_tail(log)}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise ServerFailed(f"no ready file after {timeout:.0f} s:\n{log_tail(log)}")


def wait_ready(
    port: int, models: Sequence[str], process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ServerReady and ModelReady until every model is ready."""
    from driftgate.core._proto.inference import grpc_service_pb2 as pb

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        server_ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerReady",
            request_serializer=pb.ServerReadyRequest.SerializeToString,
            response_deserializer=pb.ServerReadyResponse.FromString,
        )
        model_ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerFailed(f"exited with {process.returncode}:\n{log_tail(log)}")
            try:
                if server_ready(pb.ServerReadyRequest(), timeout=2).ready and all(
                    model_ready(pb.ModelReadyRequest(name=m), timeout=2).ready for m in models
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise ServerFailed(f"not ready after {timeout:.0f} s:\n{log_tail(log)}")


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_floor(workdir: Path) -> Server:
    ready, log = workdir / "floor.ready.json", workdir / "floor.log"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "floor_server.py"), "--port", "0", "--ready-file", str(ready)]
    process = _spawn(cmd, log, ROOT, project_env())
    info = _wait_file(ready, process, log, timeout=30)
    wait_ready(info["grpc_port"], [], process, log, timeout=30)
    return Server("floor", process, info["grpc_port"], log)


def start_driftgate(
    name: str,
    repository: Path,
    models: Sequence[str],
    workdir: Path,
    batching: str,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> Server:
    ready, log = workdir / f"{name}.ready.json", workdir / f"{name}.log"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "driftgate", "--log-level", "WARNING", "serve",
        "--repository", str(repository), "--host", "127.0.0.1", "--grpc-port", "0",
        "--metrics-port", "-1", "--batching", batching, "--ready-file", str(ready), *extra,
    ]  # fmt: skip
    process = _spawn(cmd, log, ROOT, project_env())
    try:
        info = _wait_file(ready, process, log, timeout)
        wait_ready(info["grpc_port"], models, process, log, timeout)
    except BaseException:
        Server(name, process, 0, log).stop()
        raise
    return Server(name, process, info["grpc_port"], log)


@dataclass
class MonitoredGateway(Server):
    """A gateway with ``--monitor``, and the monitor it reports to (stopped together)."""

    monitor: Server | None = None

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        if self.monitor is not None:
            self.monitor.stop(timeout)


def start_monitored_driftgate(
    name: str, repository: Path, models: Sequence[str], workdir: Path, record_rate: float = 1.0
) -> Server:
    ready, log = workdir / f"{name}-monitor.ready.json", workdir / f"{name}-monitor.log"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "driftgate", "--log-level", "WARNING", "monitor",
        "--repository", str(repository), "--data-dir", str(workdir / f"{name}-data"),
        "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
        "--ready-file", str(ready),
    ]  # fmt: skip
    process = _spawn(cmd, log, ROOT, project_env())
    monitor = Server(f"{name}-monitor", process, 0, log)
    try:
        monitor.port = _wait_file(ready, process, log, timeout=60)["grpc_port"]
        gateway = start_driftgate(
            name, repository, models, workdir, "on",
            extra=(
                "--monitor", f"127.0.0.1:{monitor.port}", "--report-interval", "1",
                "--record-sample-rate", str(record_rate),
            ),
        )  # fmt: skip
    except BaseException:
        monitor.stop()
        raise
    return MonitoredGateway(gateway.name, gateway.process, gateway.port, gateway.log, monitor)


def ensure_mlserver_venv(log: Path) -> Path:
    """Create benchmarks/.mlserver-venv with MLServer 1.7.1 on first use; its ``mlserver``."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if binary.exists():
        return binary
    with log.open("ab") as out:
        python = shutil.which("python3") or sys.executable
        steps = [
            [python, "-m", "venv", str(MLSERVER_VENV)],
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_REQUIREMENTS],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise ServerFailed(
                    f"could not install MLServer ({' '.join(step)}):\n{log_tail(log)}"
                )
    return binary


def start_mlserver(
    name: str,
    models: Sequence[tuple[str, Path]],
    workdir: Path,
    parallel_workers: int | None,
    batching: tuple[int, float] | None,
    timeout: float = 180.0,
) -> Server:
    """MLServer serving each (model name, model.onnx) with the custom onnxruntime runtime.

    ``parallel_workers`` None keeps MLServer's default; ``batching`` is
    (max_batch_size, max_batch_time seconds) for its adaptive batching, or None for off.
    """
    log = workdir / f"{name}.log"
    binary = ensure_mlserver_venv(workdir / "mlserver-install.log")
    root = workdir / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    settings: dict[str, Any] = {
        "debug": False,  # debug (the default) adds a per-request access log
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": free_port(),
        "metrics_port": free_port(),
        "metrics_endpoint": None,  # no metrics server, no metrics interceptor
        "load_models_at_startup": True,
    }
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    for model, onnx_path in models:
        folder = root / model
        folder.mkdir()
        shutil.copy(HERE / "mlserver_runtime.py", folder / "mlserver_runtime.py")
        model_settings: dict[str, Any] = {
            "name": model,
            "implementation": "mlserver_runtime.OnnxRuntime",
            "parameters": {"uri": str(onnx_path.resolve()), "version": "1"},
        }
        if batching is not None:
            model_settings["max_batch_size"], model_settings["max_batch_time"] = batching
        (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    process = _spawn([str(binary), "start", str(root)], log, root, env)
    try:
        wait_ready(port, [m for m, _ in models], process, log, timeout)
    except BaseException:
        Server(name, process, port, log).stop()
        raise
    return Server(name, process, port, log)

"""The wheel: one top-level import name, every module of the source tree, importable on its own.

The wheel is built from a copy of the source tree (``pip wheel --no-deps
--no-build-isolation``) and installed without dependencies into a fresh virtualenv that sees
this environment's site-packages through a ``.pth`` line: a directory listed that way is put
on ``sys.path`` but its own ``.pth`` files are not run, so the editable install's finder stays
out and every ``driftgate`` module comes from the wheel.

Then the command runs from a user's directory holding its own ``gateway.py``, ``monitor/``
and ``converter.py`` (``tests.processes.shadowing_directory``): ``convert`` and ``up`` (a
gateway and a monitor, answering) must not import them. The demo test runs the whole loop,
retraining worker included, from such a directory too.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.core._proto.inference import grpc_service_pb2 as pb
from driftgate.core._proto.inference import grpc_service_pb2_grpc as pb_grpc
from tests.processes import ROOT, DriftgateProcess, shadowed_imports, shadowing_directory

pytestmark = pytest.mark.integration

# Source folder -> where the build puts it ([tool.setuptools] package-dir in pyproject.toml).
MAPPED = {
    "driftgate": "driftgate",
    "gateway": "driftgate/gateway",
    "converter": "driftgate/converter",
    "monitor": "driftgate/monitor",
}
GENERIC = ("gateway", "monitor", "converter")
# Top-level entries the build does not read: the copy leaves them out.
NOT_COPIED = {
    ".git", ".venv", "build", "dist", "models", "driftgate-data", "benchmarks", "tests", "deploy",
    ".cache", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
}  # fmt: skip


@dataclass(frozen=True)
class Installed:
    source: Path  # the copy the wheel was built from
    wheel: Path
    python: Path  # the fresh virtualenv's interpreter
    site_packages: Path
    env: dict[str, str]


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
    if Path(directory) == ROOT:
        ignored |= NOT_COPIED & set(names)
    return ignored


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=_ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", str(source), "-w", str(root / "wheels")],
        env=env,
    )  # fmt: skip
    (wheel,) = (root / "wheels").glob("driftgate-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env
    ).stdout.strip()
    site_packages = Path(purelib)
    (site_packages / "test-environment.pth").write_text(
        "\n".join(dict.fromkeys(site.getsitepackages())) + "\n", encoding="utf-8"
    )
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        env=env,
    )  # fmt: skip
    return Installed(source, wheel, python, site_packages, env)


def test_the_wheel_holds_driftgate_alone_and_every_file_of_the_source(
    installed: Installed,
) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == {"driftgate"}, sorted(top)
    shipped = {name for name in names if not name.startswith(tuple(dist_info))}
    expected = {
        f"{target}/{path.relative_to(installed.source / folder).as_posix()}"
        for folder, target in MAPPED.items()
        for path in (installed.source / folder).rglob("*")
        if path.is_file()
    }
    assert "driftgate/gateway/dataplane/__init__.py" in expected
    assert sorted(expected - shipped) == [], "in the source tree but not in the wheel"
    assert sorted(shipped - expected) == [], "in the wheel but not in the source tree"


_IMPORTS = """
import importlib, json, sys
import driftgate, driftgate.cli, driftgate.converter, driftgate.gateway.servicer
import driftgate.gateway.dataplane.version, driftgate.monitor.server
import driftgate.monitor.retrain_worker
generic = {}
for name in ("gateway", "monitor", "converter"):
    try:
        importlib.import_module(name)
        generic[name] = "imported"
    except Exception as exc:
        generic[name] = type(exc).__name__
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})
print(json.dumps({"driftgate": driftgate.__file__, "version": driftgate.__version__,
                  "generic": generic, "files": files}))
"""


def test_the_wheel_imports_on_its_own_and_installs_no_generic_name(
    installed: Installed, tmp_path: Path
) -> None:
    result = _run([str(installed.python), "-c", _IMPORTS], cwd=tmp_path, env=installed.env)
    found = json.loads(result.stdout)
    assert Path(found["driftgate"]).parent == installed.site_packages / "driftgate"
    assert found["version"] == installed.wheel.name.split("-")[1]
    assert found["generic"] == dict.fromkeys(GENERIC, "ModuleNotFoundError")
    repository = [ROOT / folder for folder in MAPPED]
    from_repository = [
        f for f in found["files"] if any(Path(f).is_relative_to(r) for r in repository)
    ]
    assert from_repository == [], "modules loaded from the repository rather than the wheel"


def test_the_command_ignores_a_users_gateway_monitor_and_converter(
    installed: Installed, tmp_path: Path
) -> None:
    user = shadowing_directory(tmp_path / "user")
    python, command = str(installed.python), str(installed.python.parent / "driftgate")
    for argv in ([python, "-m", "driftgate", "--help"], [command, "--help"]):
        assert "convert" in _run(argv, cwd=user, env=installed.env).stdout

    x, y = make_classification(400, 4, n_informative=3, n_redundant=0, random_state=3)
    x = x.astype(np.float32).round(3)
    joblib.dump(LogisticRegression(max_iter=300).fit(x, y), user / "estimator.joblib")
    header = "a,b,c,d,label"
    np.savetxt(user / "train.csv", np.column_stack([x, y]), delimiter=",", header=header,
               comments="", fmt=["%.3f"] * 4 + ["%d"])  # fmt: skip
    _run(
        [command, "convert", "churn", "--estimator", "estimator.joblib", "--data", "train.csv",
         "--target", "label", "--repository", "models"],
        cwd=user, env=installed.env,
    )  # fmt: skip
    assert (user / "models" / "churn" / "1" / "model.onnx").is_file()

    up = DriftgateProcess(
        "up",
        ["--repository", "models", "--data-dir", "driftgate-data", "--grpc-port", "0",
         "--metrics-port", "0", "--monitor-grpc-port", "0", "--monitor-metrics-port", "0"],
        tmp_path, {"PYTHONPATH": ""}, python=python, cwd=user,  # empty: none, the wheel alone
    )  # fmt: skip
    try:
        up.wait_ready(60)
        with grpc.insecure_channel(up.info["gateway"]) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name="churn"), timeout=10).ready
            answer = stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name="churn",
                    inputs=[{"name": "input", "datatype": "FP32", "shape": [2, 4]}],
                    raw_input_contents=[x[:2].tobytes()],
                ),
                timeout=10,
            )
            assert answer.model_version == "1"
        events = [command, "events", "churn", "--monitor", up.info["monitor"], "--json"]
        assert isinstance(json.loads(_run(events, cwd=user, env=installed.env).stdout), list)
    finally:
        code = up.terminate()
    assert code == 0, up.log
    assert shadowed_imports(user) == []

"""Reconciling with the repository: scans off the event loop, failed and empty scans, pins.

The plan rules are tested as a pure function; the manager tests serve real converted models
from real temporary repositories, without sockets.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression

from driftgate.converter import convert
from driftgate.core.deployment import Canary, Deployment
from driftgate.core.errors import DriftgateError
from driftgate.core.repository import Repository
from driftgate.gateway.manager import ModelManager
from driftgate.gateway.metrics import GatewayMetrics
from driftgate.gateway.reconciler import (
    EMPTY_SCANS_TO_RETIRE,
    ModelScan,
    Reconciler,
    ScanMetrics,
    Serving,
    plan,
    scan,
    scan_model,
)
from driftgate.gateway.settings import GatewaySettings

FAILURES = "driftgate_repository_scan_failures_total"
LAST_SCAN = "driftgate_repository_last_scan_timestamp_seconds"


# -- the plan, a pure function ---------------------------------------------------------------


def _seen(*versions: int, deployment: dict | None = None, **fields) -> ModelScan:
    parsed = Deployment.from_json("m", deployment) if deployment is not None else None
    signatures = {v: ((1, 1), (1, 1)) for v in versions}
    return ModelScan("m", time.monotonic(), versions, signatures, deployment=parsed, **fields)


def _serving(stable: int, *loaded: int, deployment: dict | None = None) -> Serving:
    applied = Deployment.from_json("m", deployment) if deployment is not None else None
    return Serving(stable, frozenset({stable, *loaded} - {0}), applied)


def test_without_deployment_the_highest_version_serves():
    result = plan(_seen(1, 3, 2), Serving(), standby_versions=1, empty_streak=0)
    assert result.change and dict(result.roles) == {3: "stable"} and result.reason == ""


def test_deployment_roles_as_recorded():
    deployment = {
        "stable": 2,
        "canary": {"version": 4, "weight": 10},
        "shadow": 3,
        "previous": [1, 5],
    }
    result = plan(_seen(1, 2, 3, 4, deployment=deployment), _serving(2), 1, 0)
    assert dict(result.roles) == {2: "stable", 4: "canary", 3: "shadow", 1: "standby"}
    assert result.deployment == Deployment("m", 2, Canary(4, 10.0), 3, (1, 5))


def test_a_pinned_stable_not_on_disk_keeps_the_serving_version_not_the_highest():
    pinned = {"stable": 1, "canary": {"version": 2, "weight": 5}}
    result = plan(_seen(2, 3, deployment=pinned), _serving(1, 2, deployment=pinned), 1, 0)
    assert result.change and dict(result.roles) == {1: "stable", 2: "canary"}
    assert "pinned stable version 1 is not on disk; version 1 keeps serving" in result.reason


def test_a_pinned_stable_that_cannot_be_read_keeps_the_serving_version():
    seen = _seen(2, deployment={"stable": 3}, unreadable={1: "x", 3: "OSError: [Errno 116]"})
    result = plan(seen, _serving(2, deployment={"stable": 2}), 1, 0)
    assert dict(result.roles) == {2: "stable"}
    assert "pinned stable version 3 cannot be read (OSError: [Errno 116])" in result.reason


def test_a_pinned_stable_missing_while_nothing_serves_serves_nothing():
    result = plan(_seen(2, 3, deployment={"stable": 1}), Serving(), 1, 0)
    assert result.change and "stable" not in result.roles.values()
    assert "no version serves until it can be read" in result.reason


def test_an_unreadable_highest_version_does_not_move_traffic():
    result = plan(_seen(1, 2, unreadable={3: "PermissionError"}), _serving(2), 1, 0)
    assert dict(result.roles) == {2: "stable"} and "highest version 3" in result.reason


def test_a_failed_model_scan_changes_nothing():
    result = plan(_seen(error="listing versions: OSError: stale"), _serving(1), 1, 1)
    assert not result.change and result.empty_streak == 1  # neither confirms nor resets


def test_an_unreadable_deployment_changes_nothing():
    seen = _seen(1, 2, 3, deployment_error="JSONDecodeError: Expecting value")
    result = plan(seen, _serving(1, deployment={"stable": 1}), 1, 0)
    assert not result.change and "deployment.json unreadable" in result.reason


def test_one_empty_scan_keeps_the_serving_version_the_next_retires():
    first = plan(_seen(), _serving(1), 1, empty_streak=0)
    assert not first.change and first.empty_streak == 1
    second = plan(_seen(), _serving(1), 1, empty_streak=first.empty_streak)
    assert second.change and dict(second.roles) == {} and EMPTY_SCANS_TO_RETIRE == 2
    # Versions back after one empty scan: the streak starts again.
    assert plan(_seen(1), _serving(1), 1, empty_streak=1).empty_streak == 0


def test_a_vanished_deployment_needs_a_second_scan_before_the_highest_serves():
    first = plan(_seen(1, 2), _serving(1, deployment={"stable": 1}), 1, 0)
    assert not first.change
    second = plan(_seen(1, 2), _serving(1, deployment={"stable": 1}), 1, first.empty_streak)
    assert dict(second.roles) == {2: "stable"}


def test_an_older_scan_is_not_applied_over_a_newer_one():
    reconciler = Reconciler(ScanMetrics(CollectorRegistry()), standby_versions=1)
    older = _seen(1)
    newer = _seen(1, 2)
    assert reconciler.plan(newer, Serving(), confirms=False) is not None
    assert reconciler.plan(older, Serving(), confirms=True) is None
    reconciler.close()


# -- the scan, on real directories ---------------------------------------------------------------


class FlakyRepository(Repository):
    """A repository whose reads fail on demand (a stale NFS handle) and that records threads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_listing = False
        self.fail_models: set[str] = set()
        self.listing: object = None  # returned instead of the listing when set
        self.threads: set[int] = set()

    def models(self) -> list[str]:
        self.threads.add(threading.get_ident())
        if self.fail_listing:
            raise OSError(errno.ESTALE, "Stale file handle", str(self.root))
        if self.listing is not None:
            return self.listing  # type: ignore[return-value]
        return super().models()

    def versions(self, model: str) -> list[int]:
        self.threads.add(threading.get_ident())
        if model in self.fail_models:
            raise OSError(errno.ESTALE, "Stale file handle", str(self.root / model))
        return super().versions(model)

    def deployment(self, model: str) -> dict | None:
        self.threads.add(threading.get_ident())
        return super().deployment(model)


def _fake_version(root: Path, model: str, version: int) -> Path:
    folder = root / model / str(version)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "model.json").write_text("{}")
    return folder


def test_scan_reads_versions_signatures_and_deployment(tmp_path):
    for version in (1, 2):
        _fake_version(tmp_path, "a", version)
    (tmp_path / "a" / "deployment.json").write_text(json.dumps({"stable": 1}))
    _fake_version(tmp_path, "b", 1)
    (tmp_path / "b" / "deployment.json").write_text("{not json")
    (tmp_path / "a" / "2" / "model.json").unlink()
    result = scan(Repository(tmp_path), ["gone"])
    assert result.error is None and sorted(result.models) == ["a", "b", "gone"]
    a = result.models["a"]
    assert a.versions == (1, 2) and a.deployment == Deployment("a", stable=1)
    assert a.signatures[2][1] == (0, 0)  # no model.json: a Triton-style version
    assert result.models["b"].deployment_error.startswith("JSONDecodeError")
    assert result.models["gone"].empty


def test_a_version_whose_files_cannot_be_read_is_recorded_not_listed(tmp_path):
    for version in (1, 2):
        _fake_version(tmp_path, "a", version)
    broken = tmp_path / "a" / "2" / "model.json"
    broken.unlink()
    broken.symlink_to(broken)  # stat fails with ELOOP, whoever runs the test
    seen = scan_model(Repository(tmp_path), "a")
    assert seen.versions == (1,) and "Too many levels of symbolic links" in seen.unreadable[2]
    assert not seen.empty


def test_scan_records_listing_and_model_errors_instead_of_raising(tmp_path):
    _fake_version(tmp_path, "a", 1)
    _fake_version(tmp_path, "b", 1)
    repository = FlakyRepository(tmp_path)
    repository.fail_models = {"a"}
    result = scan(repository)
    assert "Stale file handle" in result.models["a"].error
    assert result.models["b"].versions == (1,)
    repository.fail_listing = True
    failed = scan(repository)
    assert failed.error is not None and "Stale file handle" in failed.error
    assert failed.models == {}


# -- the manager, serving real converted models ----------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """Three versions of model "m" (logistic regressions on 4 features), written by convert."""
    root = tmp_path_factory.mktemp("converted")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    for seed in range(3):
        y = (X[:, seed] > 0).astype(int)
        convert(LogisticRegression().fit(X, y), X, "m", root, labels=y)
    return root / "m"


@pytest.fixture
def root(tmp_path, converted) -> Path:
    shutil.copytree(converted, tmp_path / "m")
    return tmp_path


class Gateway:
    """A ModelManager on its own executors and registry, as the server builds it."""

    def __init__(
        self, root: Path, repository: Repository | None = None, poll_interval: float = 0.02
    ) -> None:
        self.registry = CollectorRegistry()
        self.settings = GatewaySettings(
            repository=root, poll_interval=poll_interval, drain_seconds=0.1
        )
        self.repository = repository or FlakyRepository(root)
        self._executors = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
        self.manager = ModelManager(
            self.repository,
            self.settings,
            GatewayMetrics(self.registry),
            *self._executors,
        )

    def serving(self, model: str = "m") -> int | None:
        try:
            return self.manager.resolve(model).version
        except DriftgateError:
            return None

    def loaded(self, model: str = "m") -> set[int]:
        state = self.manager.state(model)
        return set(state.loaded) if state else set()

    def sample(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)

    async def close(self) -> None:
        await self.manager.close()
        for executor in self._executors:
            executor.shutdown(wait=True)


def _run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))


def _pin(root: Path, deployment: dict) -> None:
    Repository(root).write_deployment("m", deployment)


def test_the_manager_serves_the_highest_version_without_deployment(root):
    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        assert gateway.serving() == 3 and gateway.loaded() == {3}
        await gateway.close()

    _run(scenario)


def test_the_scan_runs_off_the_event_loop(root):
    _pin(root, {"stable": 2})

    async def scenario():
        gateway = Gateway(root)
        loop_thread = threading.get_ident()
        await gateway.manager.refresh()
        await gateway.manager.refresh_model("m")  # as after a control command
        assert gateway.serving() == 2
        assert gateway.repository.threads and loop_thread not in gateway.repository.threads
        await gateway.close()

    _run(scenario)


def test_a_failed_scan_changes_nothing(root):
    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        assert gateway.serving() == 3 and gateway.sample(FAILURES) == 0
        scanned_at = gateway.sample(LAST_SCAN)
        # The listing fails while the model's versions are gone: nothing may be retired.
        shutil.move(root / "m", root / "elsewhere")
        gateway.repository.fail_listing = True
        for _ in range(3):
            await gateway.manager.refresh()
        assert gateway.serving() == 3 and gateway.loaded() == {3}
        assert gateway.sample(FAILURES) == 3 and gateway.sample(LAST_SCAN) == scanned_at
        # One model that cannot be read changes nothing either, for that model.
        shutil.move(root / "elsewhere", root / "m")
        _pin(root, {"stable": 1})
        gateway.repository.fail_listing = False
        gateway.repository.fail_models = {"m"}
        await gateway.manager.refresh()
        assert gateway.serving() == 3 and gateway.sample(FAILURES) == 4
        gateway.repository.fail_models = set()
        await gateway.manager.refresh()
        assert gateway.serving() == 1 and gateway.sample(LAST_SCAN) > scanned_at
        await gateway.close()

    _run(scenario)


def test_one_empty_scan_keeps_the_serving_version_a_second_retires(root):
    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        hidden = root / ".hidden"
        hidden.mkdir()
        for version in ("1", "2", "3"):
            shutil.move(root / "m" / version, hidden / version)
        await gateway.manager.refresh()
        assert gateway.serving() == 3
        await gateway.manager.refresh_model("m")  # a refresh after a command never retires
        assert gateway.serving() == 3
        for version in ("1", "2", "3"):  # back: the blip is over, the streak starts again
            shutil.move(hidden / version, root / "m" / version)
        await gateway.manager.refresh()
        for version in ("1", "2", "3"):
            shutil.move(root / "m" / version, hidden / version)
        await gateway.manager.refresh()
        assert gateway.serving() == 3
        await gateway.manager.refresh()
        assert gateway.serving() is None and gateway.loaded() == set()
        await gateway.close()

    _run(scenario)


def test_an_unreadable_pinned_stable_keeps_serving_rather_than_the_highest(root):
    _pin(root, {"stable": 1})

    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        assert gateway.serving() == 1
        onnx_file = root / "m" / "1" / "model.onnx"
        shutil.move(onnx_file, root / "moved.onnx")
        for _ in range(EMPTY_SCANS_TO_RETIRE + 1):
            await gateway.manager.refresh()
        assert gateway.serving() == 1 and gateway.loaded() == {1}
        # Another writer pins 2 while 2's metadata cannot be read: 1 still serves.
        broken = root / "m" / "2" / "model.json"
        shutil.move(broken, root / "moved.json")
        broken.symlink_to(broken)
        _pin(root, {"stable": 2, "previous": [1]})
        await gateway.manager.refresh()
        assert gateway.serving() == 1
        broken.unlink()
        shutil.move(root / "moved.json", broken)
        await gateway.manager.refresh()
        assert gateway.serving() == 2 and gateway.loaded() == {2}  # 1 is not on disk
        await gateway.close()

    _run(scenario)


def test_a_pinned_stable_missing_at_start_serves_nothing(root):
    shutil.rmtree(root / "m" / "1")
    _pin(root, {"stable": 1})

    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        assert gateway.serving() is None and gateway.loaded() == set()
        await gateway.close()

    _run(scenario)


def test_the_manager_keeps_serving_while_deployment_json_is_torn(root):
    _pin(root, {"stable": 1})

    async def scenario():
        gateway = Gateway(root)
        await gateway.manager.refresh()
        (root / "m" / "deployment.json").write_text('{"stable": ')  # torn by a careless writer
        await gateway.manager.refresh()
        await gateway.manager.refresh()
        assert gateway.serving() == 1
        await gateway.close()

    _run(scenario)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_watcher_survives_failures_and_readiness_follows_its_scans(root):
    async def scenario():
        gateway = Gateway(root)
        manager = gateway.manager
        assert not manager.watcher_healthy()  # not watching yet
        await manager.refresh()
        manager.start_watching()
        assert manager.watcher_healthy()
        gateway.repository.fail_listing = True
        await _until(lambda: gateway.sample(FAILURES) >= 3)
        gateway.repository.fail_listing = False
        gateway.repository.listing = 42  # a listing that breaks the scan itself
        await _until(lambda: gateway.sample(FAILURES) >= 6)
        assert manager.watcher_healthy()  # the last good scan is recent
        assert not manager.watcher_healthy(time.monotonic() + 11.0)  # ... but ages
        gateway.repository.listing = None
        _pin(root, {"stable": 2})
        await _until(lambda: gateway.serving() == 2)  # hot swaps still happen
        assert manager.watcher_healthy(time.monotonic() + 5.0)
        await gateway.close()
        assert not manager.watcher_healthy()  # stopped

    _run(scenario)


def test_closing_stops_the_watcher_even_when_a_scan_ends_at_that_moment(tmp_path):
    """Shutdown cancels the watcher while it waits for a scan; a scan that has just finished
    must not swallow that cancel (the watcher would then poll on, and shutdown wait forever).
    A watcher of an empty repository scanning without pause, closed at random moments."""
    rng = np.random.default_rng(0)

    async def scenario():
        for _ in range(300):
            gateway = Gateway(tmp_path, Repository(tmp_path), poll_interval=0.0001)
            gateway.manager.start_watching()
            await asyncio.sleep(float(rng.uniform(0, 0.003)))
            await asyncio.wait_for(gateway.close(), 5)

    _run(scenario)

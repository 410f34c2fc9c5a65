"""Reconciling the gateway with its model repository: a blocking scan, a pure plan.

``scan`` reads the file system (model listing, complete versions, file signatures,
``deployment.json``) and is run on a thread, never on the event loop. It does not raise: an
error listing the repository or reading one model is recorded in the result, so one stale NFS
handle cannot end hot swaps. ``plan`` is a pure function of what a scan saw and of what serves
now; the manager applies the plan it returns on the event loop. Its rules:

- A scan that failed (for the whole repository or for one model) changes nothing.
- A model seen without versions retires its versions only when a second successful scan in a
  row agrees (``EMPTY_SCANS_TO_RETIRE``); so does a recorded ``deployment.json`` that vanished.
- ``deployment.json`` that cannot be read or parsed changes nothing.
- The stable version is the one ``deployment.json`` names, or the highest version when it names
  none (Triton and TF Serving). When that version is not on disk or its files cannot be read,
  the version serving now keeps serving; when none serves, none does (the model is not ready).
  The plan never puts another version at 100% in its place.
- Canary, shadow and the last ``standby_versions`` previous stable versions are kept loaded
  when they are on disk.

``Reconciler`` is the loop side's memory between scans (empty streaks, which scan was applied
last, the time of the last good scan) and owns the scan thread and the scan metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from driftgate.core.deployment import Deployment
from driftgate.core.errors import ModelNotFound
from driftgate.core.repository import Repository

__all__ = [
    "EMPTY_SCANS_TO_RETIRE",
    "ModelPlan",
    "ModelScan",
    "Reconciler",
    "RepositoryScan",
    "ScanMetrics",
    "Serving",
    "plan",
    "scan",
    "scan_model",
    "stale_after",
]

log = logging.getLogger(__name__)

#: successful scans in a row that must see a model empty before its versions are retired
EMPTY_SCANS_TO_RETIRE = 2
#: files whose (mtime_ns, size) make a version's signature; a changed signature means new files
SIGNATURE_FILES = ("model.onnx", "model.json")

Signature = tuple[tuple[int, int], ...]


def stale_after(poll_interval: float) -> float:
    """Seconds without a good scan after which the watcher counts as stuck."""
    return max(10.0, 10.0 * poll_interval)


# -- the scan: blocking, run on a thread -----------------------------------------------------


@dataclass(frozen=True)
class ModelScan:
    """What one scan saw of one model. ``error`` set: the scan could not read the model."""

    name: str
    started: float  # time.monotonic() when the scan of this model began
    versions: tuple[int, ...] = ()  # complete versions whose files could be read, ascending
    signatures: Mapping[int, Signature] = field(default_factory=dict)
    unreadable: Mapping[int, str] = field(default_factory=dict)  # version -> why
    deployment: Deployment | None = None  # None: there is no deployment.json
    deployment_error: str | None = None  # deployment.json exists but could not be read
    error: str | None = None

    @property
    def empty(self) -> bool:
        """True when the model has no version at all (not even an unreadable one)."""
        return self.error is None and not self.versions and not self.unreadable


@dataclass(frozen=True)
class RepositoryScan:
    """One scan of the whole repository. ``error`` set: listing failed, nothing may change."""

    started: float
    models: Mapping[str, ModelScan] = field(default_factory=dict)
    error: str | None = None

    def failures(self) -> dict[str, str]:
        """What went wrong, by model ("" for the listing); an unreadable deployment.json is
        a failure too (the model's routing then stays as it was)."""
        found = {
            name: m.error or f"deployment.json unreadable: {m.deployment_error}"
            for name, m in self.models.items()
            if m.error is not None or m.deployment_error is not None
        }
        return {"": self.error, **found} if self.error is not None else found


def scan(repository: Repository, names: Iterable[str] = ()) -> RepositoryScan:
    """Every model in ``repository``, plus ``names`` (models served now, which may be gone)."""
    started = time.monotonic()
    try:
        listed = repository.models()
    except Exception as exc:
        return RepositoryScan(started, error=f"listing {repository.location}: {_describe(exc)}")
    wanted = sorted(set(listed) | set(names))
    return RepositoryScan(started, {name: scan_model(repository, name) for name in wanted})


def scan_model(repository: Repository, name: str) -> ModelScan:
    """One model's versions, their signatures and its deployment; errors recorded, not raised."""
    started = time.monotonic()
    try:
        listed = repository.versions(name)
    except ModelNotFound:
        return ModelScan(name, started)  # the directory is gone: the model is empty
    except Exception as exc:
        return ModelScan(name, started, error=f"listing versions: {_describe(exc)}")
    signatures: dict[int, Signature] = {}
    unreadable: dict[int, str] = {}
    for version in listed:
        try:
            signatures[version] = repository.signature(name, version)
        except OSError as exc:
            unreadable[version] = _describe(exc)
    deployment, deployment_error = _read_deployment(repository, name)
    return ModelScan(
        name,
        started,
        tuple(sorted(signatures)),
        signatures,
        unreadable,
        deployment,
        deployment_error,
    )


def signature(folder: Path) -> Signature:
    """(mtime_ns, size) of each file of a version; raises OSError when one cannot be read.

    ``model.json`` is optional (a Triton-style version has none): its absence reads as (0, 0).
    """
    stats = []
    for filename in SIGNATURE_FILES:
        try:
            st = (folder / filename).stat()
        except FileNotFoundError:
            if filename == "model.onnx":
                raise
            stats.append((0, 0))
            continue
        stats.append((st.st_mtime_ns, st.st_size))
    return tuple(stats)


def _read_deployment(repository: Repository, name: str) -> tuple[Deployment | None, str | None]:
    try:
        data = repository.deployment(name)
        if data is None:
            return None, None
        if not isinstance(data, dict):
            raise ValueError("deployment.json does not hold a JSON object")
        return Deployment.from_json(name, data), None
    except Exception as exc:
        return None, _describe(exc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the plan: pure ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What a model serves now, as far as the plan needs to know."""

    stable: int = 0  # the version answering unpinned requests, 0 for none
    loaded: frozenset[int] = frozenset()
    deployment: Deployment | None = None  # the deployment state applied last


@dataclass(frozen=True)
class ModelPlan:
    """version -> role wanted now. ``change`` False: leave the model exactly as it is."""

    roles: Mapping[int, str]
    deployment: Deployment | None
    change: bool
    empty_streak: int  # to pass to the next plan of this model
    reason: str = ""  # why the plan departs from what the repository says; for the log


def plan(
    scanned: ModelScan, serving: Serving, standby_versions: int, empty_streak: int
) -> ModelPlan:
    """The roles ``scanned`` asks for, under the rules of the module docstring.

    ``empty_streak``: successful scans in a row before this one that saw the model empty (or
    its recorded deployment.json gone).
    """
    if scanned.error is not None:
        return _keep(serving, empty_streak, f"scan failed, nothing changed: {scanned.error}")
    vanished = scanned.empty or _deployment_vanished(scanned, serving)
    if vanished and serving.loaded and empty_streak + 1 < EMPTY_SCANS_TO_RETIRE:
        what = "no versions on disk" if scanned.empty else "deployment.json is gone"
        return _keep(serving, empty_streak + 1, f"{what}; kept until the next scan agrees")
    streak = empty_streak + 1 if vanished else 0
    if scanned.empty:
        retired = f"no versions on disk in {streak} scans: retired" if serving.loaded else ""
        return ModelPlan({}, Deployment(scanned.name), True, streak, retired)
    if scanned.deployment_error is not None:
        return _keep(serving, 0, f"deployment.json unreadable: {scanned.deployment_error}")
    deployment = scanned.deployment or Deployment(scanned.name)
    roles, reason = _stable_role(scanned, serving, deployment)
    available = set(scanned.versions)
    canary = deployment.canary.version if deployment.canary else 0
    if canary in available and canary not in roles:
        roles[canary] = "canary"
    if deployment.shadow in available and deployment.shadow not in roles:
        roles[deployment.shadow] = "shadow"
    standbys = [v for v in deployment.previous if v in available and v not in roles]
    for version in standbys[: max(standby_versions, 0)]:
        roles[version] = "standby"
    return ModelPlan(roles, deployment, True, streak, reason)


def _stable_role(
    scanned: ModelScan, serving: Serving, deployment: Deployment
) -> tuple[dict[int, str], str]:
    """The stable role, and a reason when it is not the version the repository asks for."""
    listed = set(scanned.versions) | set(scanned.unreadable)
    wanted = deployment.stable or max(listed)
    if wanted in scanned.versions:
        return {wanted: "stable"}, ""
    why = (
        f"cannot be read ({scanned.unreadable[wanted]})"
        if wanted in scanned.unreadable
        else "is not on disk"
    )
    kind = "pinned stable" if deployment.stable else "highest"
    if serving.stable:
        keep = f"version {serving.stable} keeps serving"
        return {serving.stable: "stable"}, f"{kind} version {wanted} {why}; {keep}"
    return {}, f"{kind} version {wanted} {why}; no version serves until it can be read"


def _deployment_vanished(scanned: ModelScan, serving: Serving) -> bool:
    """deployment.json is absent although the state applied last came from one with a pin."""
    applied = serving.deployment
    return (
        scanned.deployment is None
        and scanned.deployment_error is None
        and applied is not None
        and applied.stable != 0
    )


def _keep(serving: Serving, empty_streak: int, reason: str) -> ModelPlan:
    return ModelPlan({}, serving.deployment, False, empty_streak, reason)


# -- the loop side ------------------------------------------------------------------------------


class ScanMetrics:
    """The watcher's metrics, on a registry the caller owns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "driftgate_repository_scan_failures",
            "Repository scans that failed for the whole repository or for one model; "
            "nothing changes and the scan is retried at the next poll",
            registry=registry,
        )
        self.last_scan = Gauge(
            "driftgate_repository_last_scan_timestamp_seconds",
            "Unix time of the last scan that could list the repository",
            registry=registry,
        )


class Reconciler:
    """The loop side of reconciling: streaks, freshness, signatures, the scan thread.

    Not thread-safe: used on the event loop only; ``executor`` runs ``scan`` and
    ``scan_model``. Usage: ``result = await loop.run_in_executor(r.executor, scan, repo, names)``,
    then ``r.observe(result, watcher=True)`` and ``r.plan(scanned, serving)`` per model.
    """

    def __init__(self, metrics: ScanMetrics, standby_versions: int) -> None:
        self.metrics = metrics
        self.standby_versions = standby_versions
        # One thread of its own: a scan never waits behind a long load, and a scan hung on a
        # dead mount does not block loading.
        self.executor = ThreadPoolExecutor(1, "driftgate-scan")
        self._streaks: dict[str, int] = {}
        self._applied: dict[str, float] = {}  # model -> start of the scan applied last
        self._signatures: dict[str, Mapping[int, Signature]] = {}
        self._reasons: dict[str, str] = {}  # what was logged last, so it is logged once
        self._last_good: float | None = None  # monotonic time of the last good watcher scan
        self._applying = 0

    def observe(self, result: RepositoryScan, *, watcher: bool) -> bool:
        """Count and log the failures of a scan; a watcher's good listing marks it fresh."""
        failures = result.failures()
        if failures:
            self.metrics.failures.inc()
        for key, error in failures.items():
            self._note(f"scan:{key}", f"repository scan failed for {key or 'the listing'}: {error}")
        if watcher and result.error is None:
            self._note("scan:", "")
            self._last_good = time.monotonic()
            self.metrics.last_scan.set_to_current_time()
        return result.error is None

    def plan(self, scanned: ModelScan, serving: Serving, *, confirms: bool) -> ModelPlan | None:
        """The plan to apply for ``scanned``, or None when nothing should change.

        ``confirms``: whether this scan may count toward retiring an empty model (the
        watcher's scans do; a one-model refresh after a command does not, so two scans a few
        milliseconds apart cannot retire a model on one blip).
        """
        name = scanned.name
        if scanned.started < self._applied.get(name, float("-inf")):
            return None  # a newer scan of this model was applied meanwhile
        if scanned.error is None:
            self._note(f"scan:{name}", "")
            self._signatures[name] = scanned.signatures
        streak = self._streaks.get(name, 0) if confirms else 0
        result = plan(scanned, serving, self.standby_versions, streak)
        if confirms or (result.empty_streak == 0 and scanned.error is None):
            self._streaks[name] = result.empty_streak
        self._note(f"plan:{name}", f"{name}: {result.reason}" if result.reason else "", quiet=True)
        if not result.change:
            return None
        self._applied[name] = scanned.started
        return result

    def signature(self, name: str, version: int) -> Signature | None:
        """The signature of a version as the last scan saw it (None if it did not)."""
        return self._signatures.get(name, {}).get(version)

    def fresh(self, now: float, limit: float) -> bool:
        """True when a watcher scan succeeded within ``limit`` seconds of ``now`` (monotonic)
        or the watcher is applying a plan (a load may take longer than ``limit``)."""
        if self._applying:
            return True
        return self._last_good is not None and now - self._last_good <= limit

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        self._applying += 1
        try:
            yield
        finally:
            self._applying -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _note(self, key: str, message: str, quiet: bool = False) -> None:
        """Log ``message`` as a warning once, when it changes; "" marks recovery, logged
        unless ``quiet``."""
        before = self._reasons.get(key, "")
        if message == before:
            return
        if message:
            self._reasons[key] = message
            log.warning("%s", message)
            return
        del self._reasons[key]
        if not quiet:
            log.info("recovered: %s", before)

"""Which versions are in memory and which one answers: loading, hot swap, draining, watching.

The manager reconciles each model with the repository: the versions named in
``deployment.json`` (stable, canary, shadow, and the last ``standby_versions`` previous
stable versions as warm standbys, so that a rollback loads nothing), or the highest version
when there is none, as Triton and TF Serving do. Each model's ``Route`` (stable, canary and
its share, shadow) is rebuilt on every reconcile, so a change of ``deployment.json`` by any
writer (another replica, a GitOps tool) takes effect within one poll interval. New versions
load and warm on a loader thread; the swap is one assignment on the event loop, so a request
sees either the old or the new version, never neither. A retired version leaves the routing
table at once, finishes its in-flight requests, and is then dropped, which releases its
onnxruntime session. A version that fails to load leaves whatever is serving untouched, is
logged, counted and shown by RepositoryIndex, and is retried only when its files change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from driftgate.core.deployment import Deployment
from driftgate.core.errors import (
    DriftgateError,
    FailedPrecondition,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from driftgate.core.repository import Repository, validate_model_name
from driftgate.gateway.dataplane.version import ServingVersion, load_version
from driftgate.gateway.metrics import GatewayMetrics
from driftgate.gateway.reporter import StatisticsHub
from driftgate.gateway.router import SCALE, Route, threshold
from driftgate.gateway.settings import GatewaySettings

__all__ = ["LoadFailure", "ModelManager", "ModelState", "lower_priority"]

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class LoadFailure:
    signature: Signature
    reason: str


@dataclass
class ModelState:
    """What is loaded for one model and which loaded version plays which role."""

    name: str
    loaded: dict[int, ServingVersion] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    traffic: dict[tuple[str, str], float] = field(default_factory=dict)  # published weights
    stable: ServingVersion | None = None
    route: Route[ServingVersion] | None = None
    deployment: Deployment | None = None
    failures: dict[int, LoadFailure] = field(default_factory=dict)
    unloaded: bool = False  # by RepositoryModelUnload; the watcher leaves it alone
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelManager:
    """Owns the loaded versions of every model in one repository."""

    def __init__(
        self,
        repository: Repository,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        infer_executor: Executor,
        load_executor: Executor,
        hub: StatisticsHub | None = None,
    ) -> None:
        self.repository = repository
        self._hub = hub
        self._settings = settings
        self._metrics = metrics
        self._infer_executor = infer_executor
        self._load_executor = load_executor
        self._models: dict[str, ModelState] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._watch_task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[str, bool], None]] = []  # (model, ready)

    # -- the request path -------------------------------------------------------------

    def resolve(self, name: str, version: str = "") -> ServingVersion:
        """The version that answers a request for ``name`` (and ``version``, if given)."""
        state = self._models.get(name)
        if state is None or state.unloaded:
            validate_model_name(name)
            raise ModelNotFound(f"model '{name}' is not loaded; see RepositoryIndex")
        if not version:
            if state.stable is None:
                raise ModelNotReady(f"model '{name}' has no version ready to serve")
            return state.stable
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(
                f"model_version must be an integer version, got '{version}'"
            ) from None
        found = state.loaded.get(number)
        if found is None:
            loaded = ", ".join(map(str, sorted(state.loaded))) or "none"
            raise ModelNotFound(
                f"version {number} of model '{name}' is not loaded; loaded versions: {loaded}"
            )
        return found

    def route(self, name: str) -> Route[ServingVersion]:
        """Where unpinned requests for ``name`` go (stable, canary and share, shadow)."""
        state = self._models.get(name)
        if state is None or state.route is None or state.unloaded:
            self.resolve(name)  # raises the precise error
            raise ModelNotReady(f"model '{name}' has no version ready to serve")
        return state.route

    # -- views ------------------------------------------------------------------------

    def states(self) -> list[ModelState]:
        return [self._models[name] for name in sorted(self._models)]

    def state(self, name: str) -> ModelState | None:
        return self._models.get(name)

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
        except DriftgateError:
            return False
        return True

    # -- reconciling with the repository ----------------------------------------------

    async def refresh(self) -> None:
        """Reconcile every model in the repository (and forget those that vanished)."""
        names = set(self.repository.models()) | set(self._models)
        for name in sorted(names):
            try:
                await self.refresh_model(name)
            except Exception:
                log.exception("refreshing model %s failed", name)

    async def refresh_model(self, name: str, force: bool = False) -> ModelState:
        state = self._models.setdefault(name, ModelState(name))
        async with state.lock:
            if state.unloaded and not force:
                return state
            state.unloaded = False
            plan, deployment = self._plan(name)
            for version in plan:
                if version not in state.loaded:
                    await self._load(state, version, force)
            self._route(state, plan, deployment)
        return state

    def _plan(self, name: str) -> tuple[dict[int, str], Deployment]:
        """version -> role wanted by the repository, and the deployment state it read."""
        versions = self.on_disk(name)
        if not versions:
            return {}, Deployment(name)
        deployment = Deployment.from_json(name, self.repository.deployment(name))
        plan: dict[int, str] = {}
        stable = deployment.stable
        plan[stable if stable in versions else max(versions)] = "stable"
        if stable and stable not in versions:
            log.warning("%s: deployment.json names stable version %s, not on disk", name, stable)
        canary = deployment.canary.version if deployment.canary else 0
        if canary in versions and canary not in plan:
            plan[canary] = "canary"
        if deployment.shadow in versions and deployment.shadow not in plan:
            plan[deployment.shadow] = "shadow"
        standbys = [v for v in deployment.previous if v in versions and v not in plan]
        for version in standbys[: self._settings.standby_versions]:
            plan[version] = "standby"
        return plan, deployment

    async def _load(self, state: ModelState, version: int, force: bool) -> None:
        signature = self._signature(state.name, version)
        failure = state.failures.get(version)
        if failure is not None and failure.signature == signature and not force:
            return
        metrics = self._metrics.for_version(state.name, version)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(
                self._load_executor,
                load_version,
                self.repository,
                state.name,
                version,
                self._settings,
                self._infer_executor,
                metrics,
            )
        except Exception as exc:
            reason = exc.message if isinstance(exc, DriftgateError) else repr(exc)
            state.failures[version] = LoadFailure(signature, reason)
            self._metrics.load_failures.labels(state.name, str(version)).inc()
            log.error("%s version %d failed to load: %s", state.name, version, reason)
            return
        state.failures.pop(version, None)
        self._metrics.load_seconds.labels(state.name, str(version)).observe(
            time.perf_counter() - started
        )
        state.loaded[version] = loaded
        if self._hub is not None and loaded.collector is not None:
            self._hub.add(state.name, version, loaded.collector)

    def on_disk(self, name: str) -> list[int]:
        """Complete versions of ``name`` in the repository (none if the model is not there)."""
        try:
            return self.repository.versions(name)
        except ModelNotFound:
            return []

    def _signature(self, name: str, version: int) -> Signature:
        folder = self.repository.root / name / str(version)
        stats = []
        for filename in ("model.onnx", "model.json"):
            try:
                st = (folder / filename).stat()
                stats.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stats.append((0, 0))
        return tuple(stats)

    def _route(
        self, state: ModelState, plan: dict[int, str], deployment: Deployment | None = None
    ) -> None:
        was_ready = state.stable is not None
        wanted_stable = next((v for v, role in plan.items() if role == "stable"), None)
        if wanted_stable in state.loaded:
            state.stable = state.loaded[wanted_stable]
        elif state.stable is not None and not plan:
            state.stable = None  # the model left the repository
        roles = {v: role for v, role in plan.items() if v in state.loaded}
        if state.stable is not None:
            roles[state.stable.version] = "stable"
        for version in [v for v in state.loaded if v not in roles]:
            self._retire(state.loaded.pop(version))
        state.route = self._build_route(state, roles, deployment)
        state.deployment = deployment
        self._publish_roles(state, roles)
        self._publish_traffic(state)
        if was_ready != (state.stable is not None):
            for listener in self.listeners:
                listener(state.name, state.stable is not None)

    @staticmethod
    def _build_route(
        state: ModelState, roles: dict[int, str], deployment: Deployment | None
    ) -> Route[ServingVersion] | None:
        if state.stable is None:
            return None
        by_role = {role: state.loaded[v] for v, role in roles.items() if role != "standby"}
        canary = by_role.get("canary")
        weight = deployment.canary.weight if deployment and deployment.canary else 0.0
        return Route(
            state.stable, canary, threshold(weight) if canary else 0, by_role.get("shadow")
        )

    def _publish_traffic(self, state: ModelState) -> None:
        """driftgate_traffic_weight and driftgate_deployment_revision for this model."""
        weights: dict[tuple[str, str], float] = {}
        route = state.route
        if route is not None:
            share = 100.0 * route.canary_threshold / SCALE if route.canary else 0.0
            weights[(str(route.stable.version), "stable")] = 100.0 - share
            if route.canary is not None:
                weights[(str(route.canary.version), "canary")] = share
            if route.shadow is not None:
                weights[(str(route.shadow.version), "shadow")] = 0.0
        for key in set(state.traffic) - set(weights):
            _remove(self._metrics.traffic_weight, (state.name, *key))
        for (version, role), weight in weights.items():
            self._metrics.traffic_weight.labels(state.name, version, role).set(weight)
        state.traffic = weights
        revision = state.deployment.revision if state.deployment else 0
        self._metrics.revision.labels(state.name).set(revision)

    def _publish_roles(self, state: ModelState, roles: dict[int, str]) -> None:
        for version, role in state.roles.items():
            if roles.get(version) != role:
                self._metrics.loaded.remove(state.name, str(version), role)
        for version, role in roles.items():
            self._metrics.loaded.labels(state.name, str(version), role).set(1)
        state.roles = roles

    def _retire(self, version: ServingVersion) -> None:
        task = asyncio.create_task(self._drain(version))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, version: ServingVersion) -> None:
        deadline = time.monotonic() + self._settings.drain_seconds
        while version.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await version.batcher.close()
        # Free the onnxruntime session on the loader thread, not on the event loop.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._load_executor, version.onnx.release)
        if self._hub is not None:
            self._hub.retire(version.model, version.version)  # one last report, then gone
        labels = (version.model, str(version.version))
        for family in (
            self._metrics.request_seconds,
            self._metrics.queue_seconds,
            self._metrics.compute_seconds,
            self._metrics.batch_size,
            self._metrics.queue_depth,
        ):
            _remove(family, labels)
        log.info("%s version %d retired", version.model, version.version)

    # -- explicit control (RepositoryModelLoad / Unload) --------------------------------

    async def load(self, name: str) -> ModelState:
        validate_model_name(name)
        if not self.on_disk(name):
            raise ModelNotFound(f"model '{name}' is not in the repository")
        state = await self.refresh_model(name, force=True)
        if state.stable is None:
            reasons = "; ".join(f"version {v}: {f.reason}" for v, f in state.failures.items())
            raise ModelNotReady(f"model '{name}' could not be loaded: {reasons or 'no versions'}")
        return state

    async def preload(self, name: str, version: int) -> None:
        """Load ``version`` before a command routes traffic to it.

        Raises (and nothing changes) when the version is not in the repository or cannot be
        loaded, so an operator learns at once instead of from a status that never moves.
        """
        validate_model_name(name)
        on_disk = self.on_disk(name)
        if not on_disk:
            raise ModelNotFound(f"model '{name}' is not in the repository")
        if version not in on_disk:
            raise ModelNotFound(
                f"version {version} of model '{name}' is not in the repository; versions: "
                f"{', '.join(map(str, on_disk))}"
            )
        state = self._models.setdefault(name, ModelState(name))
        async with state.lock:
            if version not in state.loaded:
                await self._load(state, version, force=True)
            if version not in state.loaded:
                raise FailedPrecondition(
                    f"version {version} of model '{name}' cannot be loaded, so nothing was "
                    f"changed: {state.failures[version].reason}"
                )

    async def unload(self, name: str) -> None:
        validate_model_name(name)
        state = self._models.get(name)
        if state is None:
            raise ModelNotFound(f"model '{name}' is not loaded")
        async with state.lock:
            state.unloaded = True
            self._route(state, {})

    # -- the watcher ------------------------------------------------------------------

    def start_watching(self) -> None:
        self._watch_task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_interval)
            await self.refresh()

    async def close(self) -> None:
        """Stop watching and wait for retired versions to drain."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)


def lower_priority() -> None:
    """Run the calling thread at a lower CPU priority (Linux: nice applies per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _remove(family: object, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        family.remove(*labels)  # type: ignore[attr-defined]

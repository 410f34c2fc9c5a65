"""Which versions are in memory and which one answers: loading, hot swap, draining, watching.

The manager reconciles each model with the repository: the versions named in
``deployment.json`` (stable, canary, shadow, and the last ``standby_versions`` previous
stable versions as warm standbys, so that a rollback loads nothing), or the highest version
when there is none, as Triton and TF Serving do. Each model's ``Route`` (stable, canary and
its share, shadow) is rebuilt on every reconcile, so a change of ``deployment.json`` by any
writer (another replica, a GitOps tool) takes effect within one poll interval. Repository
scans run on a thread of their own and ``driftgate.gateway.reconciler`` turns each scan into a
plan; the event loop only applies plans, and a failed scan changes nothing. New versions load
and warm on a loader thread; the swap is one assignment on the event loop, so a request sees
either the old or the new version, never neither. A retired version's runtime leaves the
routing table at once and drains: it finishes its in-flight requests, then releases its
onnxruntime session; loaded again while draining, the same runtime is reclaimed. A version
that fails to load leaves whatever is serving untouched, is
logged, counted and shown by RepositoryIndex, and is retried only when its files change.
Before that, the version is opened and run in a child process (``dataplane.probe``): one that
hangs or crashes onnxruntime there is quarantined in the repository and never loaded here,
nor by any replica sharing the repository, until it is rewritten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from driftgate.core.deployment import Deployment
from driftgate.core.errors import (
    DriftgateError,
    FailedPrecondition,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Unavailable,
    quote,
)
from driftgate.core.repository import Repository, validate_model_name
from driftgate.gateway.dataplane.probe import LoadProbe
from driftgate.gateway.dataplane.version import VersionRuntime, load_version
from driftgate.gateway.metrics import GatewayMetrics, ServingSnapshot, ServingView
from driftgate.gateway.reconciler import (
    ModelScan,
    Reconciler,
    RepositoryScan,
    ScanMetrics,
    Serving,
    scan,
    scan_model,
    stale_after,
)
from driftgate.gateway.reporter import StatisticsHub
from driftgate.gateway.router import SCALE, Route, threshold
from driftgate.gateway.settings import GatewaySettings

__all__ = ["LoadFailure", "ModelManager", "ModelState"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Signature = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class LoadFailure:
    signature: Signature
    reason: str
    quarantined: bool = False


@dataclass
class ModelState:
    """What is loaded for one model and which loaded version plays which role."""

    name: str
    loaded: dict[int, VersionRuntime] = field(default_factory=dict)
    #: retired versions still finishing their in-flight work, reclaimable until closed
    draining: dict[int, VersionRuntime] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    traffic: dict[tuple[str, str], float] = field(default_factory=dict)  # published weights
    stable: VersionRuntime | None = None
    route: Route[VersionRuntime] | None = None
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
        #: the watcher's reconcile of each model in progress: a slow load holds its own model
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._reconciler = Reconciler(ScanMetrics(metrics.registry), settings.standby_versions)
        timeout = settings.load_probe_timeout
        self._probe = LoadProbe(timeout) if timeout > 0 else None
        self.listeners: list[Callable[[str, bool], None]] = []  # (model, ready)

    # -- the request path -------------------------------------------------------------

    @property
    def settings(self) -> GatewaySettings:
        """The settings this gateway serves with (request limits are read from here)."""
        return self._settings

    def resolve(self, name: str, version: str = "") -> VersionRuntime:
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
            # Twenty digits hold any int64; a longer string is refused before int() reads it.
            number = int(version) if len(version) <= 20 else -1
        except ValueError:
            number = -1
        if number < 0:
            raise InvalidInput(f"model_version must be an integer version, got {quote(version)}")
        found = state.loaded.get(number)
        if found is None:
            loaded = ", ".join(map(str, sorted(state.loaded))) or "none"
            raise ModelNotFound(
                f"version {number} of model '{name}' is not loaded; loaded versions: {loaded}"
            )
        return found

    def route(self, name: str) -> Route[VersionRuntime]:
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

    async def refresh(self, wait: bool = True) -> None:
        """Reconcile every model with one scan of the repository.

        The scan runs on the scan thread; each model's plan is applied on the event loop, the
        models side by side, so that one slow or hanging load holds only its own model. With
        ``wait`` false (the watcher), this returns once the plans are started, and a model
        still being reconciled from an earlier scan is left to finish that one first.
        A scan that cannot list the repository changes nothing (logged, counted, retried).
        """
        result = await self._scan_repository()
        if not self._reconciler.observe(result, watcher=True):
            return
        started = []
        for name, scanned in result.models.items():
            running = self._refreshing.get(name)
            if running is not None and not running.done():
                continue
            task = asyncio.create_task(self._refresh_quietly(name, scanned), name=f"refresh-{name}")
            self._refreshing[name] = task
            started.append(task)
        if wait and started:
            await asyncio.gather(*started)

    async def _refresh_quietly(self, name: str, scanned: ModelScan) -> None:
        with self._reconciler.applying():
            try:
                await self.refresh_model(name, scanned=scanned)
            except Exception:
                log.exception("refreshing model %s failed", name)

    async def refresh_model(
        self, name: str, force: bool = False, scanned: ModelScan | None = None
    ) -> ModelState:
        """Reconcile one model; ``scanned`` is the watcher's scan of it, else it is scanned now."""
        state = self._models.setdefault(name, ModelState(name))
        async with state.lock:
            if state.unloaded and not force:
                return state
            state.unloaded = False
            planned = await self._plan(state, scanned)
            if planned is None:
                return state  # the scan failed or must be confirmed: nothing changes
            plan, deployment = planned
            for version in plan:
                if version not in state.loaded:
                    await self._load(state, version, force)
            self._route(state, plan, deployment)
        return state

    async def _plan(
        self, state: ModelState, scanned: ModelScan | None
    ) -> tuple[dict[int, str], Deployment | None] | None:
        """version -> role wanted, and the deployment state read; None to change nothing.

        The rules are ``reconciler.plan``'s. Only the watcher's scans count toward retiring a
        model seen empty; a scan made here, after a command, never does.
        """
        confirms = scanned is not None
        if scanned is None:
            scanned = await self._scan_model(state.name)
            self._reconciler.observe(
                RepositoryScan(scanned.started, {state.name: scanned}), watcher=False
            )
        serving = Serving(
            state.stable.version if state.stable is not None else 0,
            frozenset(state.loaded),
            state.deployment,
        )
        planned = self._reconciler.plan(scanned, serving, confirms=confirms)
        if planned is None:
            return None
        return dict(planned.roles), planned.deployment

    async def _scan_repository(self) -> RepositoryScan:
        started = time.monotonic()
        limit = stale_after(self._settings.poll_interval)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            self._reconciler.executor, scan, self.repository, sorted(self._models)
        )
        try:
            return await _within(job, limit)
        except TimeoutError:
            return RepositoryScan(started, error=f"the scan took longer than {limit:g} s")

    async def _scan_model(self, name: str) -> ModelScan:
        started = time.monotonic()
        limit = stale_after(self._settings.poll_interval)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._reconciler.executor, scan_model, self.repository, name)
        try:
            return await _within(job, limit)
        except TimeoutError:
            return ModelScan(name, started, error=f"the scan took longer than {limit:g} s")

    async def _load(self, state: ModelState, version: int, force: bool) -> None:
        draining = state.draining.get(version)
        if draining is not None and draining.reclaim():
            # Still in memory and still owned by its generation: serve it again.
            del state.draining[version]
            state.loaded[version] = draining
            log.info("%s version %d reclaimed while draining", state.name, version)
            return
        signature = self._signature(state.name, version)
        failure = state.failures.get(version)
        if failure is not None and failure.signature == signature and not force:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        refused = await loop.run_in_executor(self._load_executor, self._admit, state.name, version)
        if refused is not None:
            state.failures[version] = LoadFailure(signature, refused, quarantined=True)
            self._metrics.load_failures.labels(state.name, str(version)).inc()
            return
        try:
            loaded = await loop.run_in_executor(
                self._load_executor,
                load_version,
                self.repository,
                state.name,
                version,
                self._settings,
                self._infer_executor,
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
        loaded.start_serving()
        state.loaded[version] = loaded
        if self._hub is not None and loaded.collector is not None:
            self._hub.add(loaded.model, loaded.version, loaded.generation, loaded.collector)

    def _admit(self, name: str, version: int) -> str | None:
        """On the loader thread: why ``version`` may not be loaded (quarantined now or
        before), or None. Errors reading it are left to the load, which reports them."""
        try:
            marker = self.repository.quarantined(name, version)
            if marker is not None:
                return f"quarantined: {marker.get('reason', 'no reason recorded')}"
            if self._probe is None:
                return None
            verdict = self._probe.check(self.repository.read_model_bytes(name, version))
            if not verdict.quarantine:
                return None
            self.repository.quarantine(name, version, verdict.detail)
        except (OSError, DriftgateError, ValueError) as exc:
            log.warning("%s version %d: the load probe could not run: %s", name, version, exc)
            return None
        log.error("%s version %d quarantined: %s", name, version, verdict.detail)
        return f"quarantined: {verdict.detail}"

    def on_disk(self, name: str) -> list[int]:
        """Complete versions of ``name`` in the repository (none if the model is not there)."""
        try:
            return self.repository.versions(name)
        except ModelNotFound:
            return []
        except OSError as exc:
            raise Unavailable(
                f"the repository cannot be read for model '{name}': {exc}; retry"
            ) from exc

    def _signature(self, name: str, version: int) -> Signature:
        """A version's file signature as the last scan saw it, or read now if none did."""
        known = self._reconciler.signature(name, version)
        if known is not None:
            return known
        try:
            return self.repository.signature(name, version)
        except OSError:
            return ((0, 0), (0, 0))

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
            self._retire(state, state.loaded.pop(version))
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
    ) -> Route[VersionRuntime] | None:
        if state.stable is None:
            return None
        by_role = {role: state.loaded[v] for v, role in roles.items() if role != "standby"}
        canary = by_role.get("canary")
        weight = deployment.canary.weight if deployment and deployment.canary else 0.0
        return Route(
            state.stable, canary, threshold(weight) if canary else 0, by_role.get("shadow")
        )

    @staticmethod
    def _publish_traffic(state: ModelState) -> None:
        """The traffic weights that status and the metrics collector report for this model."""
        weights: dict[tuple[str, str], float] = {}
        route = state.route
        if route is not None:
            share = 100.0 * route.canary_threshold / SCALE if route.canary else 0.0
            weights[(str(route.stable.version), "stable")] = 100.0 - share
            if route.canary is not None:
                weights[(str(route.canary.version), "canary")] = share
            if route.shadow is not None:
                weights[(str(route.shadow.version), "shadow")] = 0.0
        state.traffic = weights

    @staticmethod
    def _publish_roles(state: ModelState, roles: dict[int, str]) -> None:
        state.roles = roles

    def snapshot(self) -> ServingSnapshot:
        """Every loaded version with its role and weight, for the metrics collector.

        Called from the metrics thread: it copies the containers it reads, each in one step.
        """
        snap = ServingSnapshot()
        for state in list(self._models.values()):
            if state.deployment is not None:
                snap.revisions[state.name] = state.deployment.revision
            roles = dict(state.roles)
            traffic = dict(state.traffic)
            failures = dict(state.failures)
            snap.quarantined += [(state.name, v) for v, f in failures.items() if f.quarantined]
            for number, runtime in list(state.loaded.items()):
                role = roles.get(number)
                if role is None or state.unloaded:
                    continue
                snap.versions.append(
                    ServingView(
                        state.name,
                        number,
                        role,
                        traffic.get((str(number), role), 0.0),
                        runtime.record,
                        runtime.batcher.queue_depth,
                        runtime.in_flight,
                        runtime.bookkeeping_errors
                        + (runtime.collector.errors if runtime.collector else 0),
                    )
                )
        return snap

    def _retire(self, state: ModelState, runtime: VersionRuntime) -> None:
        """Take a version out of service; it drains, then releases what its generation owns."""
        runtime.begin_drain()
        state.draining[runtime.version] = runtime
        task = asyncio.create_task(self._drain(state, runtime))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, state: ModelState, runtime: VersionRuntime) -> None:
        closed = await runtime.drain(self._settings.drain_seconds, self._load_executor)
        if state.draining.get(runtime.version) is runtime:
            del state.draining[runtime.version]
        if not closed:
            return  # reclaimed: it serves again, nothing to release
        if self._hub is not None:
            # One last report with this generation's counts, then gone.
            self._hub.retire(runtime.model, runtime.version, runtime.generation)
        if runtime.version not in state.loaded:  # not loaded again meanwhile
            self._metrics.forget(runtime.model, runtime.version)
        log.info(
            "%s version %d (generation %d) retired",
            runtime.model,
            runtime.version,
            runtime.generation,
        )

    # -- explicit control (RepositoryModelLoad / Unload) --------------------------------

    async def load(self, name: str) -> ModelState:
        validate_model_name(name)
        if not await asyncio.to_thread(self.on_disk, name):
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
        on_disk = await asyncio.to_thread(self.on_disk, name)
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
        self._watch_task = asyncio.create_task(self._watch(), name="driftgate-watcher")
        self._watch_task.add_done_callback(_watch_ended)

    async def _watch(self) -> None:
        """Scan and apply every poll interval. No error ends the loop: each is logged and
        counted, and the next round retries; only cancelling (``close``) stops it."""
        try:
            while True:
                await asyncio.sleep(self._settings.poll_interval)
                try:
                    await self.refresh(wait=False)
                except Exception:
                    self._reconciler.metrics.failures.inc()
                    log.exception("repository watcher: this round failed; retrying")
        except asyncio.CancelledError:
            self._reconciler.close()
            raise

    def watcher_healthy(self, now: float | None = None) -> bool:
        """Whether hot swaps still happen: the watcher runs, and its last good scan is at most
        max(10 s, 10 poll intervals) before ``now`` (``time.monotonic()``). Part of readiness.
        """
        task = self._watch_task
        if task is None or task.done():
            return False
        now = time.monotonic() if now is None else now
        return self._reconciler.fresh(now, stale_after(self._settings.poll_interval))

    async def close(self) -> None:
        """Stop watching and wait for retired versions to drain."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        refreshing = [t for t in self._refreshing.values() if not t.done()]
        for task in refreshing:
            task.cancel()
        await asyncio.gather(*refreshing, return_exceptions=True)
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        self._reconciler.close()
        if self._probe is not None:
            self._probe.close()


async def _within(job: asyncio.Future[T], seconds: float) -> T:
    """``job``'s result, or TimeoutError after ``seconds``; a cancel is never lost.

    Not ``asyncio.wait_for``: on Python 3.11 it returns the result, swallowing the cancel,
    when the job has just finished as its task is cancelled. The watcher then polled on after
    shutdown cancelled it, and shutdown waited for it forever.
    """
    async with asyncio.timeout(seconds):
        return await job


def _watch_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the repository watcher stopped", exc_info=task.exception())

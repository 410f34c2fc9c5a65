"""The policy in action: drift evaluation, canary analysis and retraining of one model at a time.

The scheduler (``monitor.scheduler``) calls ``evaluate_drift``, ``analyse_canary`` and
``retrain`` per model; each reads the model's policy file afresh, works on the store and acts
on the gateway only through a ``ControlPort`` (the gateway's Control service in production, a
fake in tests). Every decision is an event (``store.add_event``) and a count on
``driftgate_monitor_events_total{model, kind}``. State that must survive a restart (the
canary analysis, the drift streak, the last retrain) lives in the store's ``policy_state``.

Event kinds: ``drift_alarm``, ``accuracy_drop``, ``retrain_started``, ``retrain_succeeded``,
``retrain_failed``, ``retrain_rejected``, ``canary_started``, ``canary_step``,
``canary_check_failed``, ``promotion``, ``rollback``, ``canary_ended`` (the canary went away
by another hand), ``action_superseded`` (a control call refused because the deployment moved
since it was read: the operator's change stands), ``stable_pinned`` (no gateway configured:
the stable pinned in ``deployment.json`` before a retrain), ``policy_error``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from driftgate.converter import load_table, save_table_npz
from driftgate.core.deployment import DeploymentStore
from driftgate.core.errors import FailedPrecondition, ModelNotFound
from driftgate.core.objectstore import ObjectRepository
from driftgate.core.profile import (
    CategoricalBins,
    NumericBins,
    count_categories,
    numeric_counts,
)
from driftgate.core.repository import Repository
from driftgate.monitor import canary as analysis
from driftgate.monitor.canary import AnalysisState, CanaryFigures, Decision, VersionFigures
from driftgate.monitor.control_client import (
    ACTOR,
    ControlConflict,
    ControlError,
    DeploymentView,
)
from driftgate.monitor.drift import DriftTester, DriftThresholds, Verdict
from driftgate.monitor.policy import Policy, PolicyError, load_policy
from driftgate.monitor.retrain import (
    RetrainJob,
    RetrainResult,
    assemble,
    production_table,
    reference_rows,
    run_worker,
)
from driftgate.monitor.service import Monitor, Window
from driftgate.monitor.store import StoredPrediction

__all__ = ["Autopilot", "ControlPort"]

log = logging.getLogger(__name__)

LABELS_LOOKBACK = 86400.0
"""Labels of the stable version in this many seconds before a canary make accuracy a
required check of its analysis (unless the policy names the required checks)."""

Bins = CategoricalBins | NumericBins

Clock = Callable[[], float]


class ControlPort(Protocol):
    """The gateway's Control service, as the autopilot uses it."""

    def status(self, model: str) -> DeploymentView: ...
    def deploy_canary(
        self, model: str, version: int, weight: float, reason: str, revision: int | None = None
    ) -> DeploymentView: ...
    def pin_stable(
        self, model: str, version: int, reason: str, revision: int | None = None
    ) -> DeploymentView: ...
    def set_traffic(self, model: str, weight: float, reason: str, revision: int) -> None: ...
    def promote(self, model: str, reason: str, revision: int, cause: str = "") -> None: ...
    def rollback(self, model: str, reason: str, revision: int, cause: str = "") -> None: ...


class Autopilot:
    """Policy jobs over one ``Monitor`` (store, repository, metrics) and one gateway."""

    def __init__(
        self,
        monitor: Monitor,
        control: ControlPort | None,
        workdir: Path,
        clock: Clock = time.time,
    ) -> None:
        self.monitor = monitor
        self.store = monitor.store
        self.control = control
        self.workdir = Path(workdir)
        self.clock = clock
        self.request_retrain: Callable[[str, str], object] = self.retrain
        """How a trigger asks for a retrain; the scheduler replaces it with a queued job."""
        self._locks: dict[str, threading.Lock] = {}
        self._testers: dict[tuple[float, int, float], DriftTester] = {}

    # -- helpers --------------------------------------------------------------------------

    def models(self) -> list[str]:
        return self.monitor.repository.models()

    def policy(self, model: str) -> Policy:
        return load_policy(self.monitor.repository.policy_root(model), model)

    def event(
        self, kind: str, model: str, version: int, reason: str, figures: dict[str, Any]
    ) -> None:
        self.store.add_event(self.clock(), kind, model, version, reason, _plain(figures))
        self.monitor.metrics.events.labels(model, kind).inc()
        log.info("event %s %s v%d: %s", kind, model, version, reason)

    def _lock(self, model: str) -> threading.Lock:
        return self._locks.setdefault(model, threading.Lock())

    def _stable(self, model: str) -> int:
        if self.control is not None:
            with contextlib.suppress(ControlError):
                return self.control.status(model).stable
        return self.monitor.resolve_version(model, None)

    def _meta(self, model: str, version: int) -> dict[str, Any]:
        path = self.monitor.repository.version_dir(model, version) / "model.json"
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}

    # -- drift evaluation -----------------------------------------------------------------

    def evaluate_drift(self, model: str) -> dict[str, Any]:
        """Test the stable version's latest window that has ended, once; raise or clear the
        drift alarm; check accuracy; maybe retrain.

        The windows are consecutive and never overlap: [k w, (k + 1) w) for the policy's
        window w, each tested once, one bucket after it ended (so that the gateways' reports
        of its last bucket are in). Their tests are then independent: at the policy's level
        per window (``DriftPolicy.alpha``, spread from ``false_alarms`` per 30 days), an
        undrifted model raises ``false_alarms`` alarm events per 30 days on average, whatever
        its traffic; a window sliding every minute would test almost the same rows 60 times
        and alarm in streaks. A shift is alarmed by the first window that holds enough of it:
        within two windows of its start. Retraining follows ``retrain.drift_evaluations``
        consecutive drifted windows: the same signal."""
        policy = self.policy(model)
        now = self.clock()
        version = self._stable(model)
        p = policy.drift
        settle = float(self.store.bucket_seconds)
        end = math.floor((now - settle) / p.window) * p.window
        state = self.store.get_state(model, "drift") or {}
        if state.get("version") != version:
            if "version" in state:
                self.monitor.show_alarm(model, int(state["version"]), {})
            state = {"version": version, "streak": 0, "alarm": False, "accuracy_low": False}
        if state.get("window_end") == end:
            self.monitor.show_alarm(model, version, state)
            return {"window_end": end, "evaluated": False, "streak": state["streak"]}
        thresholds = DriftThresholds(
            alpha=p.alpha, min_rows=p.min_rows, dataset_share=p.dataset_share
        )
        key = (p.alpha, p.min_rows, p.dataset_share)
        if key not in self._testers:
            self._testers[key] = DriftTester(thresholds)
        tester = self._testers[key]
        window = Window(end - p.window, end)
        result = self.monitor.drift_with(tester, model, version, window)
        state["window_end"] = end
        drifted = [f for f in result.features if f.verdict == Verdict.DRIFT]
        figures: dict[str, Any] = {
            "window_start": window.start,
            "window_end": end,
            "rows": result.rows,
            "features": len(result.features),
            "share": result.share,
            # the level of the whole window (Bonferroni over the features inside)
            "alpha": p.alpha,
            "false_alarms_per_30_days": p.false_alarms,
            # per feature, each test that found drift: the test, its statistic, critical
            # value, effect size and sample sizes, or a quality kind's rates and p-value
            "drifted": {f.name: f.figures() for f in drifted},
        }
        if result.verdict == Verdict.DRIFT:
            state["streak"] += 1
            if not state["alarm"]:
                state["alarm"] = True
                names = ", ".join(sorted(figures["drifted"])) or "-"
                self.event(
                    "drift_alarm",
                    model,
                    version,
                    f"dataset drift: {result.share:.0%} of features drifted ({names}) "
                    f"in {result.rows} rows",
                    figures,
                )
        elif result.verdict == Verdict.NO_DRIFT:
            state["streak"] = 0
            state["alarm"] = False
        if result.prediction is not None and result.prediction.verdict != Verdict.INSUFFICIENT_DATA:
            state["prediction_alarm"] = result.prediction.verdict == Verdict.DRIFT
        self.monitor.show_alarm(model, version, state)
        accuracy = self.monitor.accuracy(model, version, window)
        holdout = self._meta(model, version).get("holdout_metrics") or {}
        baseline: float | None = holdout.get("accuracy")
        low = (
            baseline is not None
            and accuracy.accuracy is not None
            and accuracy.label_count >= policy.retrain.min_labels
            and baseline - accuracy.accuracy > policy.retrain.accuracy_drop
        )
        accuracy_figures = {
            "accuracy": accuracy.accuracy,
            "baseline": baseline,
            "labels": accuracy.label_count,
            "threshold": policy.retrain.accuracy_drop,
        }
        if low and not state["accuracy_low"]:
            assert baseline is not None and accuracy.accuracy is not None
            self.event(
                "accuracy_drop",
                model,
                version,
                f"accuracy {accuracy.accuracy:.3f} on {accuracy.label_count} labels, "
                f"{baseline - accuracy.accuracy:.3f} below the holdout accuracy {baseline:.3f}",
                accuracy_figures,
            )
        state["accuracy_low"] = bool(low)
        self.store.put_state(model, "drift", state, now)
        reason = ""
        if state["streak"] >= policy.retrain.drift_evaluations:
            reason = f"drift in {state['streak']} consecutive windows"
        elif low:
            reason = "accuracy drop"
        if reason and policy.retrain.enabled and self._may_retrain(model, policy, now):
            self.request_retrain(model, reason)
        return {
            "window_end": end,
            "evaluated": True,
            "drift": figures,
            "accuracy": accuracy_figures,
            "streak": state["streak"],
        }

    def _may_retrain(self, model: str, policy: Policy, now: float) -> bool:
        last = (self.store.get_state(model, "retrain") or {}).get("last", 0.0)
        if now - last < policy.retrain.cooldown:
            return False
        if self.store.get_state(model, "canary") is not None:
            return False
        return not self._lock(model).locked()

    # -- canary analysis ------------------------------------------------------------------

    def analyse_canary(self, model: str) -> Decision | None:
        """One look of the canary analysis of ``model`` (see ``monitor.canary``). Accuracy is
        a required check by default when the stable version received labels in the day
        before the analysis began (``LABELS_LOOKBACK``)."""
        policy = self.policy(model)
        if not policy.canary.enabled or self.control is None:
            return None
        now = self.clock()
        view = self.control.status(model)
        stored = self.store.get_state(model, "canary")
        state = None if stored is None else AnalysisState.from_dict(stored)
        if view.canary == 0:
            if state is not None:
                self.store.put_state(model, "canary", None, now)
                self.event(
                    "canary_ended",
                    model,
                    state.canary,
                    "the canary is no longer deployed (promoted or rolled back by hand); "
                    "analysis stopped",
                    state.to_dict(),
                )
            return None
        if state is None or state.canary != view.canary:
            labelled = self.monitor.accuracy(
                model, view.stable, Window(now - LABELS_LOOKBACK, now)
            ).label_count
            decision = analysis.begin(
                policy.canary, model, view.canary, view.stable, now, labels_expected=labelled > 0
            )
            if decision.weight is not None and view.canary_weight != decision.weight:
                self.control.set_traffic(model, decision.weight, decision.reason, view.revision)
            self.store.put_state(model, "canary", decision.state.to_dict(), now)
            started = decision.figures | {"stable_labels_last_day": labelled}
            self.event("canary_started", model, view.canary, decision.reason, started)
            return decision
        figures = self.canary_figures(model, state, now)
        decision = analysis.analyse(policy.canary, state, figures, now)
        if decision.action == "rollback":
            for check in decision.checks:
                if check.outcome == "fail":  # each failed check on its own, then the rollback
                    reason = f"{check.name} check failed: {check.detail}"
                    self.event("canary_check_failed", model, state.canary, reason, check.figures())
        self._act(model, view, decision, now)
        if decision.action == "hold":
            # A look that holds still counts (alpha spent, checks passed): keep it.
            self.store.put_state(model, "canary", decision.state.to_dict(), now)
            log.info("canary %s v%d: %s", model, state.canary, decision.reason)
        return decision

    def _act(self, model: str, view: DeploymentView, d: Decision, now: float) -> None:
        """Carry out a decision. Every control call carries the revision the decision read:
        if an operator (or another monitor) changed the deployment since, the gateway refuses
        it, and the policy backs off with an ``action_superseded`` event, changing nothing;
        the next look reads the deployment afresh."""
        assert self.control is not None
        version = d.state.canary
        if d.action in ("wait", "hold"):
            return
        try:
            if d.action == "step":
                assert d.weight is not None
                self.control.set_traffic(model, d.weight, d.reason, view.revision)
            elif d.action == "promote":
                self.control.promote(model, d.reason, view.revision, cause="canary_passed")
            elif d.action == "rollback":
                self.control.rollback(model, d.reason, view.revision, cause=_rollback_cause(d))
        except ControlConflict as exc:
            self.event(
                "action_superseded",
                model,
                version,
                f"{d.action} not made: the deployment changed since revision {view.revision} "
                f"was read ({exc})",
                {"action": d.action, "revision": view.revision, "decision": d.figures},
            )
            return
        if d.action == "retry":
            self.store.put_state(model, "canary", d.state.to_dict(), now)
            self.event("canary_check_failed", model, version, d.reason, d.figures)
        elif d.action == "step":
            self.store.put_state(model, "canary", d.state.to_dict(), now)
            self.event("canary_step", model, version, d.reason, d.figures)
        elif d.action in ("promote", "rollback"):
            self.store.put_state(model, "canary", None, now)
            kind = "promotion" if d.action == "promote" else "rollback"
            self.event(kind, model, version, d.reason, d.figures)

    def canary_figures(self, model: str, state: AnalysisState, now: float) -> CanaryFigures:
        """Canary and stable figures summed over the same buckets, from the one the analysis
        began in to now; predictions counted on the stable version's bins."""
        bucket = self.store.bucket_seconds
        start = math.floor(state.started_at / bucket) * bucket
        window = Window(start, now + bucket)
        task = str(self._meta(model, state.stable).get("task") or "classification")
        reference = self.monitor.reference(model, state.stable)
        bins = None if reference is None else reference.prediction
        return CanaryFigures(
            self._version_figures(model, state.canary, window, bins),
            self._version_figures(model, state.stable, window, bins),
            "regression" if task == "regression" else "classification",
        )

    def _version_figures(
        self, model: str, version: int, window: Window, bins: Bins | None = None
    ) -> VersionFigures:
        traffic = self.store.traffic(model, version, window.start, window.end)
        histogram = self.store.latency(model, version, window.start, window.end)
        accuracy = self.monitor.accuracy(model, version, window)
        labels = accuracy.label_count
        correct = round((accuracy.accuracy or 0.0) * labels)
        mae, rmse = accuracy.mae or 0.0, accuracy.rmse or 0.0
        return VersionFigures(
            requests=int(traffic["requests"]),
            errors=int(traffic["errors"]),
            latency=tuple(histogram),
            labels=labels if accuracy.accuracy is not None or accuracy.mae is not None else 0,
            correct=correct,
            absolute_error_sum=mae * labels,
            squared_error_sum=rmse * rmse * labels,
            predictions=self._predictions(model, version, window, bins),
        )

    def _predictions(
        self, model: str, version: int, window: Window, bins: Bins | None
    ) -> tuple[int, ...]:
        """The version's predictions counted on ``bins`` (the stable version's): the
        gateway's counts when the version's own bins are the same, else its prediction
        records binned again (a regressor's edges differ between versions)."""
        if bins is None:
            return ()
        own = self.monitor.reference(model, version)
        if own is not None and own.prediction is not None and _same_bins(own.prediction, bins):
            counts = self.store.counts(model, version, window.start, window.end)
            stored = next((c for (is_prediction, _), c in counts.items() if is_prediction), {})
            out = np.zeros(_bin_count(bins), dtype=np.int64)
            for index, count in stored.items():
                if 0 <= index < out.size:
                    out[index] += count
            return tuple(int(c) for c in out)
        records = self.store.predictions(model, version, window.start, window.end)
        values = [r.value for r in records]
        if isinstance(bins, CategoricalBins):
            binned, _ = count_categories(list(bins.categories), np.asarray(values, dtype=object))
        else:
            numbers = np.asarray([_as_float(v) for v in values], dtype=np.float64)
            binned = numeric_counts(bins.edges, numbers, bins.dtype).counts
        return tuple(int(c) for c in binned)

    # -- retraining -----------------------------------------------------------------------

    def retrain(self, model: str, reason: str) -> RetrainResult | None:
        """Retrain ``model`` now (never twice at once); None when one is already running."""
        lock = self._lock(model)
        if not lock.acquire(blocking=False):
            log.info("retrain of %s already running; %r skipped", model, reason)
            return None
        try:
            return self._retrain(model, reason)
        finally:
            lock.release()

    def _retrain(self, model: str, reason: str) -> RetrainResult:
        now = self.clock()
        try:
            policy = self.policy(model)
        except PolicyError as exc:
            self.event("retrain_failed", model, 0, str(exc), {"trigger": reason})
            return RetrainResult("failed", str(exc))
        p = policy.retrain
        stable = self._stable(model)
        self.store.put_state(model, "retrain", {"last": now, "reason": reason}, now)
        started = {"trigger": reason, "window_seconds": p.window, "trainer": p.trainer or "clone"}
        self.event("retrain_started", model, stable, f"retrain triggered: {reason}", started)
        if self.store.get_state(model, "canary") is not None:
            return self._retrain_end(
                model, stable, RetrainResult("rejected", "a canary analysis is in progress"), reason
            )
        try:
            revision = self._pin_before_retrain(model, stable)
        except ControlConflict as exc:
            moved = RetrainResult("rejected", f"the deployment moved while it was read: {exc}")
            return self._retrain_end(model, stable, moved, reason)
        except (ControlError, FailedPrecondition) as exc:
            return self._retrain_end(model, stable, RetrainResult("failed", str(exc)), reason)
        workdir = Path(tempfile.mkdtemp(prefix=f"retrain-{model}-", dir=self._workdir()))
        try:
            result = self._prepare_and_run(model, stable, policy, now, workdir)
        except (FailedPrecondition, ModelNotFound, OSError, ValueError) as exc:
            result = RetrainResult("failed", f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if result.outcome == "succeeded" and self.control is not None:
            weight = policy.canary.steps[0]
            try:
                self.control.deploy_canary(
                    model, result.version, weight, f"retrained: {reason}", revision
                )
            except ControlConflict as exc:
                # An operator (or another monitor) changed the deployment during the retrain:
                # their change stands; the new version stays in the repository, unserved.
                result = RetrainResult(
                    "rejected",
                    f"version {result.version} written, not deployed: the deployment changed "
                    f"since revision {revision} was read before the retrain ({exc})",
                    result.version, result.figures,
                )  # fmt: skip
            except ControlError as exc:
                result = RetrainResult(
                    "failed", f"version {result.version} written, deploy refused: {exc}",
                    result.version, result.figures,
                )  # fmt: skip
        return self._retrain_end(model, stable, result, reason)

    def _pin_before_retrain(self, model: str, stable: int) -> int | None:
        """Pin ``stable`` before a retrain writes a newer version, so that the new version can
        never serve by being the highest; the revision the canary deploy must find.

        Through the gateway: read the status, refuse (``ControlConflict``) if a canary is
        deployed or the stable is no longer ``stable``, pin with the revision read. Without a
        gateway the monitor never deploys, but it still pins the stable in the repository's
        ``deployment.json`` (the gateways read it) and says so in a ``stable_pinned`` event;
        a recorded deployment (an operator's stable, canary or shadow) is left as it is, and
        a stable that moved since it was read refuses the retrain; returns None."""
        if self.control is not None:
            view = self.control.status(model)
            if view.canary:
                raise ControlConflict(
                    f"version {view.canary} is deployed as a canary of model {model!r}; a "
                    "retrain would replace it"
                )
            if view.stable != stable:
                raise ControlConflict(
                    f"the stable version of model {model!r} is {view.stable} at revision "
                    f"{view.revision}, not version {stable} read before the retrain"
                )
            reason = "pin the stable before a retrain"
            return self.control.pin_stable(model, view.stable, reason, view.revision).revision
        deployments = DeploymentStore(self.monitor.repository)
        # An unchanged state: DeploymentStore records an implicit stable (the highest version)
        # as a pin and leaves a recorded one, with its canary and shadow, as the operator left
        # it (deploying ``stable`` would drop their canary, or revert a stable they just set).
        state, changed = deployments.change(
            model, "Deploy", lambda s: s, actor=ACTOR,
            reason="pin the stable before a retrain (no gateway configured)",
        )  # fmt: skip
        pinned = deployments.read(model).stable
        if not pinned:
            raise FailedPrecondition(
                f"deployment.json of model {model!r} names no stable version and it cannot be "
                "pinned (a canary without a stable?); no retrain, whose version would serve "
                "by being the highest"
            )
        if pinned != stable:
            raise ControlConflict(
                f"version {pinned} is the stable of model {model!r} in deployment.json at "
                f"revision {state.revision}, not version {stable} read before the retrain"
            )
        if changed:
            self.event(
                "stable_pinned",
                model,
                stable,
                f"version {stable} pinned as the stable in deployment.json before a retrain "
                "(no gateway configured): the retrained version will not serve unless deployed",
                {"revision": state.revision},
            )
        return None

    def _workdir(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    def _retrain_end(
        self, model: str, stable: int, result: RetrainResult, trigger: str
    ) -> RetrainResult:
        figures = dict(result.figures or {}) | {"trigger": trigger}
        if result.outcome == "succeeded":
            figures["new_version"] = result.version
            self.event(
                "retrain_succeeded",
                model,
                result.version,
                f"version {result.version} trained and "
                + ("deployed as a canary" if self.control is not None else "written, not deployed")
                + f": {result.reason}",
                figures,
            )
        else:
            self.event(f"retrain_{result.outcome}", model, stable, result.reason, figures)
        return result

    def _prepare_and_run(
        self, model: str, stable: int, policy: Policy, now: float, workdir: Path
    ) -> RetrainResult:
        p = policy.retrain
        repository = self.monitor.repository
        stable_dir = repository.version_dir(model, stable)
        sample_path = stable_dir / "training_sample.npz"
        if not sample_path.is_file() or not (stable_dir / "estimator.joblib").is_file():
            return RetrainResult(
                "failed",
                f"version {stable} has no training_sample.npz and estimator.joblib to retrain "
                "from; convert it with `driftgate convert`",
            )
        sample = load_table(sample_path)
        profile = self.monitor.profile(model, stable)
        features = [
            (f.name, not isinstance(f.bins, CategoricalBins))
            for f in profile.features
            if f.derived is None  # a text column's measures are not columns of the data
        ]
        records: list[StoredPrediction] = self.store.labelled(model, now - p.window, now)
        target_kind = sample.target.dtype.kind if sample.target is not None else "U"
        production = production_table(records, features, target_kind)
        if production.rows < p.min_rows:
            return RetrainResult(
                "rejected",
                f"{production.rows} labelled production rows in the window, "
                f"{p.min_rows} needed (retrain.min_rows)",
                figures={"production_rows": production.rows},
            )
        train, holdout = assemble(sample.select(production.names), production, p.holdout_fraction)
        save_table_npz(train, workdir / "train.npz")
        save_table_npz(holdout, workdir / "holdout.npz")
        job = RetrainJob(
            model=model,
            repository=_job_location(repository),
            stable=stable,
            train=str(workdir / "train.npz"),
            holdout=str(workdir / "holdout.npz"),
            trainer=p.trainer,
            tolerance=p.tolerance,
            task=str(self._meta(model, stable).get("task") or "classification"),
            alpha=p.false_accept,
            power=p.power,
            reference_rows=reference_rows(production.rows - holdout.rows, p.reference_min_rows),
        )
        result = run_worker(job, workdir, p.timeout)
        figures = dict(result.figures or {}) | {
            "production_rows": production.rows,
            "production_training_rows": production.rows - holdout.rows,
            "sample_rows": sample.rows,
            "holdout": "newest labelled production rows",
        }
        return RetrainResult(result.outcome, result.reason, result.version, figures)


def _same_bins(a: Bins, b: Bins) -> bool:
    """Whether two versions' prediction bins are the same bins (their training counts may
    differ)."""
    if isinstance(a, CategoricalBins) and isinstance(b, CategoricalBins):
        return a.categories == b.categories
    if isinstance(a, NumericBins) and isinstance(b, NumericBins):
        return a.edges == b.edges and a.dtype == b.dtype
    return False


def _bin_count(bins: Bins) -> int:
    if isinstance(bins, CategoricalBins):
        return len(bins.categories) + 1
    return len(bins.edges) + 1


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rollback_cause(decision: Decision) -> str:
    """The bounded cause a rollback is counted under on the gateway (the reason, with its
    figures, goes to the history and the event)."""
    failed = any(check.outcome == "fail" for check in decision.checks)
    return "canary_failed" if failed else "insufficient_evidence"


def _job_location(repository: Repository) -> str:
    """Where the retrain worker (another process, another working directory) finds the
    repository: an object store's URL, or the directory made absolute."""
    if isinstance(repository, ObjectRepository):
        return repository.location
    return str(repository.root.resolve())

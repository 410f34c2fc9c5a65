"""The monitor's APScheduler: policy jobs per model, kept in the monitor's own database.

A ``BackgroundScheduler`` with a ``SQLAlchemyJobStore`` on the store's engine (same URL, same
SQLite pragmas), so jobs and their next run times survive a restart. Jobs, one id per model
and kind:

- ``<model>:drift`` every ``drift.interval``: ``Autopilot.evaluate_drift``;
- ``<model>:canary`` every ``canary.interval / 4`` (0.5 to 15 s): ``Autopilot.analyse_canary``
  (the round length itself is checked by the analysis, whose state is in the store);
- ``<model>:retrain-schedule`` on ``retrain.schedule`` (cron, UTC): ``Autopilot.retrain``;
- ``<model>:retrain-now`` once, when a trigger or ``driftgate retrain`` asks: replaced (so
  coalesced) by a second request before it ran, and run even if the monitor restarted first.

Every job is ``max_instances=1`` (never two runs of one job at once; the autopilot also
holds a per-model lock, so the scheduled and the triggered retrain never overlap) and
``coalesce=True`` (runs missed while the monitor was down collapse into one).
``misfire_grace_time`` is one interval for periodic jobs (a late run is still useful, a run
older than that is skipped for the next) and unlimited for a requested retrain.

The job store pickles references to the job function, so jobs call the module-level
``run_job(key, kind, model, reason)``, which finds the process's ``Autopilot`` by ``key``
(a digest of the store URL) in ``_AUTOPILOTS``. A separate in-memory job store holds the
``policy-sync`` job that re-reads the policy files and updates the per-model jobs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from typing import Any

from driftgate.monitor.autopilot import Autopilot
from driftgate.monitor.policy import Policy, PolicyError, cron_trigger

__all__ = ["PolicyScheduler", "run_job"]

log = logging.getLogger(__name__)

_AUTOPILOTS: dict[str, Autopilot] = {}
_KINDS = ("drift", "canary", "retrain-schedule")


def run_job(key: str, kind: str, model: str, reason: str = "") -> None:
    """The job function of every persisted job (importable, so the job store can pickle it)."""
    autopilot = _AUTOPILOTS.get(key)
    if autopilot is None:
        log.warning("no monitor for job %s %s in this process", kind, model)
        return
    try:
        if kind == "drift":
            autopilot.evaluate_drift(model)
        elif kind == "canary":
            autopilot.analyse_canary(model)
        elif kind == "retrain":
            autopilot.retrain(model, reason or "requested")
        elif kind == "retrain-schedule":
            autopilot.retrain(model, "schedule")
        else:
            log.warning("unknown job kind %r", kind)
    except PolicyError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("job %s of %s failed", kind, model)


class PolicyScheduler:
    """Starts, keeps in step with the policy files, and stops the policy jobs."""

    def __init__(self, autopilot: Autopilot, sync_interval: float = 10.0) -> None:
        self.autopilot = autopilot
        url = str(autopilot.store.engine.url)
        self.key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.sync_interval = sync_interval
        self._scheduler: Any = None
        self._policy_errors: dict[str, str] = {}

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        # Each run of a frequent job would log two INFO lines; decisions are events instead.
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        _AUTOPILOTS[self.key] = self.autopilot
        self.autopilot.request_retrain = self.trigger_retrain
        self._scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=self.autopilot.store.engine),
                "local": MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=dt.UTC,
        )
        self._scheduler.start()
        self.sync()
        self._scheduler.add_job(
            self.sync,
            "interval",
            seconds=self.sync_interval,
            id="policy-sync",
            jobstore="local",
            misfire_grace_time=None,
        )

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        _AUTOPILOTS.pop(self.key, None)

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs(jobstore="default"))

    def sync(self) -> None:
        """Add, update or remove the jobs of every model to match its policy file."""
        wanted: dict[str, tuple[str, Any, float | None]] = {}
        for model in self.autopilot.models():
            try:
                policy = self.autopilot.policy(model)
            except PolicyError as exc:
                self._policy_error(model, str(exc))
                continue
            self._policy_errors.pop(model, None)
            wanted.update(_jobs(model, policy))
        existing = {job.id: job for job in self._scheduler.get_jobs(jobstore="default")}
        for job_id, (kind, trigger, grace) in wanted.items():
            job = existing.get(job_id)
            if job is not None and str(job.trigger) == str(trigger):
                continue
            model = job_id.rsplit(":", 1)[0]
            self._scheduler.add_job(
                run_job,
                trigger,
                args=[self.key, kind, model, ""],
                id=job_id,
                replace_existing=True,
                misfire_grace_time=None if grace is None else max(int(math.ceil(grace)), 1),
            )
        for job_id in existing:
            if job_id.endswith(":retrain-now"):
                continue
            if job_id not in wanted:
                self._scheduler.remove_job(job_id)

    def trigger_retrain(self, model: str, reason: str) -> None:
        """Queue a retrain of ``model`` to run now (a durable one-off job)."""
        self._scheduler.add_job(
            run_job,
            "date",
            run_date=dt.datetime.now(dt.UTC),
            args=[self.key, "retrain", model, reason],
            id=f"{model}:retrain-now",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _policy_error(self, model: str, message: str) -> None:
        if self._policy_errors.get(model) == message:
            return
        self._policy_errors[model] = message
        log.error("%s", message)
        self.autopilot.event("policy_error", model, 0, message, {})


def _jobs(model: str, policy: Policy) -> dict[str, tuple[str, Any, float | None]]:
    from apscheduler.triggers.interval import IntervalTrigger

    jobs: dict[str, tuple[str, Any, float | None]] = {}
    drift = policy.drift.interval
    jobs[f"{model}:drift"] = ("drift", IntervalTrigger(seconds=drift, timezone=dt.UTC), drift)
    if policy.canary.enabled:
        poll = min(max(policy.canary.interval / 4, 0.5), 15.0)
        jobs[f"{model}:canary"] = ("canary", IntervalTrigger(seconds=poll, timezone=dt.UTC), poll)
    if policy.retrain.enabled and policy.retrain.schedule:
        trigger = cron_trigger(policy.retrain.schedule)
        jobs[f"{model}:retrain-schedule"] = ("retrain-schedule", trigger, 3600.0)
    return jobs

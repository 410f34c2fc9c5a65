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
``run_job(key, kind, model, reason)``, which finds the process's scheduler by ``key``
(a digest of the store URL) in ``_SCHEDULERS``. A separate in-memory job store holds the
``policy-sync`` job that re-reads the policy files and updates the per-model jobs.

Several monitors (``monitor.leader``): only the leader runs this scheduler, started when it
becomes the leader and shut down when it stops (APScheduler 3 must not share a job store
between running schedulers); each job first checks that the monitor still leads. A retrain
asked of a follower (``driftgate retrain`` through a load balancer) is stored as a request
(``policy_state`` ``retrain-request``) that the leader's next policy sync queues. A running
retrain is recorded (``retrain-running``: the leader's identity and epoch), taken in one
transaction, so no two retrains of one model run at once across monitors; a new leader finds
the record of one its predecessor never finished (it died during it: the worker kills its
own process group when the monitor is gone), reports it ``retrain_failed`` and queues it
again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from driftgate.monitor.autopilot import Autopilot
from driftgate.monitor.leader import Leadership, NotLeader
from driftgate.monitor.policy import Policy, PolicyError, cron_trigger

__all__ = ["RETRAIN_REQUEST", "RETRAIN_RUNNING", "PolicyScheduler", "run_job"]

log = logging.getLogger(__name__)

RETRAIN_REQUEST = "retrain-request"
"""``policy_state`` name of a retrain asked of a follower, for the leader to queue."""
RETRAIN_RUNNING = "retrain-running"
"""``policy_state`` name of the record of a running retrain (leader, epoch, trigger)."""

_SCHEDULERS: dict[str, PolicyScheduler] = {}
_KINDS = ("drift", "canary", "retrain-schedule")


def run_job(key: str, kind: str, model: str, reason: str = "") -> None:
    """The job function of every persisted job (importable, so the job store can pickle it)."""
    scheduler = _SCHEDULERS.get(key)
    if scheduler is None:
        log.warning("no monitor for job %s %s in this process", kind, model)
        return
    scheduler.run(kind, model, reason)


class PolicyScheduler:
    """Starts, keeps in step with the policy files, and stops the policy jobs.

    ``leadership`` None: this monitor acts alone (no election; tests)."""

    def __init__(
        self,
        autopilot: Autopilot,
        sync_interval: float = 10.0,
        leadership: Leadership | None = None,
    ) -> None:
        self.autopilot = autopilot
        self.store = autopilot.store
        url = str(autopilot.store.engine.url)
        self.key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.sync_interval = sync_interval
        self.leadership = leadership
        self._scheduler: Any = None
        self._mutex = threading.Lock()  # the election thread starts and stops, RPCs trigger
        self._policy_errors: dict[str, str] = {}

    def set_leading(self, leading: bool) -> None:
        """``Leadership``'s callback: run the jobs while this monitor leads."""
        if leading:
            self.start()
        else:
            self.shutdown()

    def run(self, kind: str, model: str, reason: str = "") -> None:
        """One job, if this monitor still leads."""
        if self.leadership is not None and not self.leadership.confirm():
            log.warning("job %s of %s not run: this monitor no longer leads", kind, model)
            return
        try:
            if kind == "drift":
                self.autopilot.evaluate_drift(model)
            elif kind == "canary":
                self.autopilot.analyse_canary(model)
            elif kind == "retrain":
                self._retrain(model, reason or "requested")
            elif kind == "retrain-schedule":
                self._retrain(model, "schedule")
            else:
                log.warning("unknown job kind %r", kind)
        except NotLeader as exc:
            log.warning("job %s of %s stopped: %s", kind, model, exc)
        except PolicyError as exc:
            log.error("%s", exc)
        except Exception:
            log.exception("job %s of %s failed", kind, model)

    def start(self) -> None:
        with self._mutex:
            if self._scheduler is None:
                self._start()
        self._recover_interrupted()
        self.sync()

    def _start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        # Each run of a frequent job would log two INFO lines; decisions are events instead.
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        _SCHEDULERS[self.key] = self
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
        self._scheduler.add_job(
            self.sync,
            "interval",
            seconds=self.sync_interval,
            id="policy-sync",
            jobstore="local",
            misfire_grace_time=None,
        )

    def ensure_running(self) -> bool:
        """Restart the scheduler if its thread ended; True when it did.

        APScheduler 3 writes a job's next run time outside its error handling, so one failed
        write (SQLite's "database is locked" after the busy timeout, a PostgreSQL failover)
        ends its thread and every job with it, silently. The jobs and their next run times
        are in the store, so a new scheduler carries on where the old one stopped."""
        with self._mutex:
            scheduler = self._scheduler
            thread = getattr(scheduler, "_thread", None)
            if scheduler is None or thread is None or thread.is_alive():
                return False
            log.error("the policy scheduler's thread ended (see the error above); restarting it")
            with contextlib.suppress(Exception):
                scheduler.shutdown(wait=False)
            self._scheduler = None
            self._start()
        self.autopilot.monitor.metrics.scheduler_restarts.inc()
        self.sync()
        return True

    def shutdown(self) -> None:
        """Stop running jobs (a job already running finishes; its writes are fenced)."""
        with self._mutex:
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)
                self._scheduler = None
            _SCHEDULERS.pop(self.key, None)

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs(jobstore="default"))

    def sync(self) -> None:
        """Add, update or remove the jobs of every model to match its policy file; queue the
        retrains asked of followers."""
        with self._mutex:
            if self._scheduler is not None:
                self._sync()
        self._take_requests()

    def _sync(self) -> None:
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
        """Queue a retrain of ``model`` to run now (a durable one-off job); on a follower,
        store the request for the leader."""
        with self._mutex:
            if self._scheduler is not None:
                self._queue_retrain(model, reason)
                return
        request = {"reason": reason, "requested": time.time(), "by": self._identity()[0]}
        self.store.update_state(
            model, RETRAIN_REQUEST, lambda _: request, time.time(), fenced=False
        )
        log.info("retrain of %s requested (%s); the leader queues it", model, reason)

    def _queue_retrain(self, model: str, reason: str) -> None:
        self._scheduler.add_job(
            run_job,
            "date",
            run_date=dt.datetime.now(dt.UTC),
            args=[self.key, "retrain", model, reason],
            id=f"{model}:retrain-now",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _identity(self) -> tuple[str, int]:
        if self.leadership is None:
            return "this monitor", 0
        return self.leadership.identity, self.leadership.epoch or 0

    def _retrain(self, model: str, reason: str) -> None:
        """Retrain under the store's record of it: one retrain per model across monitors."""
        identity, epoch = self._identity()
        mine = {"leader": identity, "epoch": epoch, "started": time.time(), "trigger": reason}
        claimed = self.store.update_state(model, RETRAIN_RUNNING, _claim(mine), time.time())
        if claimed != mine:
            log.info("retrain of %s already running (%s); %r skipped", model, claimed, reason)
            return
        try:
            self.autopilot.retrain(model, reason)
        finally:
            with contextlib.suppress(NotLeader):  # deposed meanwhile: the new leader reports it
                self.store.update_state(model, RETRAIN_RUNNING, _remove_if(mine), time.time())

    def _recover_interrupted(self) -> None:
        """Report and queue again each retrain a previous leader recorded and never ended."""
        _, epoch = self._identity()
        for model, record in self.store.states(RETRAIN_RUNNING).items():
            if record.get("epoch") == epoch:
                continue
            taken = self.store.update_state(model, RETRAIN_RUNNING, _remove_if(record), time.time())
            if taken is not None:
                continue  # changed meanwhile
            trigger = str(record.get("trigger") or "requested")
            version = 0
            with contextlib.suppress(Exception):
                version = self.autopilot.monitor.resolve_version(model, None)
            self.autopilot.event(
                "retrain_failed",
                model,
                version,
                f"interrupted: monitor {record.get('leader')} (leader epoch "
                f"{record.get('epoch')}) stopped during this retrain (trigger: {trigger}); "
                "queued again",
                {"trigger": trigger, "interrupted": record, "requeued": True},
            )
            self.trigger_retrain(model, f"queued again after an interrupted retrain ({trigger})")

    def _take_requests(self) -> None:
        """Queue the retrains asked of followers, each taken from the store once."""
        with self._mutex:
            if self._scheduler is None:
                return
        for model in self.store.states(RETRAIN_REQUEST):
            taken: list[Any] = []

            def take(current: Any, taken: list[Any] = taken) -> None:
                taken.append(current)

            self.store.update_state(model, RETRAIN_REQUEST, take, time.time())
            if taken and taken[0]:
                self.trigger_retrain(model, str(taken[0].get("reason") or "requested"))

    def _policy_error(self, model: str, message: str) -> None:
        if self._policy_errors.get(model) == message:
            return
        self._policy_errors[model] = message
        log.error("%s", message)
        self.autopilot.event("policy_error", model, 0, message, {})


def _claim(mine: dict[str, Any]) -> Callable[[Any], Any]:
    """Record ``mine`` unless a retrain of the same leader epoch is recorded (one of an
    earlier epoch was reported and queued again when this leader took over)."""
    return lambda current: current if current and current.get("epoch") == mine["epoch"] else mine


def _remove_if(record: Any) -> Callable[[Any], Any]:
    """Delete the state if it is still ``record``."""
    return lambda current: None if current == record else current


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

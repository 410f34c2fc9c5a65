"""Which monitor runs the policy: one leader among the monitors of one store.

Every monitor ingests and answers queries; only the leader runs the scheduler's jobs and acts
(drift evaluation, canary analysis, retraining). APScheduler 3 must never share a job store
between running schedulers (runs would be duplicated or missed), so the followers do not
start theirs at all.

PostgreSQL: the leader holds a session-level advisory lock, ``pg_try_advisory_lock`` on a
key derived from a fixed name (as the store's migration lock), on a connection of its own
(outside the store's pool, in autocommit: no transaction stays open) for as long as it leads.
Every ``check_interval`` seconds (default 5) a follower tries to take the lock and the leader
checks that it still holds it (``pg_locks`` seen through its own connection). Bounds, for a
check interval c:

- a leader whose process dies (crash, SIGKILL, a deleted pod) closes its connection, the
  server releases the lock at once, and a follower leads within c;
- a leader whose host or network vanishes without closing the connection is dropped by the
  server's TCP keepalives, which this connection sets to about 4c (the ``tcp_keepalives_*``
  settings of the session); a follower leads within c after that, so within about 5c;
- a leader that can no longer reach the database stops acting within about 2c (its next
  check fails by then: ``tcp_user_timeout`` and ``statement_timeout`` of c), before the
  server lets another take the lock. It also checks the lock before every job.

Each new leader increments an epoch kept in the store (``policy_state`` row ``("",
"leader")``, read-modify-write under a row lock) and writes a ``leader_elected`` event with
its identity. While it leads, every policy-state and event write of the monitor is fenced: it
reads the epoch row (``FOR SHARE``) in its own transaction and is refused unless the epoch is
still this monitor's, so a deposed leader whose job was already running can no longer write.
Control calls are fenced by the gateway: they carry the deployment revision they read.

SQLite: one machine, one policy runner. The leader holds an exclusive ``flock`` on
``<database>.leader`` beside the database file (released by the kernel when the process
ends); a second monitor on the same file refuses to start (``LeadershipRefused``) and says to
use PostgreSQL for several monitors. A monitor started with ``--no-scheduler`` takes no lock
and may share the file (on the same machine: SQLite must not be shared over a network
filesystem).

A Kubernetes Lease is not implemented: the advisory lock needs nothing but the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from driftgate.core.errors import FailedPrecondition
from driftgate.monitor.store import Store

__all__ = [
    "LEADER_STATE",
    "Leadership",
    "LeadershipRefused",
    "NotLeader",
    "advisory_key",
    "default_identity",
]

log = logging.getLogger(__name__)

LEADER_STATE = ("", "leader")
"""The ``policy_state`` (model, name) of the leader's identity and epoch."""

_LOCK_NAME = "driftgate.monitor.policy-runner"


def advisory_key(name: str = _LOCK_NAME) -> int:
    """The advisory lock's key: a signed 64-bit number derived from a fixed name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def default_identity() -> str:
    """``<host name>-<pid>``: the pod's name on Kubernetes, where HOSTNAME is the pod."""
    return f"{socket.gethostname()}-{os.getpid()}"


class NotLeader(FailedPrecondition):
    """A policy write by a monitor that does not lead (any more)."""


class LeadershipRefused(FailedPrecondition):
    """This monitor cannot become the leader and must not run the policy (SQLite)."""


class _Lock(Protocol):
    def acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


class Leadership:
    """The election of one monitor: ``start()`` tries at once (a lone monitor leads before it
    serves), then a thread checks every ``check_interval`` s; ``on_change(True)`` when it
    becomes the leader, ``on_change(False)`` when it stops (called on that thread).

    Usage: ``Leadership(store, "pod-a", 5.0, registry, scheduler_switch).start()``."""

    def __init__(
        self,
        store: Store,
        identity: str,
        check_interval: float,
        registry: CollectorRegistry,
        on_change: Callable[[bool], None],
    ) -> None:
        self.store = store
        self.identity = identity
        self.check_interval = check_interval
        self.epoch: int | None = None
        """This monitor's epoch while it leads, else None."""
        self._on_change = on_change
        self._lock = _lock_for(store.url, check_interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._transition = threading.Lock()  # the election thread and job threads step down
        self._gauge = Gauge(
            "driftgate_monitor_leader",
            "1 while this monitor leads: runs the policy jobs (drift evaluation, canary "
            "analysis, retraining) of every model; 0 while it only ingests and answers",
            registry=registry,
        )

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def start(self) -> None:
        """Try once now, then keep checking; ``LeadershipRefused`` on SQLite when another
        monitor holds the lock file."""
        acquired = self._lock.acquire()
        if isinstance(self._lock, _FileLock) and not acquired:
            raise LeadershipRefused(self._lock.refusal())
        if acquired:
            self._lead()
        self.store.fence = self.fence
        self._thread = threading.Thread(target=self._watch, name="driftgate-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking, stop acting, release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.check_interval + 5)
        if self.leading:
            self._step_down("the monitor is stopping")
        self._lock.release()

    def confirm(self) -> bool:
        """Whether this monitor still leads (a query on the lock's connection); steps down
        when it no longer holds the lock."""
        if not self.leading:
            return False
        if self._lock.held():
            return True
        self._step_down("the lock is no longer held")
        return False

    def fence(self, connection: Connection) -> None:
        """Refuse a policy write (inside its transaction) unless this monitor leads at the
        epoch the store records; the row stays share-locked until the write commits, so a new
        leader's epoch cannot pass it."""
        current = self.store.locked_state(connection, *LEADER_STATE, share=True) or {}
        if self.epoch is None or current.get("epoch") != self.epoch:
            raise NotLeader(
                f"monitor {self.identity!r} does not lead the policy (epoch {self.epoch}); "
                f"the store names {current.get('identity')!r} at epoch {current.get('epoch')}"
            )

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval):
            try:
                if self.leading:
                    self.confirm()
                elif self._lock.acquire():
                    self._lead()
            except Exception:
                log.exception("leader election check failed")

    def _lead(self) -> None:
        now = time.time()
        previous: dict[str, Any] = {}

        def bump(current: Any) -> dict[str, Any]:
            previous.update(current or {})
            epoch = int(previous.get("epoch", 0)) + 1
            return {"identity": self.identity, "epoch": epoch, "since": now}

        try:
            value = self.store.update_state(*LEADER_STATE, bump, now, fenced=False)
        except Exception:
            self._lock.release()
            raise
        self.epoch = int(value["epoch"])
        self._gauge.set(1)
        reason = f"monitor {self.identity} leads the policy (epoch {self.epoch})"
        if previous.get("identity"):
            reason += f", after {previous['identity']} (epoch {previous.get('epoch')})"
        figures = {"identity": self.identity, "epoch": self.epoch}
        figures |= {"previous": previous.get("identity"), "previous_epoch": previous.get("epoch")}
        log.info("%s", reason)
        try:
            self.store.add_event(now, "leader_elected", "", 0, reason, figures)
        except Exception:  # the store failed just now: lead all the same, its jobs will retry
            log.exception("the leader_elected event was not written")
        self._notify(True)

    def _step_down(self, why: str) -> None:
        with self._transition:
            epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        self._gauge.set(0)
        log.warning("monitor %s stops leading the policy (epoch %s): %s", self.identity, epoch, why)
        self._notify(False)
        self._lock.release()

    def _notify(self, leading: bool) -> None:
        try:
            self._on_change(leading)
        except Exception:
            log.exception("leadership change to %s failed", leading)


def _lock_for(url: str, check_interval: float) -> _Lock:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return _AdvisoryLock(url, check_interval)
    database = parsed.database
    if not database or database == ":memory:":
        return _ProcessLock()
    return _FileLock(Path(database + ".leader"))


class _ProcessLock:
    """An in-memory SQLite database: one process sees it, so that process leads."""

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class _FileLock:
    """An exclusive ``flock`` on a file beside the SQLite database; its content names the
    holder for the refusal message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{default_identity()}\n")
        handle.flush()
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None

    def refusal(self) -> str:
        try:
            holder = self.path.read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            holder = "another process"
        database = self.path.with_suffix("")
        return (
            f"another monitor ({holder}) runs the policy on the SQLite store {database} (it "
            f"holds {self.path}); a SQLite store serves one monitor. For several monitors use "
            "a PostgreSQL store (--store-url postgresql+psycopg://...), where they elect one "
            "policy runner and all ingest; or start this one with --no-scheduler"
        )


_HELD = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid = :high AND objid = :low AND objsubid = 1)"
)


class _AdvisoryLock:
    """``pg_try_advisory_lock`` on a dedicated connection (NullPool: closing it really
    closes it, which releases the lock); used from the election thread and, for
    ``held``, from job threads, so its connection is guarded by a mutex."""

    def __init__(self, url: str, check_interval: float) -> None:
        self.key = advisory_key()
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        # pg_locks shows a bigint key as two oid columns, its high and low 32 bits.
        self._parts = {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}
        self._engine = sa.create_engine(
            url, poolclass=NullPool, connect_args=_connect_args(check_interval)
        )
        self._connection: Connection | None = None
        self._held = False
        self._mutex = threading.Lock()

    def acquire(self) -> bool:
        with self._mutex:
            if self._held:
                return True
            try:
                connection = self._connect()
                query = sa.text("SELECT pg_try_advisory_lock(:key)")
                self._held = bool(connection.execute(query, {"key": self.key}).scalar())
            except sa.exc.DBAPIError as exc:
                log.warning("leader election: PostgreSQL unreachable: %s", _first_line(exc))
                self._close()
            return self._held

    def held(self) -> bool:
        with self._mutex:
            if not self._held or self._connection is None:
                return False
            try:
                held = bool(self._connection.execute(_HELD, self._parts).scalar())
            except sa.exc.DBAPIError as exc:
                log.warning("leader election: lock connection lost: %s", _first_line(exc))
                held = False
            if not held:
                self._close()
            return held

    def release(self) -> None:
        with self._mutex:
            self._close()

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect()
            self._connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def _close(self) -> None:
        self._held = False
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()  # the session ends: PostgreSQL releases its locks
            self._connection = None


def _connect_args(check_interval: float) -> dict[str, Any]:
    """libpq settings of the lock's connection: the client gives up on an unanswered check
    after about one interval; the server drops a silent client after about four (its TCP
    keepalives), and only then releases the lock, so the old leader has stopped first."""
    c = max(1, math.ceil(check_interval))
    server = {"tcp_keepalives_idle": 2 * c, "tcp_keepalives_interval": c}
    server |= {"tcp_keepalives_count": 2, "statement_timeout": c * 1000}
    return {
        "connect_timeout": max(2, c),
        "keepalives": 1,
        "keepalives_idle": c,
        "keepalives_interval": c,
        "keepalives_count": 2,
        "tcp_user_timeout": c * 1000,
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

"""The leader election and the transactional policy state, on real SQLite files and (marked
integration) a scratch PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from driftgate.monitor.leader import LEADER_STATE, Leadership, LeadershipRefused, NotLeader
from driftgate.monitor.store import Store, sqlite_url
from tests.postgres import scratch_database


class Changes:
    def __init__(self) -> None:
        self.seen: list[bool] = []

    def __call__(self, leading: bool) -> None:
        self.seen.append(leading)


def _leadership(store: Store, name: str, interval: float = 0.2) -> tuple[Leadership, Any]:
    registry, changes = CollectorRegistry(), Changes()
    return Leadership(store, name, interval, registry, changes), (registry, changes)


def _increments(store: Store, threads: int = 6, each: int = 20) -> int:
    def work() -> None:
        for _ in range(each):
            store.update_state("m", "counter", lambda v: (v or 0) + 1, time.time())

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return int(store.get_state("m", "counter"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path))
    yield store
    store.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with scratch_database("driftgate_leader_unit") as url:
        yield url


def test_concurrent_read_modify_writes_lose_no_update_on_sqlite(sqlite_store: Store) -> None:
    assert _increments(sqlite_store) == 120


@pytest.mark.integration
def test_concurrent_read_modify_writes_lose_no_update_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        assert _increments(store) == 120
        assert store.update_state("m", "counter", lambda v: None, time.time()) is None
        assert store.get_state("m", "counter") is None and store.states("counter") == {}
    finally:
        store.close()


def test_a_second_policy_runner_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    first_store, second_store = Store(sqlite_url(tmp_path)), Store(sqlite_url(tmp_path))
    first, (registry, changes) = _leadership(first_store, "pod-a")
    second, _ = _leadership(second_store, "pod-b")
    first.start()
    try:
        assert first.leading and first.epoch == 1 and changes.seen == [True]
        assert registry.get_sample_value("driftgate_monitor_leader") == 1.0
        with pytest.raises(LeadershipRefused) as refused:
            second.start()
        message = str(refused.value)
        assert "another monitor (" in message and str(tmp_path / "monitor.db") in message
        assert "PostgreSQL" in message and "--no-scheduler" in message
    finally:
        first.stop()
    assert (
        registry.get_sample_value("driftgate_monitor_leader") == 0.0 and changes.seen[-1] is False
    )
    third, _ = _leadership(second_store, "pod-c")
    third.start()  # the first one's lock went with it
    try:
        assert third.epoch == 2
        events = [e for e in second_store.events() if e.kind == "leader_elected"]
        assert [e.figures["identity"] for e in events] == ["pod-c", "pod-a"]  # newest first
        assert "after pod-a (epoch 1)" in events[0].reason
    finally:
        third.stop()
        first_store.close()
        second_store.close()


def test_writes_of_a_deposed_leader_are_refused(sqlite_store: Store) -> None:
    leader, _ = _leadership(sqlite_store, "pod-a")
    leader.start()
    try:
        sqlite_store.put_state("m", "canary", {"step": 1}, time.time())
        # Another monitor became the leader (its epoch is in the store): this one is fenced.
        sqlite_store.update_state(
            *LEADER_STATE, lambda v: {**v, "identity": "pod-b", "epoch": 2}, 1.0, fenced=False
        )
        with pytest.raises(NotLeader, match="'pod-b' at epoch 2"):
            sqlite_store.put_state("m", "canary", {"step": 2}, time.time())
        with pytest.raises(NotLeader):
            sqlite_store.add_event(time.time(), "promotion", "m", 2, "late", {})
        assert sqlite_store.get_state("m", "canary") == {"step": 1}
        assert "promotion" not in {e.kind for e in sqlite_store.events()}
    finally:
        leader.stop()


def _wait(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.02)


@pytest.mark.integration
def test_postgres_leadership_moves_when_the_leaders_session_ends(postgres_url: str) -> None:
    stores = [Store(postgres_url), Store(postgres_url)]
    # The first checks only when asked (confirm, as before every job); the second every 0.2 s.
    first, (first_registry, first_changes) = _leadership(stores[0], "pod-a", interval=60)
    second, (_, second_changes) = _leadership(stores[1], "pod-b")
    first.start()
    second.start()
    try:
        assert first.leading and not second.leading and second_changes.seen == []
        # The leader's session ends (as when its process dies or the server drops it).
        admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            ended = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                )
            ).all()
        admin.dispose()
        assert len(ended) == 1
        _wait(lambda: second_changes.seen == [True])  # told once it leads
        assert first.leading and not first.confirm()  # its next check sees the lock gone
        assert first_changes.seen == [True, False]
        assert first_registry.get_sample_value("driftgate_monitor_leader") == 0.0
        assert second.epoch == 2
        with pytest.raises(NotLeader):
            stores[0].put_state("m", "drift", {"streak": 9}, time.time())
        stores[1].put_state("m", "drift", {"streak": 1}, time.time())
        assert stores[0].get_state("m", "drift") == {"streak": 1}
    finally:
        second.stop()
        first.stop()
        for store in stores:
            store.close()

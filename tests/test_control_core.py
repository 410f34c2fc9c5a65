"""The control core without sockets: transitions, the durable store (CAS, history, lock),
and the weighted sticky router."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from driftgate.core.deployment import (
    Canary,
    Deployment,
    DeploymentStore,
    deploy,
    promote,
    rollback,
    set_traffic,
    start_shadow,
    stop_shadow,
)
from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound
from driftgate.core.repository import Repository
from driftgate.gateway.router import Route, bucket, threshold


@pytest.fixture
def store(tmp_path: Path) -> DeploymentStore:
    for version in (1, 2, 3):
        folder = tmp_path / "iris" / str(version)
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"onnx")
    return DeploymentStore(Repository(tmp_path))


# -- transitions ----------------------------------------------------------------------------


def test_canary_promote_rollback_walks_the_previous_stables() -> None:
    state = Deployment("iris", stable=1)
    state = deploy(state, 2, 10.0)
    assert state.canary == Canary(2, 10.0) and state.stable == 1
    state = set_traffic(state, 50)
    state = promote(state)
    assert (state.stable, state.canary, state.previous) == (2, None, (1,))
    state = deploy(state, 3)
    assert (state.stable, state.previous) == (3, (2, 1))
    state = rollback(state)
    assert (state.stable, state.previous) == (2, (1,))
    state = rollback(state)
    assert (state.stable, state.previous) == (1, ())
    with pytest.raises(FailedPrecondition, match="no previous stable"):
        rollback(state)


def test_rollback_with_a_canary_drops_only_the_canary() -> None:
    state = deploy(Deployment("iris", stable=2, previous=(1,)), 3, 25)
    after = rollback(state)
    assert (after.stable, after.canary, after.previous) == (2, None, (1,))
    named = rollback(state, 1)
    assert (named.stable, named.canary, named.previous) == (1, None, ())


def test_refused_transitions() -> None:
    state = Deployment("iris", stable=1)
    with pytest.raises(FailedPrecondition, match="no canary"):
        promote(state)
    with pytest.raises(FailedPrecondition, match="no canary"):
        set_traffic(state, 5)
    with pytest.raises(FailedPrecondition, match="already the stable"):
        deploy(state, 1, 10)
    with pytest.raises(InvalidInput, match="0 to 100"):
        deploy(state, 2, 101)
    with pytest.raises(FailedPrecondition, match="already takes traffic"):
        start_shadow(state, 1)
    with pytest.raises(FailedPrecondition, match="not the shadow"):
        stop_shadow(start_shadow(state, 2), 3)


# -- the store ------------------------------------------------------------------------------


def test_change_writes_state_and_history(store: DeploymentStore, tmp_path: Path) -> None:
    state, changed = store.change(
        "iris", "Deploy", lambda d: deploy(d, 2, 10.0), actor="alice", reason="new data"
    )
    assert changed and state.revision == 1 and state.stable == 3  # implicit: highest version
    on_disk = json.loads((tmp_path / "iris" / "deployment.json").read_text())
    assert on_disk["canary"] == {"version": 2, "weight": 10.0} and on_disk["revision"] == 1
    store.change("iris", "Promote", promote, expected_revision=1, reason="healthy")
    [latest, first] = store.history("iris")
    assert (latest.action, latest.revision, latest.reason) == ("Promote", 2, "healthy")
    assert (first.actor, first.before.canary, first.after.canary) == ("alice", None, Canary(2, 10))


def test_stale_revision_is_refused_and_changes_nothing(store: DeploymentStore) -> None:
    store.change("iris", "Deploy", lambda d: deploy(d, 1))
    with pytest.raises(FailedPrecondition, match="revision 1, not the expected revision 0"):
        store.change("iris", "Deploy", lambda d: deploy(d, 2), expected_revision=0)
    assert store.read("iris").stable == 1 and len(store.history("iris")) == 1


def test_unknown_versions_and_models(store: DeploymentStore) -> None:
    with pytest.raises(ModelNotFound, match="no version 9"):
        store.change("iris", "Deploy", lambda d: deploy(d, 9))
    with pytest.raises(ModelNotFound):
        store.change("nope", "Deploy", lambda d: deploy(d, 1))


def test_a_change_that_changes_nothing_keeps_the_revision(store: DeploymentStore) -> None:
    store.change("iris", "Deploy", lambda d: deploy(d, 1))
    state, changed = store.change("iris", "Deploy", lambda d: deploy(d, 1))
    assert not changed and state.revision == 1


def test_concurrent_changes_are_serialized(store: DeploymentStore) -> None:
    """32 threads, each reading the revision then setting a weight with compare-and-set:
    revisions never repeat, and every refusal is a stale revision."""
    store.change("iris", "Deploy", lambda d: deploy(d, 2, 0.0))
    outcomes: list[int | str] = []

    def worker(weight: int) -> None:
        revision = store.read("iris").revision
        try:
            state, _ = store.change(
                "iris", "SetTraffic", lambda d: set_traffic(d, weight), expected_revision=revision
            )
            outcomes.append(state.revision)
        except FailedPrecondition:
            outcomes.append("stale")

    threads = [threading.Thread(target=worker, args=(w + 1,)) for w in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    revisions = [o for o in outcomes if o != "stale"]
    assert len(revisions) == len(set(revisions)) >= 1
    assert store.read("iris").revision == 1 + len(revisions)
    assert len(store.history("iris")) == 1 + len(revisions)


def test_hand_written_state_reads_as_revision_zero(store: DeploymentStore, tmp_path: Path) -> None:
    (tmp_path / "iris" / "deployment.json").write_text('{"stable": 2}')
    assert store.read("iris") == Deployment("iris", stable=2)


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1.0, 12.5, 50.0, 90.0])
def test_split_matches_the_weight(weight: float) -> None:
    route = Route("stable", "canary", threshold(weight))
    ids = [f"{i:x}-order" for i in range(10_000)]
    canary = sum(route.pick(i) == "canary" for i in ids)
    expected = [10_000 * weight / 100, 10_000 * (100 - weight) / 100]
    assert chisquare([canary, 10_000 - canary], expected).pvalue > 0.01


def test_random_ids_spread_uniformly() -> None:
    rng = np.random.default_rng(5)
    ids = [rng.bytes(8).hex() for _ in range(10_000)]
    counts = np.bincount([bucket(i) * 20 // 1_000_000 for i in ids], minlength=20)
    assert chisquare(counts).pvalue > 0.01


def test_sticky_and_extremes() -> None:
    route = Route("stable", "canary", threshold(30))
    assert {route.pick("order-42") for _ in range(100)} == {route.pick("order-42")}
    assert Route("s", "c", threshold(0)).pick("x") == "s"
    assert Route("s", "c", threshold(100)).pick("x") == "c"
    assert Route("s").pick("x") == "s"

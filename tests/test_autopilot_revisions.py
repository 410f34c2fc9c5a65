"""The policy respects operators: a control call carries the revision it read and backs off
when the deployment moved, and a monitor without a gateway pins the stable before a retrain
writes a newer version (which would otherwise serve by being the highest)."""

from __future__ import annotations

from pathlib import Path

from driftgate.core.deployment import DeploymentStore
from driftgate.core.repository import Repository
from driftgate.monitor.control_client import ControlConflict, DeploymentView
from tests.test_autopilot import MODEL, Clock, FakeControl, _autopilot, _repository


class RevisionedControl(FakeControl):
    """The Control service's compare-and-set: a call naming another revision is refused."""

    def _check(self, revision: int | None) -> None:
        if revision is not None and revision != self.revision:
            raise ControlConflict(f"at revision {self.revision}, not {revision}")

    def set_traffic(self, model: str, weight: float, reason: str, revision: int) -> None:
        self._check(revision)
        super().set_traffic(model, weight, reason, revision)

    def promote(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self._check(revision)
        super().promote(model, reason, revision)

    def rollback(self, model: str, reason: str, revision: int, cause: str = "") -> None:
        self._check(revision)
        super().rollback(model, reason, revision)


class OperatorFirst(RevisionedControl):
    """An operator changes the deployment between the policy's status read and its call."""

    def status(self, model: str) -> DeploymentView:
        view = super().status(model)
        self.revision += 1  # the operator's SetTraffic lands right after the read
        return view


def test_a_canary_step_backs_off_when_an_operator_moved_first(tmp_path: Path) -> None:
    root, data = _repository(tmp_path), tmp_path / "data"
    control, clock = RevisionedControl(), Clock()
    pilot = _autopilot(root, data, control, clock)
    assert pilot.analyse_canary(MODEL).action == "start"  # type: ignore[union-attr]
    steps = [c for c in control.calls if c[0] == "traffic"]

    racing = OperatorFirst(control.stable, control.canary, control.weight, control.revision)
    pilot.control = racing
    for _ in range(30):  # looks until the analysis wants to change the deployment
        clock.now += 11
        decision = pilot.analyse_canary(MODEL)
        assert decision is not None
        if decision.action in ("step", "promote", "rollback"):
            break
    assert decision.action in ("step", "promote", "rollback")
    assert racing.calls == []  # nothing changed behind the operator's back
    kinds = [e.kind for e in pilot.store.events(MODEL)]
    assert kinds[0] == "action_superseded"
    (event,) = [e for e in pilot.store.events(MODEL) if e.kind == "action_superseded"]
    assert event.figures["action"] == decision.action
    assert steps  # the first step was made while nobody raced it


def test_without_a_gateway_a_retrain_pins_the_stable_before_writing(tmp_path: Path) -> None:
    root, data = _repository(tmp_path), tmp_path / "data"
    repository = Repository(root)
    assert repository.deployment(MODEL) is None  # version 2 serves by being the highest
    pilot = _autopilot(root, data, FakeControl(), Clock())
    pilot.control = None  # no --gateway
    pilot.retrain(MODEL, "test")
    state = DeploymentStore(repository).read(MODEL)
    assert state.stable == 2 and state.canary is None
    pinned = [e for e in pilot.store.events(MODEL) if e.kind == "stable_pinned"]
    assert len(pinned) == 1 and pinned[0].version == 2
    # A version written now (as a retrain would) does not serve: the stable stays pinned.
    assert pilot.monitor.resolve_version(MODEL, None) == 2
    pilot.retrain(MODEL, "again")  # already pinned: no second event
    assert len([e for e in pilot.store.events(MODEL) if e.kind == "stable_pinned"]) == 1

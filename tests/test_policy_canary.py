"""The policy file and the canary decision, on synthetic figures (no processes, no sockets)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from driftgate.monitor.canary import AnalysisState, CanaryFigures, VersionFigures, analyse, begin
from driftgate.monitor.policy import CanaryPolicy, Policy, PolicyError, load_policy, parse_policy

T0 = 1_700_000_000.0
POLICY = CanaryPolicy(interval=60.0, steps=(10.0, 25.0, 50.0), failure_threshold=2, deadline=300)


def test_defaults_when_the_file_is_absent(tmp_path: Path) -> None:
    assert load_policy(tmp_path, "m") == Policy()


def test_a_policy_file_with_units_and_nested_checks(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "policy.toml").write_text(
        '[drift]\ninterval = "2m"\n[canary]\nsteps = [5, 50]\ninterval = 30\n'
        "[canary.checks]\nmin_labels = 10\n"
        '[retrain]\nschedule = "0 3 * * *"\ntrainer = "pkg.mod:train"\ncooldown = "1h"\n'
    )
    policy = load_policy(tmp_path, "m")
    assert policy.drift.interval == 120.0
    assert policy.canary.steps == (5.0, 50.0)
    assert policy.canary.interval == 30.0
    assert policy.canary.checks.min_labels == 10
    assert policy.canary.checks.max_accuracy_drop == 0.05  # default kept
    assert policy.retrain.schedule == "0 3 * * *"
    assert policy.retrain.cooldown == 3600.0


def test_the_false_alarm_budget_is_spread_over_the_windows_of_30_days() -> None:
    hourly = parse_policy({}, "p").drift
    assert hourly.window == 3600.0 and hourly.alpha == pytest.approx(0.5 / 720)
    daily = parse_policy({"drift": {"window": "1d", "false_alarms": 3}}, "p").drift
    assert daily.alpha == pytest.approx(3 / 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"canary": {"steps": [10, 200]}}, "canary.steps: expected a non-empty list"),
        ({"canary": {"steps": [50, 10]}}, "canary.steps: expected"),
        ({"canary": {"interval": "soon"}}, "canary.interval: expected a duration"),
        ({"canary": {"failure_threshold": 0}}, "canary.failure_threshold: expected a value >= 1"),
        ({"canary": {"checks": {"max_accuracy_drop": 2}}}, "canary.checks.max_accuracy_drop"),
        ({"drift": {"false_alarms": "x"}}, "drift.false_alarms: expected a number"),
        ({"drift": {"alpha": 0.01}}, "drift.alpha is no longer read; set drift.false_alarms"),
        ({"drift": {"intervall": 3}}, "unknown key drift.intervall"),
        ({"retrain": {"schedule": "every day"}}, "retrain.schedule: expected a cron"),
        ({"retrain": {"trainer": "no colon"}}, "retrain.trainer: expected"),
        ({"retrain": {"enabled": "yes"}}, "retrain.enabled: expected true or false"),
        ({"canary": 3}, "canary: expected a table"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(data: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")) as info:
        parse_policy(data, "models/m/policy.toml")
    assert str(info.value).startswith("models/m/policy.toml: ")


def test_invalid_toml_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "policy.toml").write_text("[canary\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(tmp_path, "m")


def _healthy(requests: int = 500) -> CanaryFigures:
    return CanaryFigures(
        canary=VersionFigures(requests, 1, 0.010, 100, 0.90),
        stable=VersionFigures(requests * 4, 4, 0.010, 400, 0.91),
        prediction_drift=0.05,
        prediction_rows=500,
    )


def _state(step: int = 0, failures: int = 0) -> AnalysisState:
    return AnalysisState("m", 2, 1, step, failures, T0, T0)


def test_begin_sets_the_first_step() -> None:
    decision = begin(POLICY, "m", 2, 1, T0)
    assert decision.action == "start" and decision.weight == 10.0
    assert decision.state.step == 0 and decision.state.started_at == T0


def test_waits_until_the_round_is_over() -> None:
    assert analyse(POLICY, _state(), _healthy(), T0 + 59).action == "wait"


def test_passing_rounds_step_through_the_weights_then_promote() -> None:
    state, now, actions = _state(), T0, []
    for _ in range(3):
        now += 61
        decision = analyse(POLICY, state, _healthy(), now)
        actions.append((decision.action, decision.weight))
        state = decision.state
    assert actions == [("step", 25.0), ("step", 50.0), ("promote", None)]
    assert state.rounds == 3


@pytest.mark.parametrize(
    ("check", "figures"),
    [
        ("error_rate", replace(_healthy(), canary=VersionFigures(500, 60, 0.010, 100, 0.90))),
        ("latency_p99", replace(_healthy(), canary=VersionFigures(500, 1, 0.200, 100, 0.90))),
        ("accuracy", replace(_healthy(), canary=VersionFigures(500, 1, 0.010, 100, 0.70))),
        ("prediction_drift", replace(_healthy(), prediction_drift=0.6)),
    ],
)
def test_each_check_fails_a_round_and_k_failures_roll_back(
    check: str, figures: CanaryFigures
) -> None:
    first = analyse(POLICY, _state(step=1), figures, T0 + 61)
    assert first.action == "retry"
    assert first.state.failures == 1 and first.state.step == 1
    assert [c.name for c in first.checks if c.passed is False] == [check]
    assert check.replace("_", " ").split()[0] in first.reason
    second = analyse(POLICY, first.state, figures, T0 + 122)
    assert second.action == "rollback"
    assert "2 failed rounds" in second.reason


def test_checks_without_enough_data_are_skipped_not_failed() -> None:
    few_labels = replace(
        _healthy(),
        canary=VersionFigures(500, 1, None, 3, 0.0),
        prediction_drift=None,
    )
    decision = analyse(POLICY, _state(), few_labels, T0 + 61)
    assert decision.action == "step"
    skipped = {c.name for c in decision.checks if c.passed is None}
    assert skipped == {"latency_p99", "accuracy", "prediction_drift"}


def test_too_little_traffic_holds_then_rolls_back_at_the_deadline() -> None:
    quiet = _healthy(requests=3)
    held = analyse(POLICY, _state(), quiet, T0 + 61)
    assert held.action == "hold" and held.state == _state()
    assert "3 canary requests" in held.reason
    late = analyse(POLICY, _state(), quiet, T0 + 301)
    assert late.action == "rollback"
    assert "not enough data by the deadline" in late.reason


def test_state_round_trips_through_json() -> None:
    state = _state(step=2, failures=1)
    assert AnalysisState.from_dict(state.to_dict()) == state

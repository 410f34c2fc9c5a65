"""The policy file and the canary decision, on synthetic figures (no processes, no sockets)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from driftgate.monitor.canary import (
    AnalysisState,
    CanaryFigures,
    Decision,
    VersionFigures,
    analyse,
    begin,
    farrington_manning,
    mann_whitney,
)
from driftgate.monitor.policy import CanaryPolicy, Policy, PolicyError, load_policy, parse_policy

T0 = 1_700_000_000.0
POLICY = CanaryPolicy()  # the defaults: looks every 60 s, steps 10, 25, 50, deadline 30 min


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
        ({"canary": {"required": ["errors", "speed"]}}, "canary.required: expected a list"),
        ({"canary": {"false_promotion": 0}}, "canary.false_promotion: expected a value > 0"),
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


LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, math.inf)


def _version(
    requests: int,
    error_rate: float = 0.005,
    accuracy: float = 0.85,
    labelled: float = 1.0,
    slow: bool = False,
    predictions: tuple[float, ...] = (0.6, 0.4, 0.0),
) -> VersionFigures:
    """Figures at their expected values (no sampling noise) for ``requests`` requests."""
    shares = (0, 0, 0.05, 0.1, 0.25, 0.6, 0) if slow else (0.05, 0.15, 0.6, 0.15, 0.05, 0, 0)
    labels = round(requests * labelled)
    return VersionFigures(
        requests=requests,
        errors=round(requests * error_rate),
        latency=tuple((le, round(requests * p)) for le, p in zip(LATENCY, shares, strict=True)),
        labels=labels,
        correct=round(labels * accuracy),
        predictions=tuple(round(requests * p) for p in predictions),
    )


def _run(
    canary: dict[str, object],
    requests_per_look: int = 1200,  # 20 requests/s
    labelled: float = 1.0,
    looks: int = 40,
    labels_expected: bool = True,
) -> list[Decision]:
    """An analysis at the defaults, every look one interval after the last, the canary
    getting its step's weight of ``requests_per_look`` requests; stops at a verdict."""
    state = begin(POLICY, "m", 2, 1, T0, labels_expected=labels_expected).state
    sent = {"canary": 0, "stable": 0}
    decisions = []
    for k in range(1, looks + 1):
        weight = POLICY.steps[state.step] / 100
        sent["canary"] += round(requests_per_look * weight)
        sent["stable"] += round(requests_per_look * (1 - weight))
        figures = CanaryFigures(
            _version(sent["canary"], labelled=labelled, **canary),  # type: ignore[arg-type]
            _version(sent["stable"], labelled=labelled),
        )
        decision = analyse(POLICY, state, figures, T0 + k * POLICY.interval)
        decisions.append(decision)
        state = decision.state
        if decision.action in ("promote", "rollback"):
            break
    return decisions


def test_begin_sets_the_first_step_and_the_required_checks() -> None:
    decision = begin(POLICY, "m", 2, 1, T0, labels_expected=True)
    assert decision.action == "start" and decision.weight == 10.0
    assert decision.state.required == ("errors", "latency", "accuracy")
    assert begin(POLICY, "m", 2, 1, T0).state.required == ("errors", "latency")
    named = CanaryPolicy(required=("errors",))
    assert begin(named, "m", 2, 1, T0, labels_expected=True).state.required == ("errors",)
    assert decision.figures["planned_looks"] == 30


def test_waits_until_a_look_is_due() -> None:
    state = begin(POLICY, "m", 2, 1, T0).state
    figures = CanaryFigures(_version(100), _version(900))
    assert analyse(POLICY, state, figures, T0 + 59).action == "wait"


def test_an_identical_canary_steps_through_the_weights_then_promotes() -> None:
    decisions = _run({})
    actions = [(d.action, d.weight) for d in decisions]
    assert actions[:2] == [("step", 25.0), ("step", 50.0)]
    assert actions[-1] == ("promote", None)
    assert all(a == "hold" for a, _ in actions[2:-1])
    final = decisions[-1]
    assert "every required check passed" in final.reason
    assert set(final.state.passed) >= {"errors", "latency", "accuracy"}
    accuracy = final.figures["checks"]["accuracy"]
    assert accuracy["outcome"] == "pass" and accuracy["canary_n"] > 1000
    (test, _) = accuracy["tests"]
    assert test["test"] == "farrington_manning" and test["p_value"] <= test["level"]
    assert test["level"] == pytest.approx(POLICY.false_promotion / 30)


@pytest.mark.parametrize(
    ("canary", "check", "test"),
    [
        ({"accuracy": 0.70}, "accuracy", "fisher_exact"),
        ({"error_rate": 0.05}, "errors", "fisher_exact"),
        ({"slow": True}, "latency", "mann_whitney_u"),
        ({"predictions": (0.1, 0.9, 0.0)}, "predictions", "chi_square_homogeneity"),
    ],
)
def test_a_clearly_worse_canary_is_rolled_back_early_naming_the_test(
    canary: dict[str, object], check: str, test: str
) -> None:
    decisions = _run(canary)
    final = decisions[-1]
    assert final.action == "rollback" and len(decisions) <= 5
    assert final.reason.startswith("canary worse than stable") and check in final.reason
    figures = final.figures["checks"][check]
    assert figures["outcome"] == "fail" and figures["canary_n"] > 0 and figures["stable_n"] > 0
    failed = [t for t in figures["tests"] if t["rejected"]]
    assert [t["test"] for t in failed] == [test]
    assert failed[0]["p_value"] <= failed[0]["level"] == POLICY.false_rollback / 30


def test_a_required_check_without_data_holds_then_rolls_back_for_insufficient_evidence() -> None:
    decisions = _run({}, labelled=0.0)  # labels expected, none arrive
    assert [d.action for d in decisions[:-1]] == ["hold"] * 29
    assert all(d.state.step == 0 for d in decisions)  # held at the first step
    assert "accuracy" in decisions[0].reason and "50 labels each needed" in decisions[0].reason
    final = decisions[-1]
    assert final.action == "rollback" and len(decisions) == 30
    assert final.reason.startswith("insufficient evidence")
    assert final.figures["checks"]["accuracy"]["outcome"] == "insufficient"


def test_without_labels_expected_accuracy_is_not_required() -> None:
    decisions = _run({}, labelled=0.0, labels_expected=False)
    assert decisions[-1].action == "promote"
    assert decisions[-1].figures["checks"]["accuracy"]["outcome"] == "insufficient"


def test_state_round_trips_through_a_dict_mid_analysis() -> None:
    decisions = _run({}, looks=3)
    state = decisions[-1].state
    assert state.looks == 3 and state.step == 2 and state.passed
    assert AnalysisState.from_dict(state.to_dict()) == state
    import json

    assert AnalysisState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_a_state_stored_by_the_per_round_analysis_still_loads() -> None:
    old = {
        "model": "m", "canary": 2, "stable": 1, "step": 1, "failures": 1,
        "started_at": T0, "round_started_at": T0 + 60, "rounds": 1,
    }  # fmt: skip
    state = AnalysisState.from_dict(old)
    assert state.step == 1 and state.last_look_at == T0 + 60 and state.looks == 0


def test_mann_whitney_from_histograms_matches_scipy_on_the_expanded_values() -> None:
    rng = np.random.default_rng(3)
    a = rng.choice(LATENCY[:-2], size=400, p=(0.1, 0.2, 0.4, 0.2, 0.1))
    b = rng.choice(LATENCY[:-2], size=900, p=(0.15, 0.2, 0.4, 0.2, 0.05))
    values_a, counts_a = np.unique(a, return_counts=True)
    values_b, counts_b = np.unique(b, return_counts=True)
    z, effect = mann_whitney(values_a, counts_a * 1.0, values_b, counts_b * 1.0)
    expected = stats.mannwhitneyu(
        a, b, alternative="greater", method="asymptotic", use_continuity=False
    )
    assert stats.norm.sf(z) == pytest.approx(expected.pvalue, rel=1e-9)
    assert effect * 400 * 900 == pytest.approx(expected.statistic)


def test_farrington_manning_uses_the_restricted_maximum_likelihood() -> None:
    # H0: p1 - p2 = 0.01, x1 = 5 of 1000, x2 = 20 of 4000: the restricted estimates maximise
    # the likelihood on p1 = p2 + 0.01 (found here on a grid).
    p2 = np.linspace(1e-6, 0.05, 200_001)
    p1 = p2 + 0.01
    ll = 5 * np.log(p1) + 995 * np.log(1 - p1) + 20 * np.log(p2) + 3980 * np.log(1 - p2)
    r1, r2 = p1[ll.argmax()], p2[ll.argmax()]
    z = (5 / 1000 - 20 / 4000 - 0.01) / math.sqrt(r1 * (1 - r1) / 1000 + r2 * (1 - r2) / 4000)
    assert farrington_manning(5, 1000, 20, 4000, 0.01) == pytest.approx(z, rel=1e-4)


def _regressor(labels: int, mae: float) -> VersionFigures:
    # absolute errors with mean ``mae`` and standard deviation ``mae`` (as exponential ones)
    return VersionFigures(
        requests=labels,
        latency=((0.005, labels),),
        labels=labels,
        absolute_error_sum=labels * mae,
        squared_error_sum=labels * 2 * mae * mae,
    )


@pytest.mark.parametrize(("mae", "outcome", "test"), [(1.0, "pass", 0), (1.5, "fail", 1)])
def test_a_regressor_is_judged_on_its_mean_absolute_error(
    mae: float, outcome: str, test: int
) -> None:
    figures = CanaryFigures(_regressor(2000, mae), _regressor(8000, 1.0), task="regression")
    state = begin(POLICY, "m", 2, 1, T0, labels_expected=True).state
    decision = analyse(POLICY, state, figures, T0 + 60)
    accuracy = decision.figures["checks"]["accuracy"]
    assert accuracy["outcome"] == outcome
    assert accuracy["canary_value"] == pytest.approx(mae) and accuracy["canary_n"] == 2000
    assert accuracy["tests"][test]["rejected"]
    assert accuracy["tests"][test]["test"] in (
        "z_mean_absolute_error",
        "welch_z_mean_absolute_error",
    )
    assert (decision.action == "rollback") == (outcome == "fail")

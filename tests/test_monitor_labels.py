"""Labels keyed by (model, request id) through the Monitor service, and the label delay that
sizes record retention (the store's own behaviour on SQLite and PostgreSQL is in
``tests/integration/test_store.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftgate.cli import build_parser
from driftgate.core.errors import InvalidInput
from driftgate.monitor._cli import settings_from
from driftgate.monitor.metrics import MonitorMetrics
from driftgate.monitor.service import Monitor
from driftgate.monitor.settings import MonitorSettings, label_window
from driftgate.monitor.store import LabelIn, PredictionIn, Report, Store, sqlite_url

NOW = 1_700_000_000.0


def _settings(argv: list[str]) -> MonitorSettings:
    return settings_from(build_parser().parse_args(["monitor", *argv]))


def test_label_delay_defaults_to_a_day_plus_a_margin() -> None:
    settings = _settings([])
    assert settings.label_delay_seconds == 86400
    assert settings.label_window_seconds == 86400 + 8640
    assert label_window(600) == 600 + 3600  # the margin is at least an hour


def test_label_delay_from_the_flag_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(["--label-delay", "3d"]).label_delay_seconds == 3 * 86400
    monkeypatch.setenv("DRIFTGATE_LABEL_DELAY", "2h")
    assert _settings([]).label_delay_seconds == 7200


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def monitor(tmp_path: Path, registry: CollectorRegistry) -> Iterator[Monitor]:
    # A record retention shorter than the stated label delay: the delay wins.
    settings = MonitorSettings(
        data_dir=tmp_path, repository=tmp_path / "models", max_records=2,
        record_retention_seconds=60, label_delay_seconds=7200,
    )  # fmt: skip
    store = Store(sqlite_url(tmp_path))
    yield Monitor(settings, store, MonitorMetrics(registry))
    store.close()


def _record(request_id: str, model: str, age: float) -> PredictionIn:
    return PredictionIn(request_id, NOW - age, model, 1, [1.0], [], "yes", [0.8, 0.2])


def test_prune_keeps_what_the_label_delay_needs(monitor: Monitor) -> None:
    ages = {"fresh": 60, "hour": 3600, "two-hours": 7000, "old": 3 * 3600, "older": 4 * 3600}
    records = [_record(i, "churn", age) for i, age in ages.items()]
    monitor.store.ingest(Report("gw", 1, NOW, [], records))
    deleted = monitor.prune(now=NOW)
    # Window 7200 + 3600 s: "old" (10800 s) is just inside, only "older" goes.
    assert deleted["predictions"] == 1
    kept = {p.request_id for p in monitor.store.predictions("churn", 1, None, None)}
    assert kept == set(ages) - {"older"}


def test_labels_through_the_service_count_ambiguous_ones(
    monitor: Monitor, registry: CollectorRegistry
) -> None:
    monitor.store.ingest(
        Report("gw", 1, NOW, [], [_record("a", "churn", 5), _record("a", "fraud", 5)])
    )
    outcome = monitor.add_labels(
        [LabelIn("a", "yes", NOW), LabelIn("a", "no", NOW, "fraud"), LabelIn("b", "no", NOW)]
    )
    assert outcome == (1, 0, 1, 1)
    for result in ("accepted", "unknown", "ambiguous"):
        counted = registry.get_sample_value("driftgate_monitor_labels_total", {"result": result})
        assert counted == 1, result


def test_a_label_with_an_invalid_model_name_is_refused(monitor: Monitor) -> None:
    with pytest.raises(InvalidInput, match=r"labels\[1\]\.model"):
        monitor.add_labels([LabelIn("a", 1, NOW, "churn"), LabelIn("a", 1, NOW, "../etc")])

"""The drift report's renderer and its HTTP query: pure functions, no process."""

from __future__ import annotations

import html.parser

import pytest

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.errors import InvalidInput
from driftgate.monitor.report import ReportData, gather, render
from driftgate.monitor.report_charts import bin_labels
from driftgate.monitor.web import parse_report_query

NASTY = '<script>alert("x")</script>&'


def _feature(name: str, js: float, verdict: str = "NO_DRIFT") -> pb.FeatureDrift:
    return pb.FeatureDrift(
        name=name, rows=500, js_distance=js, psi=js * 2, statistic="ks_statistic",
        ks_statistic=js, critical_value=0.08, verdict=verdict, distribution_verdict=verdict,
        test="kolmogorov_smirnov", effect_statistic="ks_statistic", reference_rows=2000,
        alpha=0.0025, bin_edges=[0.0, 1.0], reference_counts=[500, 1000, 500],
        window_counts=[100, 200, 200],
        quality=[pb.DataQuality(kind="missing", rate=0.1, reference_rate=0.01, count=50, rows=500)],
    )  # fmt: skip


def _data(features: list[pb.FeatureDrift], reason: str = "drift") -> ReportData:
    drift = pb.GetDriftResponse(model="churn", version=3, rows=500, features=features)
    drift.window_end.FromSeconds(1_700_003_600)
    drift.window_start.FromSeconds(1_700_000_000)
    prediction = pb.FeatureDrift(
        name="label", categorical=True, categories=["no", "yes"],
        reference_counts=[1500, 450, 50], window_counts=[300, 190, 10],
    )  # fmt: skip
    drift.prediction.CopyFrom(prediction)
    accuracy = pb.GetAccuracyResponse(model="churn", version=3, accuracy=0.9, label_count=40)
    accuracy.estimated_accuracy = 0.85
    event = pb.Event(kind="drift_alarm", version=3, reason=reason, figures_json='{"a": 1}')
    return ReportData(drift, (accuracy, accuracy), (event,), 1_700_003_700.0)


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sections: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_features_are_listed_by_how_far_they_moved() -> None:
    features = [_feature("calm", 0.01), _feature("moved", 0.4, "DRIFT"), _feature("some", 0.1)]
    parsed = _parsed(render(_data(features)))
    order = [bytes.fromhex(s.removeprefix("feature-")).decode() for s in parsed.sections]
    assert order == ["moved", "some", "calm", "label"]  # the predictions last


def test_every_text_from_the_monitor_is_escaped() -> None:
    page = render(_data([_feature(NASTY, 0.2)], reason=NASTY))
    parsed = _parsed(page)
    assert "script" not in parsed.tags
    assert NASTY in "".join(parsed.text)  # shown as text, twice: the overview and the card
    assert page.count("&lt;script&gt;") >= 3


def test_the_page_needs_no_network() -> None:
    page = render(_data([_feature("x", 0.2)]))
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page and "<link" not in page
    assert "default-src 'none'" in page


def test_the_page_shows_the_verdict_figures_and_missing_rates() -> None:
    text = " ".join(_parsed(render(_data([_feature("x", 0.2, "DRIFT")]))).text)
    for shown in ("kolmogorov_smirnov", "0.08", "0.0025", "500 / 2,000", "1.00% → 10.00%"):
        assert shown in text
    assert "90.0%" in text and "85.0%" in text  # labelled accuracy and the estimate
    assert "22.5% → 38.0%" in text  # the "yes" class of the predictions


def test_bin_labels_follow_the_frozen_edges_and_categories() -> None:
    assert bin_labels([0.0, 1.5], [], 3) == ["< 0", "[0, 1.5)", "≥ 1.5"]
    assert bin_labels([], ["a", "b"], 3) == ["a", "b", "other"]
    assert bin_labels([1.0], [], 5) == [f"bin {i}" for i in range(5)]


class _Source:
    def __init__(self) -> None:
        self.accuracy_ends: list[int] = []

    def drift(self, request: pb.GetDriftRequest) -> pb.GetDriftResponse:
        assert request.window.seconds == 3600
        response = _data([_feature("x", 0.1)]).drift
        return response

    def accuracy(self, request: pb.GetAccuracyRequest) -> pb.GetAccuracyResponse:
        assert request.version == 3 and request.window.seconds == 3600
        self.accuracy_ends.append(request.end_time.seconds)
        return pb.GetAccuracyResponse(model="churn", version=3)

    def events(self, request: pb.ListEventsRequest) -> pb.ListEventsResponse:
        return pb.ListEventsResponse(events=[pb.Event(kind="promote")])


def test_accuracy_is_asked_for_consecutive_windows_ending_with_the_drift_window() -> None:
    source = _Source()
    data = gather(source, "churn", window=3600, points=3)
    assert source.accuracy_ends == [1_700_003_600 - 7200, 1_700_003_600 - 3600, 1_700_003_600]
    assert len(data.accuracy) == 3 and data.events[0].kind == "promote"


def test_the_query_string_is_parsed_strictly() -> None:
    assert parse_report_query("") == (None, None)
    assert parse_report_query("version=2&window=1h") == (2, 3600.0)
    assert parse_report_query("window=total") == (None, 0.0)
    for query, named in (
        ("versoin=2", "versoin"),
        ("version=0", "version"),
        ("version=x", "version"),
        ("window=soon", "window"),
        ("version=1&version=2", "given 2 times"),
        ("version", "key=value"),
        ("window=" + "9" * 300, "at most 256"),
    ):
        with pytest.raises(InvalidInput, match=named):
            parse_report_query(query)

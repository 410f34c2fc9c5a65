"""The drift report: one self-contained HTML page built from the monitor's answers.

``gather`` asks a ``ReportSource`` (the monitor over gRPC, or the monitor's own servicer when
it serves ``/report/MODEL``) for a version's drift in a window, its accuracy in the windows
before it, and its events; ``render`` turns those answers into the page. Nothing here does
I/O of its own, and the page needs no network: inline CSS, inline SVG, no script.

Features are listed by how far they moved: the Jensen-Shannon distance between their
reference and window distributions on the frozen bins, a figure on the same 0-1 scale for
numeric and categorical features alike.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.monitor.report_charts import accuracy_chart, bin_labels, bins_chart

__all__ = ["ReportData", "ReportSource", "gather", "render"]

#: accuracy windows drawn over time, the drift window's and those before it
ACCURACY_POINTS = 12
#: events listed, newest first
EVENT_LIMIT = 20


class ReportSource(Protocol):
    """The monitor's three queries, request in, response out (errors raised as they come)."""

    def drift(self, request: pb.GetDriftRequest) -> pb.GetDriftResponse: ...
    def accuracy(self, request: pb.GetAccuracyRequest) -> pb.GetAccuracyResponse: ...
    def events(self, request: pb.ListEventsRequest) -> pb.ListEventsResponse: ...


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows: the monitor's answers as they came."""

    drift: pb.GetDriftResponse
    accuracy: tuple[pb.GetAccuracyResponse, ...]
    """Consecutive windows of the drift window's length, oldest first, the last ending with it."""
    events: tuple[pb.Event, ...]
    generated: float
    """When the answers were asked for (seconds since the epoch)."""


def gather(
    source: ReportSource,
    model: str,
    version: int | None = None,
    window: float | None = None,
    points: int = ACCURACY_POINTS,
) -> ReportData:
    """Ask ``source`` for what the report of ``model`` shows. ``window`` in seconds: None is
    the monitor's default window, 0 the version's whole history (one accuracy figure then)."""
    request = pb.GetDriftRequest(model=model)
    if version is not None:
        request.version = version
    if window is not None:
        request.window.CopyFrom(_duration(window))
    drift = source.drift(request)
    end = _seconds(drift.window_end)
    length = end - _seconds(drift.window_start) if drift.HasField("window_start") else 0.0
    steps = points if length > 0 else 1
    accuracy = []
    for step in range(steps - 1, -1, -1):
        ask = pb.GetAccuracyRequest(model=model, version=drift.version)
        ask.window.CopyFrom(_duration(length))
        ask.end_time.CopyFrom(_timestamp(end - step * length))
        accuracy.append(source.accuracy(ask))
    events = source.events(pb.ListEventsRequest(model=model, limit=EVENT_LIMIT))
    return ReportData(drift, tuple(accuracy), tuple(events.events), time.time())


def ordered(features: Sequence[pb.FeatureDrift]) -> list[pb.FeatureDrift]:
    """Features by how far they moved (Jensen-Shannon distance), the furthest first."""
    return sorted(features, key=lambda f: (-f.js_distance, f.name))


def render(data: ReportData) -> str:
    """The report as one HTML document."""
    d = data.drift
    title = f"Drift report: {d.model} version {d.version}"
    features = ordered(d.features)
    body = [
        f"<h1>{_e(title)}</h1>",
        _summary(data),
        "<h2>Features, by how far they moved</h2>",
        _overview(features),
        *(_feature(f) for f in features),
        "<h2>Predictions</h2>",
        _feature(d.prediction, prediction=True) if d.HasField("prediction") else _none(),
        "<h2>Accuracy over time</h2>",
        _accuracy(data.accuracy),
        "<h2>Events</h2>",
        _events(data.events),
    ]
    return _PAGE.format(title=_e(title), style=_STYLE, body="\n".join(body))


def _summary(data: ReportData) -> str:
    d = data.drift
    start = _when(d.window_start) if d.HasField("window_start") else "the first record"
    rows = [
        ("Window", f"{start} to {_when(d.window_end)}"),
        ("Rows in the window", f"{d.rows:,}"),
        ("Dataset verdict", _verdict(d.dataset_verdict)),
        ("Share of drifted features", f"{d.dataset_drift_share:.0%}"),
        ("Generated", _when_seconds(data.generated)),
    ]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}</table>'


def _overview(features: Sequence[pb.FeatureDrift]) -> str:
    if not features:
        return _none()
    head = "<tr><th>Feature</th><th>Verdict</th><th>JS distance</th><th>PSI</th>"
    head += "<th>Missing (reference → window)</th></tr>"
    rows = []
    for f in features:
        link = f'<a href="#feature-{_anchor(f.name)}">{_e(f.name)}</a>'
        rows.append(
            f"<tr><td>{link}</td><td>{_verdict(f.verdict)}</td><td>{f.js_distance:.4f}</td>"
            f"<td>{f.psi:.4f}</td><td>{_missing_short(f)}</td></tr>"
        )
    return f'<table class="overview" id="overview">{head}{"".join(rows)}</table>'


def _feature(f: pb.FeatureDrift, prediction: bool = False) -> str:
    kind = "categorical" if f.categorical else "numeric"
    heading = "the model's output" if prediction else f"{kind} feature"
    labels = bin_labels(list(f.bin_edges), list(f.categories), len(f.reference_counts))
    chart = bins_chart(labels, list(f.reference_counts), list(f.window_counts))
    return (
        f'<section class="feature" id="feature-{_anchor(f.name)}">'
        f"<h3>{_e(f.name)} <small>{_e(heading)}</small> {_verdict(f.verdict)}</h3>"
        f'<div class="columns"><div>{chart}</div><div>{_test(f)}{_quality(f)}</div></div>'
        "</section>"
    )


def _test(f: pb.FeatureDrift) -> str:
    critical = f"{f.critical_value:.4g}" if f.test else "not tested (too few rows)"
    rows = [
        ("Distribution test", _e(f.test or "none") + " " + _verdict(f.distribution_verdict)),
        (f"Statistic ({f.statistic})", _number(f, f.statistic)),
        ("Critical value", _e(critical)),
        ("Level", f"{f.alpha:.3g}"),
        (f"Effect ({f.effect_statistic}) floor", f"{f.effect_size_floor:.4g}"),
        ("Rows: window / reference", f"{f.rows:,} / {f.reference_rows:,}"),
        ("JS distance / PSI", f"{f.js_distance:.4f} / {f.psi:.4f}"),
    ]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="test">{cells}</table>'


def _number(f: pb.FeatureDrift, name: str) -> str:
    if name in ("ks_statistic", "chi_square") and not f.HasField(name):
        return "–"
    value = getattr(f, name, None)
    return f"{value:.4g}" if isinstance(value, float) else "–"


def _quality(f: pb.FeatureDrift) -> str:
    if not f.quality:
        return ""
    head = "<tr><th>Data quality</th><th>Reference</th><th>Window</th><th>p</th><th></th></tr>"
    rows = "".join(
        f"<tr><td>{_e(q.kind)}</td><td>{q.reference_rate:.2%}</td><td>{q.rate:.2%} "
        f"({q.count:,} of {q.rows:,})</td><td>{q.p_value:.3g}</td>"
        f"<td>{_verdict(q.verdict)}</td></tr>"
        for q in f.quality
    )
    return f'<table class="quality">{head}{rows}</table>'


def _missing_short(f: pb.FeatureDrift) -> str:
    for q in f.quality:
        if q.kind == "missing":
            return f"{q.reference_rate:.2%} → {q.rate:.2%}"
    return "–"


def _accuracy(points: Sequence[pb.GetAccuracyResponse]) -> str:
    series = {
        "labelled accuracy": [_optional(a, "accuracy") for a in points],
        "label-free estimate": [_optional(a, "estimated_accuracy") for a in points],
    }
    ends = [_seconds(a.window_end) for a in points]
    drawn = any(v is not None for values in series.values() for v in values)
    chart = accuracy_chart(ends, series) if drawn else ""
    head = "<tr><th>Window end</th><th>Predictions</th><th>Labels</th><th>Accuracy</th>"
    head += "<th>Estimate</th><th>MAE</th><th>RMSE</th></tr>"
    rows = "".join(
        f"<tr><td>{_when(a.window_end)}</td><td>{a.prediction_count:,}</td>"
        f"<td>{a.label_count:,}</td><td>{_ratio(a, 'accuracy')}</td>"
        f"<td>{_ratio(a, 'estimated_accuracy')}</td><td>{_plain(a, 'mae')}</td>"
        f"<td>{_plain(a, 'rmse')}</td></tr>"
        for a in points
    )
    return f'{chart}<table class="accuracy">{head}{rows}</table>'


def _events(events: Sequence[pb.Event]) -> str:
    if not events:
        return _none()
    head = "<tr><th>Time</th><th>Kind</th><th>Version</th><th>Reason</th></tr>"
    rows = "".join(
        f"<tr><td>{_when(e.time)}</td><td>{_e(e.kind)}</td><td>{e.version}</td>"
        f"<td>{_e(e.reason)}<details><summary>figures</summary><pre>{_figures(e)}</pre>"
        "</details></td></tr>"
        for e in events
    )
    return f'<table class="events">{head}{rows}</table>'


def _figures(e: pb.Event) -> str:
    try:
        return _e(json.dumps(json.loads(e.figures_json or "{}"), indent=1, sort_keys=True))
    except ValueError:
        return _e(e.figures_json)


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def _ratio(message: Any, name: str) -> str:
    value = _optional(message, name)
    return "–" if value is None else f"{value:.1%}"


def _plain(message: Any, name: str) -> str:
    value = _optional(message, name)
    return "–" if value is None else f"{value:.4g}"


def _verdict(value: int) -> str:
    name = pb.DriftVerdict.Name(value) if value in pb.DriftVerdict.values() else "UNKNOWN"
    text = name.replace("_", " ").lower()
    return f'<span class="verdict {_e(name.lower())}">{_e(text)}</span>'


def _none() -> str:
    return '<p class="none">none</p>'


def _anchor(name: str) -> str:
    # Any text is a valid id in HTML5 except whitespace; hex keeps it unambiguous and safe.
    return name.encode().hex()


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _when(stamp: Timestamp) -> str:
    return _when_seconds(_seconds(stamp))


def _when_seconds(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(round(seconds * 1e9)))
    return duration


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
  color: #1d2430; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccd; }
h3 small { color: #667; font-weight: normal; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
table.overview td, table.accuracy td, table.events td { border-top: 1px solid #e3e6ee; }
.feature { border: 1px solid #dde; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }
.columns { display: flex; gap: 2em; flex-wrap: wrap; }
.verdict { border-radius: 4px; padding: 1px 6px; font-size: .85em; font-weight: 600; }
.verdict.drift { background: #d7263d; color: #fff; }
.verdict.no_drift { background: #2e933c; color: #fff; }
.verdict.insufficient_data, .verdict.unknown, .verdict.drift_verdict_unspecified
  { background: #aab; color: #fff; }
.legend-reference { fill: #9aa5b8; } .legend-window { fill: #1f6fd1; }
pre { white-space: pre-wrap; font-size: .85em; } .none { color: #667; }
svg text { font: 11px system-ui, sans-serif; fill: #1d2430; }
"""

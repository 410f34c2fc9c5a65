"""Inline SVG charts for the drift report: bins side by side, and figures over time.

Every text that reaches the SVG is escaped here; the charts need no script and no font file.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["accuracy_chart", "bin_labels", "bins_chart"]

_WIDTH, _BAR_ROW, _LABEL = 560, 26, 150
_REFERENCE, _WINDOW = "#9aa5b8", "#1f6fd1"
_SERIES = ("#2e933c", "#e07b00", "#7b3fa0")


def bin_labels(edges: Sequence[float], categories: Sequence[str], size: int) -> list[str]:
    """A label per frozen bin: intervals from numeric edges (open at both ends), the
    categories and a last "other" bin, or bin numbers when neither is known."""
    if categories and size == len(categories) + 1:
        return [*categories, "other"]
    if edges and size == len(edges) + 1:
        g = [f"{e:.4g}" for e in edges]
        inner = [f"[{a}, {b})" for a, b in zip(g, g[1:], strict=False)]
        return [f"< {g[0]}", *inner, f"≥ {g[-1]}"]
    return [f"bin {i}" for i in range(size)]


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def bins_chart(labels: Sequence[str], reference: Sequence[int], window: Sequence[int]) -> str:
    """Horizontal bars per bin: the reference's share of rows above the window's."""
    if not reference:
        return '<p class="none">no bins</p>'
    ref, win = _shares(reference), _shares(window or [0] * len(reference))
    top = max(max(ref), max(win), 1e-12)
    scale = (_WIDTH - _LABEL - 100) / top  # room for the "10.0% → 52.0%" beside a bar
    height = 30 + _BAR_ROW * len(ref)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="reference and window shares">',
        f'<rect x="{_LABEL}" y="4" width="10" height="10" fill="{_REFERENCE}"/>'
        f'<text x="{_LABEL + 14}" y="13">reference</text>'
        f'<rect x="{_LABEL + 90}" y="4" width="10" height="10" fill="{_WINDOW}"/>'
        f'<text x="{_LABEL + 104}" y="13">window</text>',
    ]
    for i, label in enumerate(labels[: len(ref)]):
        y = 24 + i * _BAR_ROW
        parts.append(
            f'<text x="{_LABEL - 6}" y="{y + 15}" text-anchor="end">{_e(_short(label))}</text>'
            f'<rect x="{_LABEL}" y="{y + 2}" width="{ref[i] * scale:.1f}" height="10" '
            f'fill="{_REFERENCE}"><title>{_e(label)}: reference {ref[i]:.1%}</title></rect>'
            f'<rect x="{_LABEL}" y="{y + 12}" width="{win[i] * scale:.1f}" height="10" '
            f'fill="{_WINDOW}"><title>{_e(label)}: window {win[i]:.1%}</title></rect>'
            f'<text x="{_LABEL + max(ref[i], win[i]) * scale + 4:.1f}" y="{y + 15}">'
            f"{ref[i]:.1%} → {win[i]:.1%}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def accuracy_chart(ends: Sequence[float], series: Mapping[str, Sequence[float | None]]) -> str:
    """Lines over the windows' ends, 0-100 % on the y axis; a missing value breaks a line."""
    width, height, left, bottom = 720, 240, 44, 36
    plot_w, plot_h = width - left - 150, height - bottom - 10
    n = max(len(ends), 1)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return 10 + plot_h * (1.0 - min(max(v, 0.0), 1.0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="accuracy over time">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#e3e6ee"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:.0%}</text>'
        )
    for i in sorted({0, n - 1}):
        if i < len(ends):
            stamp = time.strftime("%m-%d %H:%M", time.gmtime(ends[i]))
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle">{stamp}</text>'
            )
    for k, (name, values) in enumerate(series.items()):
        colour = _SERIES[k % len(_SERIES)]
        parts.extend(_line(values, colour, x, y))
        ly = 20 + 18 * k
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w + 26}" y="{ly}">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _line(
    values: Sequence[float | None],
    colour: str,
    x: Callable[[int], float],
    y: Callable[[float], float],
) -> list[str]:
    parts: list[str] = []
    run: list[str] = []
    for i, v in enumerate([*values, None]):
        if v is not None and math.isfinite(v):
            run.append(f"{x(i):.1f},{y(v):.1f}")
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        elif run:
            parts.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
            run = []
    return parts


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)

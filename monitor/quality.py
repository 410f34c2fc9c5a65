"""Data-quality counts of a feature and the exact test that compares them with the reference's.

Pure numpy (and ``math``). A feature's data quality in a window is the number of its values
that are missing, infinite or out of range among all the values seen (``QualityCounts``);
the reference profile holds the same counts for the training data. ``rise_p_value`` is the
one-sided p-value of Fisher's exact test that the window's rate is above the reference's:
conditional on the total count of both samples, the window's count is hypergeometric under
"same rate", whatever that rate is. Both sides are finite samples (n_ref training rows, n
window rows), the test needs no simulation and no normal approximation, and its false-alarm
rate is at most the level it is run at, for every n and every rate (conservative where the
counts are small and discrete). ``monitor.drift`` runs it per feature and kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "QualityCounts", "rise_p_value"]

KINDS = ("missing", "infinite", "out_of_range")
"""What is tested, per feature:

- ``missing``: values that cannot be binned, NaN, +-Inf, None or empty, as the profile counts
  them in ``missing`` (the same definition on both sides);
- ``infinite``: +-Inf alone. The profile does not count +-Inf apart from NaN, so the
  reference's count is bounded by its ``missing`` count; testing against the bound keeps the
  false-alarm rate within its budget, and is exact when the training data had no missing
  value (the usual case);
- ``out_of_range``: numeric values below the training minimum or above the maximum (the open
  end bins), categorical values outside the profile's categories (the "other" bin).
"""

_CHUNK = 4096


@dataclass(frozen=True)
class QualityCounts:
    """Values of one feature seen in a sample, and how many were missing, infinite, out of
    range (a value counts once in ``rows``; an infinite one also counts as missing)."""

    rows: int
    missing: int = 0
    infinite: int = 0
    out_of_range: int = 0

    def count(self, kind: str) -> int:
        """The count of ``kind`` (one of ``KINDS``), clipped to ``rows``."""
        value: int = getattr(self, kind)
        return min(max(int(value), 0), self.rows)


def rise_p_value(window: int, rows: int, reference: int, reference_rows: int) -> float:
    """P-value of Fisher's exact test, one-sided, of "the window's rate is above the
    reference's": P(X >= window) for X hypergeometric with ``reference_rows + rows`` rows in
    all, ``reference + window`` of them with the trait, ``rows`` drawn for the window."""
    total, marked, drawn = reference_rows + rows, reference + window, rows
    low, high = max(0, drawn - (total - marked)), min(marked, drawn)
    if window <= low:
        return 1.0
    if window > drawn * marked / total:  # above the mean: sum the upper tail from here
        return min(math.exp(_log_tail(total, marked, drawn, window, high)), 1.0)
    # at or below the mean: one minus the lower tail, which is the short side to sum
    return max(1.0 - math.exp(_log_tail(total, marked, drawn, window - 1, low)), 0.0)


def _log_choose(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _log_tail(total: int, marked: int, drawn: int, start: int, stop: int) -> float:
    """log of the hypergeometric probabilities summed from ``start`` to ``stop`` (inclusive,
    either direction; ``start`` lies on the far side of the mode, so the terms only fall),
    in chunks, stopping once a term is below e^-50 of the sum so far."""
    step = 1 if stop >= start else -1
    log_term = (
        _log_choose(marked, start)
        + _log_choose(total - marked, drawn - start)
        - _log_choose(total, drawn)
    )
    rest = total - marked - drawn
    log_sum, k = -math.inf, start
    while step * (stop - k) >= 0:
        m = min(abs(stop - k) + 1, _CHUNK)
        ks = k + step * np.arange(m, dtype=np.float64)
        with np.errstate(divide="ignore"):  # the ratio past the support's end is 0
            if step > 0:
                ratio = np.log((marked - ks) * (drawn - ks)) - np.log((ks + 1) * (rest + ks + 1))
            else:
                ratio = np.log(ks * (rest + ks)) - np.log((marked - ks + 1) * (drawn - ks + 1))
        logs = log_term + np.concatenate([[0.0], np.cumsum(ratio)])
        log_sum = float(np.logaddexp(log_sum, np.logaddexp.reduce(logs[:m])))
        k, log_term = k + step * m, float(logs[m])
        if log_term < log_sum - 50.0:
            break
    return log_sum

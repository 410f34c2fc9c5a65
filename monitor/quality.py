"""Data-quality counts of a feature and the exact test that compares them with the reference's.

Pure numpy and scipy. A feature's data quality in a window is the number of its values
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

from dataclasses import dataclass

from scipy import stats

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
    all, ``reference + window`` of them with the trait, ``rows`` drawn for the window
    (``scipy.stats.hypergeom``, exact at any count)."""
    total, marked = reference_rows + rows, reference + window
    return float(stats.hypergeom.sf(window - 1, total, marked, rows))

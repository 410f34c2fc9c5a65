"""The settings of the drift verdicts, apart from the statistics that use them.

``driftgate.monitor.drift`` needs scipy; the settings and every command that reads them
(the CLI's ``--help`` among them) do not, so they live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DriftThresholds"]


@dataclass(frozen=True)
class DriftThresholds:
    """Settings of the drift verdicts; the defaults are documented in the README.

    Usage: ``DriftTester(DriftThresholds(alpha=0.05, min_rows=500))``; per model through
    ``monitor.settings.MonitorSettings.drift_overrides``.
    """

    alpha: float = 0.005
    """False-alarm rate of one whole evaluation (all features of a model version); half the
    1% target, as margin for the Monte Carlo error of the critical values."""
    min_rows: int = 100
    """Windows with fewer rows are INSUFFICIENT_DATA."""
    numeric_statistic: str = "ks_statistic"
    """Statistic the verdict of a numeric feature compares."""
    categorical_statistic: str = "chi_square"
    """Statistic the verdict of a categorical feature compares."""
    floors: dict[str, float] = field(
        default_factory=lambda: {
            "ks_statistic": 0.03,
            "js_distance": 0.03,
            "psi": 0.02,
            "l_infinity": 0.02,
            "chi_square": 0.0,
        }
    )
    """Effect-size floors: a statistic at or below its floor is never DRIFT. A statistic
    without a scale of its own (``chi_square``, which grows with the rows) is floored on
    ``js_distance`` of the same window instead (``EFFECT_STATISTIC``)."""
    dataset_share: float = 0.0
    """The dataset verdict is DRIFT when the share of drifted features is above this."""
    trials: int = 20_000
    """Least number of null simulations per simulated critical value (more for small
    alpha'); only statistics without an asymptotic null distribution are simulated."""
    min_expected: float = 5.0
    """Chi-square: categories expected fewer times than this in the smaller sample are
    pooled into one cell before the test (Cochran's rule), so the chi-square distribution
    holds."""
    quality_floor: float = 0.01
    """Data quality: a rate at most this much above the reference's is never DRIFT."""
    quality_share: float = 0.1
    """Share of a feature's false-alarm budget spent on its three data-quality tests."""
    category_share: float = 0.5
    """Share of a categorical feature's distribution budget spent on the per-category test
    (the rest goes to ``categorical_statistic``)."""
    category_floor: float = 0.01
    """Per-category test: a change of a category's share of at most this is never DRIFT."""

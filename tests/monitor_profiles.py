"""The reference profile the monitor's tests share: no repository or converter needed."""

from __future__ import annotations

import numpy as np

from driftgate.core.profile import FeatureProfile, ReferenceProfile, categorical_bins, numeric_bins


def churn_profile() -> ReferenceProfile:
    """``age`` and ``spend`` numeric, ``plan`` categorical, no/yes predictions; 5,000 rows."""
    rng = np.random.default_rng(0)
    return ReferenceProfile(
        rows=5_000,
        features=(
            FeatureProfile("age", "input", 0, numeric_bins(rng.standard_normal(5_000), 10)),
            FeatureProfile("spend", "input", 1, numeric_bins(rng.standard_normal(5_000), 10)),
            FeatureProfile("plan", "plan", 0, categorical_bins(rng.choice(["a", "b", "c"], 5_000))),
        ),
        prediction=categorical_bins(rng.choice(["no", "yes"], 5_000), categories=["no", "yes"]),
    )

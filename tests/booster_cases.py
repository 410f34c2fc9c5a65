"""XGBoost, LightGBM and CatBoost configurations for the tests: fitted standalone and as the
last step of a scikit-learn Pipeline, on unrounded float64 data with ties, near-ties (values
closer than a float32 step) and NaN. A library that is not installed is skipped."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

CLASSIFICATION, REGRESSION = "classification", "regression"


def _xgboost(task: str) -> Any:
    import xgboost

    cls = xgboost.XGBClassifier if task == CLASSIFICATION else xgboost.XGBRegressor
    return cls(n_estimators=25, max_depth=4, n_jobs=1, random_state=0)


def _lightgbm(task: str) -> Any:
    import lightgbm

    cls = lightgbm.LGBMClassifier if task == CLASSIFICATION else lightgbm.LGBMRegressor
    return cls(n_estimators=25, num_leaves=15, n_jobs=1, random_state=0, verbose=-1)


def _catboost(task: str) -> Any:
    import catboost

    cls = catboost.CatBoostClassifier if task == CLASSIFICATION else catboost.CatBoostRegressor
    # allow_writing_files: CatBoost otherwise writes catboost_info/ into the working directory.
    return cls(iterations=25, depth=4, thread_count=1, random_seed=0, verbose=0,
               allow_writing_files=False)  # fmt: skip


BOOSTERS: dict[str, Callable[[str], Any]] = {
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "catboost": _catboost,
}


@dataclass(frozen=True)
class BoosterCase:
    library: str
    task: str
    pipeline: bool

    @property
    def id(self) -> str:
        return f"{self.library}-{self.task}-{'pipeline' if self.pipeline else 'standalone'}"

    def estimator(self) -> Any:
        """The unfitted estimator: the booster, or a Pipeline ending in it whose
        ColumnTransformer one-hot encodes the string column and passes the numbers through."""
        booster = BOOSTERS[self.library](self.task)
        if not self.pipeline:
            return booster
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder

        encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        prep = ColumnTransformer([("city", encode, ["city"])], remainder="passthrough")
        return Pipeline([("prep", prep), ("model", booster)])

    def data(self, rows: int, seed: int) -> tuple[Any, np.ndarray]:
        """(X, y): a DataFrame with a string column for a Pipeline, else a float64 array."""
        x, city, y = booster_rows(rows, seed, self.task)
        if not self.pipeline:
            return x, y
        import pandas as pd

        frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(x.shape[1])})
        frame["city"] = pd.Series(city, dtype=object)
        return frame, y


def booster_rows(rows: int, seed: int, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unrounded float64 features: x0 continuous, x1 tied (one decimal), x2 near-tied (a
    narrow spread on a large offset: neighbouring values are neighbouring float32 values,
    where a threshold rounded to nearest lands on a served value), x3 continuous; 8% NaN in
    every column; a city string; labels depending on all of them (NaN included)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    x[:, 1] = np.round(x[:, 1], 1)
    x[:, 2] = 50_000 + x[:, 2] * 0.01
    city = rng.choice(["lyon", "nice", "paris"], rows)
    signal = x[:, 0] + x[:, 1] + (x[:, 2] - 50_000) * 100 + (city == "nice")
    x[rng.random(x.shape) < 0.08] = np.nan
    signal = signal + np.isnan(x[:, 3]) * 2.0
    if task == CLASSIFICATION:
        return x, city, (np.nan_to_num(signal) + rng.normal(0, 0.3, rows) > 0.5).astype(np.int64)
    return x, city, np.nan_to_num(signal) * 3 + rng.normal(0, 0.1, rows)


def installed(library: str) -> bool:
    needs_onnxmltools = library in ("xgboost", "lightgbm")
    return importlib.util.find_spec(library) is not None and (
        not needs_onnxmltools or importlib.util.find_spec("onnxmltools") is not None
    )


CASES = [
    pytest.param(
        case,
        id=case.id,
        marks=pytest.mark.skipif(not installed(case.library), reason=f"{case.library} absent"),
    )
    for case in (
        BoosterCase(library, task, pipeline)
        for library in BOOSTERS
        for task in (CLASSIFICATION, REGRESSION)
        for pipeline in (False, True)
    )
]

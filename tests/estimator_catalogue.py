"""The estimator configurations tested end to end, and the data they are fitted on.

A plain data module: ``CATALOGUE`` lists every configuration that
``tests/triton/test_estimator_catalogue.py`` converts (parity), serves through a gateway
(tritonclient, against scikit-learn on fresh rows) and profiles; those marked ``retrain`` also
retrain through the monitor's retrain path. ``python -m tests.estimator_catalogue`` prints the
README's supported-models table, generated from this list, and ``--check README.md`` fails when
the README's copy differs (a test runs that check): the table never claims more than is tested.

To add a configuration, append an ``Entry``; one that needs an optional package names it in
``requires`` (the end-to-end test skips it where the package is not installed).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    BaggingClassifier,
    BaggingRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
    StackingClassifier,
    StackingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.feature_selection import RFE, SelectFromModel, SelectKBest, VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    HuberRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDOneClassSVM,
    SGDRegressor,
)
from sklearn.model_selection import GridSearchCV
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import BernoulliNB, CategoricalNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, LocalOutlierFactor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR, NuSVC, NuSVR, OneClassSVM
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)

CLASSIFICATION, REGRESSION, OUTLIERS = "classification", "regression", "outlier_detection"
NUMERIC_COLUMNS = ("reading", "amount", "count", "score")
CATEGORICAL_COLUMNS = ("colour", "plan")


@dataclass(frozen=True)
class Entry:
    """One configuration: an unfitted estimator and the data it is fitted on."""

    name: str  # test id and model name
    family: str  # its row of the supported-models table
    task: str  # CLASSIFICATION, REGRESSION or OUTLIERS
    make: Callable[[], Any]  # a new unfitted estimator
    nan: bool = False  # fitted on data with NaN (the estimator accepts NaN)
    data: str = "numeric"  # "numeric" (NUMERIC_COLUMNS) or "mixed" (plus CATEGORICAL_COLUMNS)
    retrain: bool = False  # also retrained through the monitor's retrain path
    requires: str | None = None  # an optional package the entry needs

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


def _rs(cls: Callable[..., Any], **params: Any) -> Callable[[], Any]:
    return lambda: cls(random_state=0, **params)


def _pipe(*steps: Any) -> Callable[[], Any]:
    return lambda: make_pipeline(*[s() if callable(s) else s for s in steps])


def _columns(
    categorical: Callable[[], Any], final: Callable[[], Any], scale: bool = True
) -> Callable[[], Any]:
    """A ColumnTransformer (numeric and string columns) then ``final``. Trees get their
    numeric columns unscaled: a float32 graph scales a value near a split threshold to the
    other side of it (one tree of ten voting otherwise on 1 of 40 fresh rows)."""

    def make() -> Any:
        numeric = make_pipeline(SimpleImputer(), StandardScaler()) if scale else SimpleImputer()
        columns = ColumnTransformer(
            [
                ("num", numeric, list(NUMERIC_COLUMNS)),
                ("cat", categorical(), list(CATEGORICAL_COLUMNS)),
            ]
        )
        return Pipeline([("columns", columns), ("model", final())])

    return make


_ONE_HOT = lambda: OneHotEncoder(handle_unknown="ignore")  # noqa: E731
_ORDINAL = lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)  # noqa: E731
_TARGET = TargetEncoder
_LOGISTIC = lambda: LogisticRegression(max_iter=500)  # noqa: E731
_TREE_C = _rs(DecisionTreeClassifier, max_depth=5)
_TREE_R = _rs(DecisionTreeRegressor, max_depth=5)

L, S, NB, KNN, TREE = (
    "linear models",
    "support vector machines",
    "naive Bayes",
    "neighbours",
    "trees",
)
FOREST, BOOST, BAG = "forests", "boosting", "bagging"
ENSEMBLE, NN, META = "voting and stacking", "neural networks", "meta-estimators"
PRE, DECOMP, SELECT = "scaling and transforms", "decomposition", "feature selection"
CAT, OUT = "categorical columns", "outlier detectors"

CATALOGUE: list[Entry] = [
    # linear models
    Entry("logistic", L, CLASSIFICATION, _LOGISTIC),
    Entry("scaled-logistic", L, CLASSIFICATION, _pipe(StandardScaler, _LOGISTIC)),
    Entry(
        "sgd-log-loss",
        L,
        CLASSIFICATION,
        _pipe(StandardScaler, _rs(SGDClassifier, loss="log_loss")),
    ),
    Entry("sgd-hinge", L, CLASSIFICATION, _pipe(StandardScaler, _rs(SGDClassifier))),
    Entry("ridge-classifier", L, CLASSIFICATION, RidgeClassifier),
    Entry("perceptron", L, CLASSIFICATION, _pipe(StandardScaler, _rs(Perceptron))),
    Entry("linear-regression", L, REGRESSION, LinearRegression, retrain=True),
    Entry("ridge", L, REGRESSION, Ridge),
    Entry("lasso", L, REGRESSION, lambda: Lasso(alpha=0.1)),
    Entry("elastic-net", L, REGRESSION, lambda: ElasticNet(alpha=0.1)),
    Entry("sgd-regressor", L, REGRESSION, _pipe(StandardScaler, _rs(SGDRegressor))),
    Entry("huber", L, REGRESSION, _pipe(StandardScaler, lambda: HuberRegressor(max_iter=500))),
    Entry("bayesian-ridge", L, REGRESSION, BayesianRidge),
    Entry("ard", L, REGRESSION, ARDRegression),
    Entry("lda", L, CLASSIFICATION, LinearDiscriminantAnalysis),
    Entry("qda", L, CLASSIFICATION, QuadraticDiscriminantAnalysis),
    # support vector machines
    Entry(
        "svc-probability",
        S,
        CLASSIFICATION,
        _pipe(StandardScaler, _rs(SVC, probability=True)),
    ),
    # SVC(probability=True) is deprecated in scikit-learn 1.9: the retrained one has none.
    Entry("svc-scores", S, CLASSIFICATION, _pipe(StandardScaler, SVC), retrain=True),
    Entry("nu-svc", S, CLASSIFICATION, _pipe(StandardScaler, _rs(NuSVC, probability=True))),
    Entry("linear-svc", S, CLASSIFICATION, _rs(LinearSVC)),
    Entry("svr", S, REGRESSION, _pipe(StandardScaler, lambda: SVR(C=10.0))),
    Entry("nu-svr", S, REGRESSION, _pipe(StandardScaler, NuSVR)),
    Entry("linear-svr", S, REGRESSION, _pipe(StandardScaler, _rs(LinearSVR, max_iter=5000))),
    # naive Bayes
    Entry("gaussian-nb", NB, CLASSIFICATION, GaussianNB, retrain=True),
    Entry("bernoulli-nb", NB, CLASSIFICATION, _pipe(StandardScaler, BernoulliNB)),
    Entry("multinomial-nb", NB, CLASSIFICATION, _pipe(MinMaxScaler, MultinomialNB)),
    Entry("complement-nb", NB, CLASSIFICATION, _pipe(MinMaxScaler, ComplementNB)),
    Entry(
        "categorical-nb",
        NB,
        CLASSIFICATION,
        _pipe(
            lambda: KBinsDiscretizer(4, encode="ordinal", quantile_method="averaged_inverted_cdf"),
            CategoricalNB,
        ),
    ),  # fmt: skip
    # neighbours
    Entry(
        "knn-classifier",
        KNN,
        CLASSIFICATION,
        _pipe(StandardScaler, KNeighborsClassifier),
        retrain=True,
    ),
    Entry("knn-regressor", KNN, REGRESSION, _pipe(StandardScaler, KNeighborsRegressor)),
    # trees
    Entry("decision-tree", TREE, CLASSIFICATION, _TREE_C, nan=True, retrain=True),
    Entry("decision-tree-regressor", TREE, REGRESSION, _TREE_R, nan=True),
    Entry("extra-tree", TREE, CLASSIFICATION, _rs(ExtraTreeClassifier, max_depth=6)),
    Entry("extra-tree-regressor", TREE, REGRESSION, _rs(ExtraTreeRegressor, max_depth=6)),
    # forests
    Entry(
        "random-forest",
        FOREST,
        CLASSIFICATION,
        _rs(RandomForestClassifier, n_estimators=15),
        nan=True,
        retrain=True,
    ),
    Entry(
        "random-forest-regressor",
        FOREST,
        REGRESSION,
        _rs(RandomForestRegressor, n_estimators=15),
        nan=True,
    ),
    Entry("extra-trees", FOREST, CLASSIFICATION, _rs(ExtraTreesClassifier, n_estimators=15)),
    Entry("extra-trees-regressor", FOREST, REGRESSION, _rs(ExtraTreesRegressor, n_estimators=15)),
    # boosting
    Entry(
        "gradient-boosting",
        BOOST,
        CLASSIFICATION,
        _rs(GradientBoostingClassifier, n_estimators=20),
        retrain=True,
    ),
    Entry(
        "gradient-boosting-regressor",
        BOOST,
        REGRESSION,
        _rs(GradientBoostingRegressor, n_estimators=20),
    ),
    Entry(
        "hist-gradient-boosting",
        BOOST,
        CLASSIFICATION,
        _rs(HistGradientBoostingClassifier, max_iter=15),
        nan=True,
    ),
    Entry(
        "hist-gradient-boosting-regressor",
        BOOST,
        REGRESSION,
        _rs(HistGradientBoostingRegressor, max_iter=15),
        nan=True,
    ),
    Entry("adaboost", BOOST, CLASSIFICATION, _rs(AdaBoostClassifier, n_estimators=15)),
    Entry("adaboost-regressor", BOOST, REGRESSION, _rs(AdaBoostRegressor, n_estimators=15)),
    # bagging
    Entry("bagging-trees", BAG, CLASSIFICATION, _rs(BaggingClassifier, n_estimators=8)),
    Entry(
        "bagging-logistic",
        BAG,
        CLASSIFICATION,
        _rs(BaggingClassifier, estimator=_LOGISTIC(), n_estimators=3),
    ),
    Entry("bagging-regressor", BAG, REGRESSION, _rs(BaggingRegressor, n_estimators=8)),
    # voting and stacking
    Entry(
        "voting-soft",
        ENSEMBLE,
        CLASSIFICATION,
        lambda: VotingClassifier(
            [("lr", _LOGISTIC()), ("tree", _TREE_C()), ("nb", GaussianNB())],
            voting="soft",
            flatten_transform=False,
        ),
    ),  # fmt: skip
    Entry(
        "voting-regressor",
        ENSEMBLE,
        REGRESSION,
        lambda: VotingRegressor([("ridge", Ridge()), ("tree", _TREE_R())]),
        retrain=True,
    ),  # fmt: skip
    Entry(
        "stacking",
        ENSEMBLE,
        CLASSIFICATION,
        lambda: StackingClassifier(
            [("lr", _LOGISTIC()), ("tree", _TREE_C())], final_estimator=_LOGISTIC(), cv=2
        ),
    ),  # fmt: skip
    Entry(
        "stacking-regressor",
        ENSEMBLE,
        REGRESSION,
        lambda: StackingRegressor(
            [("ridge", Ridge()), ("tree", _TREE_R())], final_estimator=Ridge(), cv=2
        ),
    ),  # fmt: skip
    # neural networks
    Entry(
        "mlp",
        NN,
        CLASSIFICATION,
        _pipe(StandardScaler, _rs(MLPClassifier, hidden_layer_sizes=(16,), max_iter=300)),
    ),
    Entry(
        "mlp-regressor",
        NN,
        REGRESSION,
        _pipe(StandardScaler, _rs(MLPRegressor, hidden_layer_sizes=(16,), max_iter=500)),
    ),
    # meta-estimators
    Entry(
        "calibrated-svc",
        META,
        CLASSIFICATION,
        lambda: CalibratedClassifierCV(make_pipeline(StandardScaler(), SVC()), cv=3),
    ),
    Entry("one-vs-rest", META, CLASSIFICATION, lambda: OneVsRestClassifier(_LOGISTIC())),
    Entry(
        "grid-search",
        META,
        CLASSIFICATION,
        lambda: GridSearchCV(_LOGISTIC(), {"C": [0.1, 1.0]}, cv=2),
    ),
    Entry(
        "select-from-model",
        META,
        REGRESSION,
        _pipe(lambda: SelectFromModel(Lasso(alpha=0.1)), LinearRegression),
    ),
    Entry(
        "rfe",
        META,
        CLASSIFICATION,
        _pipe(lambda: RFE(_LOGISTIC(), n_features_to_select=3), _LOGISTIC),
    ),
    # scalers and transforms inside a Pipeline
    Entry(
        "imputer-scaler",
        PRE,
        CLASSIFICATION,
        _pipe(SimpleImputer, StandardScaler, _LOGISTIC),
        nan=True,
    ),
    Entry("min-max", PRE, REGRESSION, _pipe(MinMaxScaler, Ridge)),
    Entry("robust", PRE, CLASSIFICATION, _pipe(RobustScaler, _LOGISTIC)),
    Entry("max-abs", PRE, REGRESSION, _pipe(MaxAbsScaler, Ridge)),
    Entry("normalizer", PRE, CLASSIFICATION, _pipe(Normalizer, _LOGISTIC)),
    Entry("power", PRE, REGRESSION, _pipe(PowerTransformer, Ridge)),
    Entry(
        "k-bins",
        PRE,
        REGRESSION,
        _pipe(lambda: KBinsDiscretizer(4, encode="onehot-dense", strategy="uniform"), Ridge),
    ),
    Entry(
        "polynomial",
        PRE,
        REGRESSION,
        _pipe(PolynomialFeatures, StandardScaler, Ridge),
        retrain=True,
    ),
    Entry("binarizer", PRE, CLASSIFICATION, _pipe(Binarizer, BernoulliNB)),
    Entry(
        "feature-union",
        PRE,
        CLASSIFICATION,
        _pipe(lambda: FeatureUnion([("scaled", StandardScaler()), ("pca", PCA(2))]), _LOGISTIC),
    ),  # fmt: skip
    # decomposition inside a Pipeline
    Entry("pca", DECOMP, CLASSIFICATION, _pipe(StandardScaler, lambda: PCA(3), _LOGISTIC)),
    Entry("truncated-svd", DECOMP, REGRESSION, _pipe(_rs(TruncatedSVD, n_components=3), Ridge)),
    Entry("incremental-pca", DECOMP, REGRESSION, _pipe(lambda: IncrementalPCA(3), Ridge)),
    # feature selection inside a Pipeline
    Entry("select-k-best", SELECT, CLASSIFICATION, _pipe(lambda: SelectKBest(k=2), _LOGISTIC)),
    Entry("variance-threshold", SELECT, REGRESSION, _pipe(lambda: VarianceThreshold(0.01), Ridge)),
    # categorical columns through a ColumnTransformer
    Entry(
        "one-hot-logistic",
        CAT,
        CLASSIFICATION,
        _columns(_ONE_HOT, _LOGISTIC),
        nan=True,
        data="mixed",
    ),
    Entry(
        "one-hot-ridge",
        CAT,
        REGRESSION,
        _columns(_ONE_HOT, Ridge),
        nan=True,
        data="mixed",
        retrain=True,
    ),
    Entry(
        "ordinal-forest",
        CAT,
        CLASSIFICATION,
        _columns(_ORDINAL, _rs(RandomForestClassifier, n_estimators=10), scale=False),
        nan=True,
        data="mixed",
    ),
    Entry(
        "ordinal-gradient-boosting",
        CAT,
        REGRESSION,
        _columns(_ORDINAL, _rs(GradientBoostingRegressor, n_estimators=20), scale=False),
        nan=True,
        data="mixed",
    ),
    Entry("target-encoder", CAT, REGRESSION, _columns(_TARGET, Ridge), nan=True, data="mixed"),
    # outlier detectors
    Entry(
        "isolation-forest",
        OUT,
        OUTLIERS,
        _rs(IsolationForest, n_estimators=15, contamination=0.05),
        retrain=True,
    ),
    Entry("one-class-svm", OUT, OUTLIERS, _pipe(StandardScaler, lambda: OneClassSVM(nu=0.05))),
    Entry(
        "local-outlier-factor",
        OUT,
        OUTLIERS,
        _pipe(StandardScaler, lambda: LocalOutlierFactor(novelty=True, contamination=0.05)),
    ),
    Entry("sgd-one-class-svm", OUT, OUTLIERS, _pipe(StandardScaler, _rs(SGDOneClassSVM, nu=0.05))),
]


# -- gradient-boosting libraries (optional extras driftgate[xgboost], [lightgbm], [catboost]) --


def _booster(library: str, task: str) -> Callable[[], Any]:
    """A small XGBoost, LightGBM or CatBoost classifier or regressor (imported when made)."""

    def make() -> Any:
        module = importlib.import_module(library)
        name = {"xgboost": "XGB", "lightgbm": "LGBM", "catboost": "CatBoost"}[library]
        cls = getattr(module, name + ("Classifier" if task == CLASSIFICATION else "Regressor"))
        if library == "catboost":  # no catboost_info/ in the working directory
            return cls(iterations=20, depth=4, thread_count=1, random_seed=0, verbose=0,
                       allow_writing_files=False)  # fmt: skip
        params = {"verbose": -1} if library == "lightgbm" else {}
        return cls(n_estimators=20, n_jobs=1, random_state=0, **params)

    return make


def _encoded(final: Callable[[], Any]) -> Callable[[], Any]:
    """One-hot categories, numbers passed through as they are (NaN included): a booster
    splits on the served values themselves, as it does standalone."""

    def make() -> Any:
        encode = ColumnTransformer(
            [("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_COLUMNS))],
            remainder="passthrough",
        )
        return Pipeline([("columns", encode), ("model", final())])

    return make


XGB, LGBM, CATBOOST = "XGBoost", "LightGBM", "CatBoost"
CATALOGUE += [
    Entry("xgboost-classifier", XGB, CLASSIFICATION, _booster("xgboost", CLASSIFICATION),
          nan=True, retrain=True, requires="xgboost"),
    Entry("xgboost-regressor-pipeline", XGB, REGRESSION,
          _encoded(_booster("xgboost", REGRESSION)), nan=True, data="mixed", requires="xgboost"),
    Entry("lightgbm-classifier-pipeline", LGBM, CLASSIFICATION,
          _encoded(_booster("lightgbm", CLASSIFICATION)), nan=True, data="mixed",
          requires="lightgbm"),
    Entry("lightgbm-regressor", LGBM, REGRESSION, _booster("lightgbm", REGRESSION), nan=True,
          retrain=True, requires="lightgbm"),
    Entry("catboost-classifier", CATBOOST, CLASSIFICATION, _booster("catboost", CLASSIFICATION),
          nan=True, retrain=True, requires="catboost"),
    Entry("catboost-regressor-pipeline", CATBOOST, REGRESSION,
          _encoded(_booster("catboost", REGRESSION)), nan=True, data="mixed",
          requires="catboost"),
]  # fmt: skip


def entries() -> list[Entry]:
    """The configurations whose optional packages are installed."""
    return [e for e in CATALOGUE if e.available]


# -- data --------------------------------------------------------------------------------


def numeric_rows(rows: int, seed: int, nan: bool) -> np.ndarray:
    """Unrounded float64 features with ties: ``reading`` normal; ``amount`` around 10 (its
    float32 steps are 1e-6 apart, so tree thresholds fall between served values); ``count``
    small integers (ties); ``score`` rounded to one decimal (ties). With ``nan``, about 5% NaN
    in ``reading`` and ``score``. (A feature narrow on a much larger offset, 50,000 +- 0.5,
    is tested for trees in tests/test_converter.py; float32 graphs of scalers and linear
    models cannot match float64 there, see the README.)"""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(size=rows),
            10.0 + rng.normal(size=rows) * 2.0,
            rng.integers(0, 5, rows).astype(np.float64),
            np.round(rng.normal(size=rows), 1),
        ]
    )
    if nan:
        x[rng.random(rows) < 0.05, 0] = np.nan
        x[rng.random(rows) < 0.05, 3] = np.nan
    return x


def _signal(x: np.ndarray) -> np.ndarray:
    filled = np.nan_to_num(x)
    return filled[:, 0] + (filled[:, 1] - 10.0) / 2.0 + 0.5 * filled[:, 2] - filled[:, 3]


def labels(entry: Entry, x: np.ndarray, seed: int) -> np.ndarray:
    """Targets for the rows ``x``: three classes, a noisy value, or -1/1 outlier truth."""
    rng = np.random.default_rng(seed + 100)
    signal = _signal(x) + rng.normal(size=len(x)) * 0.5
    if entry.task == CLASSIFICATION:
        return np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3])).astype(np.int64)
    if entry.task == REGRESSION:
        return signal * 10.0 + 3.0
    far = np.abs(np.nan_to_num(x[:, 0])) > 2.5
    return np.where(far, -1, 1).astype(np.int64)


def dataset(entry: Entry, rows: int, seed: int) -> tuple[Any, np.ndarray]:
    """(features, targets) for ``entry``: a float64 array, or a DataFrame for mixed data
    (its string columns with a missing value or two where ``nan``)."""
    x = numeric_rows(rows, seed, entry.nan)
    y = labels(entry, x, seed)
    if entry.data == "numeric":
        return x, y
    import pandas as pd

    rng = np.random.default_rng(seed + 200)
    frame = pd.DataFrame(x, columns=list(NUMERIC_COLUMNS))
    frame["colour"] = rng.choice(["red", "green", "blue"], rows)
    frame["plan"] = rng.choice(["basic", "pro"], rows)
    if entry.task == CLASSIFICATION:  # the categories carry signal too
        y = np.where(frame["colour"].to_numpy() == "red", np.minimum(y + 1, 2), y)
    return frame, y


def fit(entry: Entry, rows: int = 240, seed: int = 0) -> tuple[Any, Any, np.ndarray]:
    """(fitted estimator, features, targets); convergence warnings of these small fits are
    not what the catalogue tests."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    x, y = dataset(entry, rows, seed)
    estimator = entry.make()
    # One thread: on small data OpenMP's and BLAS's thread pools cost more than they save.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The `probability` parameter", FutureWarning)
        estimator.fit(x, y)
    return estimator, x, y


# -- the supported-models table ----------------------------------------------------------


def class_names(estimator: Any) -> set[str]:
    """Class names of an unfitted estimator and of every estimator among its parameters."""
    names = {type(estimator).__name__}
    for value in estimator.get_params(deep=True).values():
        # Duck-typed: CatBoost's estimators are not scikit-learn BaseEstimators.
        if not isinstance(value, type) and hasattr(value, "fit") and hasattr(value, "get_params"):
            names.add(type(value).__name__)
    return names


_PLUMBING = {"Pipeline", "ColumnTransformer"}
_TASKS = {CLASSIFICATION: "classifier", REGRESSION: "regressor", OUTLIERS: "outlier detector"}
BEGIN = "<!-- supported-models table: generated by python -m tests.estimator_catalogue -->"
END = "<!-- end of supported-models table -->"


def table(catalogue: list[Entry] | None = None) -> str:
    """The README's supported-models table (Markdown), between its BEGIN and END markers:
    every entry, those needing an optional package too (CI installs them all; elsewhere the
    end-to-end test reports them skipped)."""
    chosen = CATALOGUE if catalogue is None else catalogue
    families: dict[str, list[Entry]] = {}
    for entry in chosen:
        families.setdefault(entry.family, []).append(entry)
    lines = [
        BEGIN,
        "",
        "| family | tasks | configurations | retrained | estimators and transformers |",
        "|---|---|---|---|---|",
    ]
    for family, members in families.items():
        tasks = ", ".join(t for k, t in _TASKS.items() if any(e.task == k for e in members))
        names = set().union(*(class_names(e.make()) for e in members)) - _PLUMBING
        retrained = sum(e.retrain for e in members)
        lines.append(
            f"| {family} | {tasks} | {len(members)} | {retrained} | {', '.join(sorted(names))} |"
        )
    lines += ["", f"{len(chosen)} configurations, every one tested end to end.", "", END]
    return "\n".join(lines)


def readme_table(text: str) -> str | None:
    """The generated table as it stands in ``text`` (None if its markers are missing)."""
    found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, re.DOTALL)
    return found.group(0) if found else None


def main(argv: list[str]) -> int:
    """Print the table; ``--check README.md``: exit 1 if the README's table differs;
    ``--write README.md``: replace it there."""
    if len(argv) == 2 and argv[0] in ("--check", "--write"):
        with open(argv[1], encoding="utf-8") as handle:
            text = handle.read()
        current = readme_table(text)
        if argv[0] == "--check":
            return 0 if current == table() else 1
        if current is None:
            print(f"{argv[1]} has no table markers", file=sys.stderr)
            return 1
        with open(argv[1], "w", encoding="utf-8") as handle:
            handle.write(text.replace(current, table()))
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

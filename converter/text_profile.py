"""The reference profile of text columns: the derived features of ``driftgate.core.text``.

A string column is a text column when the estimator's leading ColumnTransformer sends it, as
a single column, to a ``CountVectorizer`` or ``TfidfVectorizer`` (or when the estimator is a
Pipeline starting with one, fitted on that one column) with the word analyzer and
neither a custom preprocessor nor tokenizer nor accent stripping (what ``TextAnalyzer``
reproduces; skl2onnx converts the same set). Such a column keeps its categorical feature (so
prediction records carry the document for retraining) and gains three numeric features,
``<column>.tokens``, ``<column>.chars`` and ``<column>.oov``, binned as served (float64:
the gateway computes them from the strings it receives) with ``numeric_bins``.

Before profiling, the analyzer is checked against the vectorizer's own (``build_analyzer``)
on up to ``CHECK_DOCUMENTS`` training documents; a column whose terms differ gets no derived
features (it is profiled as categorical only), so the gateway never counts measures that do
not mean what the reference's do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from driftgate.converter.data import Table
from driftgate.converter.export import Layout
from driftgate.core.profile import FeatureProfile, ReferenceProfile, numeric_bins
from driftgate.core.text import KINDS, TextAnalyzer, reference_oov, text_values

__all__ = ["CHECK_DOCUMENTS", "MAX_VOCABULARY", "text_columns", "with_text_features"]

#: training documents the analyzer is checked on against scikit-learn's
CHECK_DOCUMENTS = 500
#: a larger vocabulary is not copied into reference.json: the column gets no "oov" feature
MAX_VOCABULARY = 200_000
#: the dtype the derived measures are binned in (computed in float64 on both sides)
DERIVED_DTYPE = "float64"


def _vectorizers(estimator: Any, table: Table) -> Iterator[tuple[str, Any]]:
    """(column name, fitted vectorizer) of each text column: of a leading ColumnTransformer,
    or the one column of a Pipeline that starts with a vectorizer."""
    steps = getattr(estimator, "steps", None)
    first = steps[0][1] if steps else None
    if hasattr(first, "vocabulary_") and len(table.names) == 1:
        yield table.names[0], first
        return
    for _, part, columns in getattr(first, "transformers_", None) or []:
        if isinstance(columns, str) and hasattr(part, "vocabulary_"):
            yield columns, part


def _analyzer(vectorizer: Any) -> TextAnalyzer | None:
    """Our copy of the vectorizer's word analyzer, None if it has anything we do not copy."""
    if (
        vectorizer.analyzer != "word"
        or vectorizer.tokenizer is not None
        or vectorizer.preprocessor is not None
        or vectorizer.strip_accents is not None
    ):
        return None
    stop = vectorizer.get_stop_words() or ()
    vocabulary = sorted(vectorizer.vocabulary_)
    return TextAnalyzer(
        token_pattern=vectorizer.token_pattern,
        lowercase=bool(vectorizer.lowercase),
        ngram_range=tuple(vectorizer.ngram_range),
        stop_words=tuple(sorted(stop)),
        vocabulary=tuple(vocabulary) if len(vocabulary) <= MAX_VOCABULARY else (),
    )


def _agrees(analyzer: TextAnalyzer, vectorizer: Any, documents: Any) -> bool:
    reference = vectorizer.build_analyzer()
    sample = [d for d in documents[:CHECK_DOCUMENTS] if isinstance(d, str)]
    return all(analyzer.terms(d) == reference(d) for d in sample)


def text_columns(estimator: Any, table: Table) -> list[tuple[str, TextAnalyzer, float]]:
    """(column, analyzer, min_df) of each text column whose analyzer we reproduce."""
    found = []
    for column, vectorizer in _vectorizers(estimator, table):
        analyzer = _analyzer(vectorizer)
        if analyzer is not None and _agrees(analyzer, vectorizer, table.column(column)):
            found.append((column, analyzer, vectorizer.min_df))
    return found


def _derived(
    column: str, spec: tuple[str, int], analyzer: TextAnalyzer, min_df: float, documents: Any,
    bins: int,
) -> list[FeatureProfile]:  # fmt: skip
    features = []
    for kind in KINDS:
        if kind == "oov" and not analyzer.vocabulary:
            continue
        if kind == "oov":
            values = reference_oov(analyzer, list(documents), min_df)
        else:
            values = text_values(kind, analyzer, documents)
        # tokens needs the analyzer only; oov the vocabulary too; chars neither.
        held = None if kind == "chars" else analyzer.to_dict()
        if held is not None and kind == "tokens":
            held["vocabulary"] = []
        features.append(
            FeatureProfile(
                f"{column}.{kind}",
                spec[0],
                spec[1],
                numeric_bins(values, bins, DERIVED_DTYPE),
                derived=kind,
                text=held,
            )  # fmt: skip
        )
    return features


def with_text_features(
    profile: ReferenceProfile, estimator: Any, table: Table, layout: Layout, bins: int
) -> ReferenceProfile:
    """``profile`` with the derived features of each text column appended."""
    where = {
        name: (spec.name, position)
        for spec in layout.inputs
        for position, name in enumerate(spec.features)
    }
    extra: list[FeatureProfile] = []
    for column, analyzer, min_df in text_columns(estimator, table):
        documents = np.asarray(table.column(column), dtype=object)
        extra += _derived(column, where[column], analyzer, min_df, documents, bins)
    if not extra:
        return profile
    return replace(profile, features=profile.features + tuple(extra))

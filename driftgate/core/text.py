"""Text columns: what the reference profile and the gateway measure of each document.

A string column that a model reads through scikit-learn's ``CountVectorizer`` or
``TfidfVectorizer`` (word analyzer) is free text: its values are nearly all distinct, so the
categorical profile of the column says little. Its drift is measured on three numbers per
document, each profiled and counted as a numeric feature named ``<column>.<kind>`` on frozen
bins by the one binning rule of ``driftgate.core.profile`` (the converter profiles them with
``text_values`` on the training documents, the gateway counts them with the same function on
the served ones):

- ``tokens``: the number of terms the vectorizer's analyzer makes of the document (after
  lowercasing, its token pattern, stop words and n-grams), fitted vocabulary or not;
- ``chars``: the document's length in characters;
- ``oov``: the share of those terms that are not in the fitted vocabulary (0 for an empty
  document). On the training documents themselves every term of a vocabulary fitted on them
  is known, which would make any new word look like drift; the reference is therefore
  measured leave-one-document-out: a term counts as unknown in a training document when the
  vocabulary would not hold it without that document (it is out of the vocabulary, or the
  document is the only one it appears in, or one of exactly ``min_df`` when ``min_df`` is a
  count above 1), the rate a new document of the same distribution sees. ``max_df`` and
  ``max_features`` pruning are taken as fitted.

Each document is analyzed up to ``MAX_TEXT_CHARS`` characters on both sides (a longer one
counts its full length in ``chars``), so the gateway's bulk count of a document is bounded
(``benchmarks/text_statistics.py``: 6.5 us for the three measures of a document of 4 to 15
words, 140 us for one of 150 to 600 words).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KINDS", "MAX_TEXT_CHARS", "TextAnalyzer", "document_terms", "text_values"]

#: the per-document measures, in profile order
KINDS = ("tokens", "chars", "oov")
#: characters of a document that are analyzed (its full length still counts in ``chars``)
MAX_TEXT_CHARS = 10_000


@dataclass(frozen=True)
class TextAnalyzer:
    """scikit-learn's word analyzer (``build_analyzer`` of a vectorizer with
    ``analyzer="word"`` and no custom preprocessor or tokenizer), and the fitted vocabulary.

    Usage: ``TextAnalyzer.from_dict(profile_entry["text"]).terms("a document")``.
    """

    token_pattern: str
    lowercase: bool
    ngram_range: tuple[int, int]
    stop_words: tuple[str, ...]
    vocabulary: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", re.compile(self.token_pattern))
        object.__setattr__(self, "_stop", frozenset(self.stop_words))
        object.__setattr__(self, "_known", frozenset(self.vocabulary))

    def terms(self, document: str) -> list[str]:
        """The terms of ``document`` as the vectorizer's analyzer makes them."""
        text = document[:MAX_TEXT_CHARS]
        if self.lowercase:
            text = text.lower()
        tokens: list[str] = self._pattern.findall(text)  # type: ignore[attr-defined]
        stop: frozenset[str] = self._stop  # type: ignore[attr-defined]
        if stop:
            tokens = [t for t in tokens if t not in stop]
        low, high = self.ngram_range
        if high == 1:
            return tokens
        out = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return out

    def known(self, term: str) -> bool:
        return term in self._known  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_pattern": self.token_pattern,
            "lowercase": self.lowercase,
            "ngram_range": list(self.ngram_range),
            "stop_words": list(self.stop_words),
            "vocabulary": list(self.vocabulary),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextAnalyzer:
        low, high = (int(n) for n in data["ngram_range"])
        return cls(
            token_pattern=str(data["token_pattern"]),
            lowercase=bool(data["lowercase"]),
            ngram_range=(low, high),
            stop_words=tuple(str(w) for w in data.get("stop_words", ())),
            vocabulary=tuple(str(w) for w in data["vocabulary"]),
        )


def _document(value: Any) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


def document_terms(analyzer: TextAnalyzer, documents: Iterable[Any]) -> list[list[str]]:
    """Each document's terms, to measure several kinds of one column from one analysis (the
    terms depend on the analyzer's settings, not on its vocabulary)."""
    return [analyzer.terms(_document(d)) for d in documents]


def text_values(
    kind: str,
    analyzer: TextAnalyzer,
    documents: Iterable[Any],
    terms: Sequence[list[str]] | None = None,
) -> npt.NDArray[np.float64]:
    """One ``kind`` measure (``KINDS``) per document, as served (see the module docstring);
    ``terms``: the documents' ``document_terms``, when already made."""
    docs = [_document(d) for d in documents]
    if kind == "chars":
        return np.fromiter((len(d) for d in docs), dtype=np.float64, count=len(docs))
    if terms is None:
        terms = document_terms(analyzer, docs)
    counts = np.fromiter((len(t) for t in terms), dtype=np.float64, count=len(docs))
    unknown = np.zeros(len(docs), dtype=np.float64)
    if kind == "oov":
        for i, made in enumerate(terms):
            unknown[i] = sum(not analyzer.known(t) for t in made)
    if kind == "tokens":
        return counts
    if kind != "oov":
        raise ValueError(f"unknown text measure {kind!r}; expected one of {KINDS}")
    return np.divide(unknown, counts, out=np.zeros_like(counts), where=counts > 0)


def reference_oov(
    analyzer: TextAnalyzer, documents: Sequence[Any], min_df: float
) -> npt.NDArray[np.float64]:
    """Each training document's share of unknown terms, leave-one-document-out."""
    docs = [_document(d) for d in documents]
    per_doc = [analyzer.terms(d) for d in docs]
    frequency = Counter(t for terms in per_doc for t in set(terms))
    floor = max(math.ceil(min_df * len(docs)) if isinstance(min_df, float) else int(min_df), 1)
    out = np.zeros(len(docs), dtype=np.float64)
    for i, terms in enumerate(per_doc):
        if terms:
            unknown = sum(not analyzer.known(t) or frequency[t] - 1 < floor for t in terms)
            out[i] = unknown / len(terms)
    return out

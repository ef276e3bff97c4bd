"""Categorical user features: raw values -> integer codes, with the vocabulary kept by the model.

A vocabulary is one sorted list of the raw values (as text) seen per categorical column when a model
is trained; code 0 is reserved for a value the model never saw, so a new category at serving time
or in another log maps to "unknown" rather than to some other category's embedding.
"""

from __future__ import annotations

import numpy as np

Vocabulary = list[list[str]]
"""Per categorical column, its known raw values (as strings), sorted; code = index + 1."""


def build_vocabulary(raw: np.ndarray) -> Vocabulary:
    """The vocabulary of raw values (n, C) (any dtype; compared as text)."""
    text = np.asarray(raw).astype(str)
    return [sorted(set(text[:, c].tolist())) for c in range(text.shape[1])]


def encode(raw: np.ndarray, vocabulary: Vocabulary) -> np.ndarray:
    """(n, C) int64 codes of raw values (n, C) under ``vocabulary``: 1 + index of the value, 0 if unknown."""
    text = np.asarray(raw).astype(str)
    if text.ndim != 2 or text.shape[1] != len(vocabulary):
        raise ValueError(
            f"categorical_features: expected {len(vocabulary)} columns, got {text.shape[1] if text.ndim == 2 else text.shape}"
        )
    out = np.zeros(text.shape, dtype=np.int64)
    for c, values in enumerate(vocabulary):
        known = np.asarray(values, dtype=str)
        idx = np.searchsorted(known, text[:, c])
        hit = (
            (idx < len(known)) & (known[np.minimum(idx, len(known) - 1)] == text[:, c])
            if len(known)
            else idx < 0
        )
        out[:, c] = np.where(hit, idx + 1, 0)
    return out


def cardinalities(vocabulary: Vocabulary) -> list[int]:
    """Embedding rows each column needs: its known values + the unknown code."""
    return [len(v) + 1 for v in vocabulary]

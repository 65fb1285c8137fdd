"""Checks and Matryoshka slicing for the float32 arrays handed to FAISS."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidQuery, InvalidVector

EMBED_DIM = 512
SHORTLIST_DIM = 64
MATRYOSHKA_DIMS = (64, 128, 256, 512)
_MIN_NORM = 1e-12


def as_unit_matrix(vectors: Any, *, what: str = "vector") -> np.ndarray:
    """Validate and L2-normalise a batch of full embeddings.

    vectors: (N, 512) array-like of real numbers.
    Returns a new C-contiguous float32 array (N, 512) with unit rows.
    Raises InvalidVector naming the problem (shape, dtype, NaN/inf, zero row).
    """
    try:
        array = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidVector(f"{what} is not a numeric array: {exc}") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise InvalidVector(f"{what} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != EMBED_DIM:
        raise InvalidVector(f"{what} must have shape (N, {EMBED_DIM}), got {tuple(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise InvalidVector(f"{what} row {bad} contains NaN or infinity")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms < _MIN_NORM).any():
        bad = int(np.flatnonzero(norms[:, 0] < _MIN_NORM)[0])
        raise InvalidVector(f"{what} row {bad} is all zeros; it has no direction")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def check_dims(dims: Any) -> int:
    """Return `dims` if it is one of MATRYOSHKA_DIMS, else raise InvalidQuery."""
    if (
        isinstance(dims, bool)
        or not isinstance(dims, int | np.integer)
        or (int(dims) not in MATRYOSHKA_DIMS)
    ):
        raise InvalidQuery(f"dims must be one of {list(MATRYOSHKA_DIMS)}, got {dims!r}")
    return int(dims)


def truncate(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Matryoshka slice: (N, 512) -> (N, dims) float32, first `dims` columns renormalised.

    A row whose prefix is all zeros stays zero (it scores 0 against everything).
    """
    if dims == vectors.shape[1]:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    head = np.array(vectors[:, :dims], dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    np.maximum(norms, _MIN_NORM, out=norms)
    head /= norms
    return head

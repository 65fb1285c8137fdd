"""Fixtures for the index tests: seeded vectors, a store factory, brute-force ground truth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from index import IndexConfig, VectorStore
from index.vectors import truncate


@pytest.fixture
def unit_vectors() -> Callable[[int, int], np.ndarray]:
    """make(n, seed) -> (n, 512) float32 random unit vectors."""

    def make(n: int, seed: int = 0) -> np.ndarray:
        x = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return make


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., VectorStore]]:
    """open_store(config=None, name="data") opens a store under tmp_path; all closed at the end."""
    opened: list[VectorStore] = []

    def make(config: IndexConfig | None = None, name: str = "data") -> VectorStore:
        store = VectorStore.open(tmp_path / name, config or IndexConfig())
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def brute_force() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """top_k(matrix (N,512), query (512,), k, dims) -> (rows (k,), scores (k,)) by exact cosine."""

    def top_k(
        matrix: np.ndarray, query: np.ndarray, k: int, dims: int
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = truncate(matrix, dims) @ truncate(query[None, :], dims)[0]
        rows = np.argsort(-scores, kind="stable")[:k]
        return rows, scores[rows]

    return top_k

"""Fixtures for the index tests: seeded vectors, a store factory, brute-force ground truth."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from index import IndexConfig, VectorBackend, VectorStore
from index.pg import PostgresConfig, PostgresStore
from index.vectors import truncate

BACKENDS = ("local", "postgres")
_schemas = itertools.count()


@pytest.fixture
def unit_vectors() -> Callable[[int, int], np.ndarray]:
    """make(n, seed) -> (n, 512) float32 random unit vectors."""

    def make(n: int, seed: int = 0) -> np.ndarray:
        x = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return make


@pytest.fixture
def open_local_store(tmp_path: Path) -> Iterator[Callable[..., VectorStore]]:
    """open_local_store(config=None, name="data"): a FAISS+SQLite store under tmp_path."""
    opened: list[VectorStore] = []

    def make(config: IndexConfig | None = None, name: str = "data") -> VectorStore:
        store = VectorStore.open(tmp_path / name, config or IndexConfig())
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def postgres_config(config: IndexConfig, schema: str) -> PostgresConfig:
    """The PostgresConfig matching an IndexConfig's backend-neutral settings."""
    return PostgresConfig(
        kind=config.kind,
        max_k=config.max_k,
        adaptive_factor=config.adaptive_factor,
        adaptive_min_shortlist=config.adaptive_min_shortlist,
        schema=schema,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which backend a contract test runs on: every such test runs on both."""
    return request.param


@pytest.fixture
def open_store(
    backend: str, request: pytest.FixtureRequest, open_local_store
) -> Iterator[Callable[..., VectorBackend]]:
    """open_store(config=None, name="data") opens a store of the test's backend.

    Postgres: a schema of its own per (test, name) in the module's database; only the
    backend-neutral settings of the IndexConfig apply (kind, max_k, adaptive_factor,
    adaptive_min_shortlist).
    """
    if backend == "local":
        yield open_local_store
        return
    url = request.getfixturevalue("postgres_url")
    schemas: dict[str, str] = {}  # reopening a name opens the same collection again
    opened: list[PostgresStore] = []

    def make(config: IndexConfig | None = None, name: str = "data") -> PostgresStore:
        schema = schemas.setdefault(name, f"t{next(_schemas)}_{name}")
        store = PostgresStore.open(url, postgres_config(config or IndexConfig(), schema))
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

"""Adaptive (funnel) search: a 64-d shortlist re-ranked at 512 dims recovers the 512-d answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from index import IndexConfig, NewItem
from index.errors import StoreError
from index.faiss_index import MatryoshkaIndexes
from index.synthetic import matryoshka_like, queries_like


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.fixture(scope="module")
def dataset():
    """20k Matryoshka-like items in 500 clusters and 200 queries from the same clusters."""
    return matryoshka_like(20_000, clusters=500, seed=7), queries_like(200, clusters=500, seed=7)


@pytest.fixture(scope="module")
def indexes(dataset):
    """The dataset in bare FAISS indexes (no SQLite), labels 1..N."""
    x, _ = dataset
    built = MatryoshkaIndexes(IndexConfig())
    built.add(np.arange(1, len(x) + 1, dtype=np.int64), x)
    return built


def test_adaptive_recall_against_exact_512(open_store, dataset):
    x, queries = dataset
    store = open_store()
    store.add_many([NewItem(v, "text", id=str(i)) for i, v in enumerate(x)])
    truth = [[h.id for h in hits] for hits in store.search_batch(queries, k=10, dims=512)]
    adaptive = store.search_batch(queries, k=10, dims=512, mode="adaptive")
    only_64 = store.search_batch(queries, k=10, dims=64)
    recall_adaptive = _recall([[h.id for h in hits] for hits in adaptive], truth)
    recall_64 = _recall([[h.id for h in hits] for hits in only_64], truth)
    assert recall_adaptive >= 0.97
    # the set is not trivial: 64 dims alone miss much of the 512-d top 10
    assert recall_64 < 0.9
    # re-ranked scores are the exact 512-d cosines
    exact = store.search_batch(queries[:5], k=10, dims=512)
    for a, e in zip(adaptive[:5], exact, strict=True):
        common = {h.id: h.score for h in e}
        for hit in a:
            if hit.id in common:
                assert hit.score == pytest.approx(common[hit.id], abs=1e-5)


def test_adaptive_factor_controls_the_shortlist(indexes, dataset):
    _, queries = dataset
    _, truth = indexes.search(queries, k=10, dims=512, adaptive=False)
    recalls = {}
    for factor in (1, 10):
        narrowed = MatryoshkaIndexes(
            dataclasses.replace(indexes.config, adaptive_factor=factor, adaptive_min_shortlist=1)
        )
        narrowed.index64, narrowed.index512 = indexes.index64, indexes.index512
        _, found = narrowed.search(queries, k=10, dims=512, adaptive=True)
        recalls[factor] = _recall(found.tolist(), truth.tolist())
    assert recalls[1] < 0.9 and recalls[10] >= 0.97


@pytest.mark.parametrize("dims", [128, 256])
def test_adaptive_at_intermediate_dims_matches_exact_there(indexes, dataset, dims):
    _, queries = dataset
    _, truth = indexes.search(queries, k=10, dims=dims, adaptive=False)
    _, found = indexes.search(queries, k=10, dims=dims, adaptive=True)
    assert _recall(found.tolist(), truth.tolist()) >= 0.97


def _unit(weights: dict[int, float]) -> np.ndarray:
    v = np.zeros(512, np.float32)
    for axis, w in weights.items():
        v[axis] = w
    return v / np.linalg.norm(v)


def test_a_small_k_still_reranks_a_shortlist_of_a_hundred(open_store):
    """k=1 at factor 10 would re-rank 10 candidates: an item the 64-d prefix puts 51st
    but 512 dims put first is lost (photographs at k=1 lost half their R@1 so). The
    shortlist is never shorter than adaptive_min_shortlist (default 100)."""
    query = _unit({0: 1.0, 100: 1.0})
    target = _unit({0: 0.1, 1: 0.3, 100: 0.95})  # prefix far from the query's, tail close
    decoys = [_unit({0: 1.0, 2 + i: 0.1, 200 + i: 0.9}) for i in range(50)]
    assert float(target @ query) > max(float(d @ query) for d in decoys)
    for floor, found in ((100, True), (10, False)):
        store = open_store(IndexConfig(adaptive_min_shortlist=floor), name=f"floor{floor}")
        target_id, *_ = store.add_many([NewItem(v, "text") for v in [target, *decoys]])
        (hit,) = store.search(query, k=1, dims=512, mode="adaptive")
        assert (hit.id == target_id) is found, floor
        (exact,) = store.search(query, k=1, dims=512, mode="exact")
        assert exact.id == target_id


def test_the_shortlist_floor_must_be_positive():
    with pytest.raises(StoreError, match="adaptive_min_shortlist"):
        IndexConfig(adaptive_min_shortlist=0)

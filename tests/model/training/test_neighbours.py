"""Neighbour batches: each seed comes with its true nearest sentences under the teacher."""

from __future__ import annotations

import numpy as np
import pytest

from model.training.neighbours import NeighbourBatches, nearest_neighbours


def test_nearest_neighbours_match_a_brute_force_ranking_in_any_chunking() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(300, 16)).astype(np.float32) * rng.uniform(0.5, 3.0, (300, 1))
    unit = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1)[:, :5]
    for chunk in (7, 64, 1000):
        got = nearest_neighbours(teacher, 5, chunk=chunk)
        assert got.shape == (300, 5)
        np.testing.assert_array_equal(got, expected)  # nearest first, never itself
    with pytest.raises(ValueError, match="k must be between 1 and 299"):
        nearest_neighbours(teacher, 300)


def test_a_batch_is_its_seeds_and_their_neighbours_each_once() -> None:
    # Ten tight clusters of six: every sentence's five neighbours are its cluster.
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 32))
    teacher = np.repeat(centres, 6, axis=0) + 0.01 * rng.normal(size=(60, 32))
    ids = [f"text|s{i}" for i in range(60)]
    batches = NeighbourBatches(ids, teacher, k=5, seed=2)
    rows = batches.sample(seeds=3)
    clusters = rows // 6
    assert len(rows) == len(set(rows.tolist()))
    assert len(set(clusters.tolist())) <= 3 and len(rows) % 6 == 0  # whole clusters only
    assert NeighbourBatches(ids, teacher, k=5, seed=2).sample(seeds=3).tolist() == rows.tolist()
    assert len(batches.sample(seeds=100)) == 60  # capped at N
    with pytest.raises(ValueError, match="59 ids for 60 teacher rows"):
        NeighbourBatches(ids[:59], teacher, k=5)

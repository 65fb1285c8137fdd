"""Seeded synthetic embeddings shaped like a Matryoshka model's output, for tests and benchmarks.

Matryoshka training front-loads information: the first 64 dims separate most
items, later dims refine. This generator imitates that: vectors are cluster
centres plus per-item noise, both scaled per dimension by a profile that is
flat over the first 64 dims and decays after, then L2-normalised. Near
neighbours therefore agree on their 64-d prefixes, but the tail still reorders
them, so a 64-d search alone misses some of the true 512-d top-k while a
64-d shortlist re-ranked at 512 dims recovers them.
"""

from __future__ import annotations

import numpy as np

from .vectors import EMBED_DIM, SHORTLIST_DIM


def dimension_profile(decay: float = 1.0) -> np.ndarray:
    """(512,) float32 scale per dimension: 1 over the first 64, then (d/64)**-decay."""
    dims = np.arange(EMBED_DIM, dtype=np.float32)
    tail = (np.maximum(dims, SHORTLIST_DIM) / SHORTLIST_DIM) ** -decay
    return np.where(dims < SHORTLIST_DIM, 1.0, tail).astype(np.float32)


def matryoshka_like(
    n: int,
    *,
    clusters: int = 1000,
    noise: float = 1.0,
    decay: float = 1.0,
    seed: int = 0,
    chunk: int = 100_000,
) -> np.ndarray:
    """n unit vectors (n, 512) float32 from `clusters` Gaussian clusters.

    noise: per-item noise relative to the spread of the centres.
    """
    rng = np.random.default_rng(seed)
    profile = dimension_profile(decay)
    centres = rng.standard_normal((clusters, EMBED_DIM), dtype=np.float32)
    out = np.empty((n, EMBED_DIM), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        members = rng.integers(0, clusters, size=stop - start)
        block = centres[members]
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        block *= profile
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def queries_like(
    n: int, *, clusters: int = 1000, noise: float = 1.0, decay: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Queries from the same clusters as `matryoshka_like(seed=seed)` (fresh noise): (n, 512)."""
    rng = np.random.default_rng(seed)
    profile = dimension_profile(decay)
    centres = rng.standard_normal((clusters, EMBED_DIM), dtype=np.float32)
    noise_rng = np.random.default_rng(seed + 1_000_003)
    members = noise_rng.integers(0, clusters, size=n)
    block = centres[members] + noise * noise_rng.standard_normal((n, EMBED_DIM), dtype=np.float32)
    block *= profile
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block.astype(np.float32)

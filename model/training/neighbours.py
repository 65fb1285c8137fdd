"""Groups of training sentences that are each other's nearest neighbours under the
text encoder: the batches that teach the text path its teacher's fine neighbourhoods.

In a batch of random sentences every pair is far apart, so distilling the
teacher's similarities there (:func:`~model.training.losses.similarity_distillation`)
teaches only coarse structure, and the text embeddings lose which sentences are
*nearest* (issue 11 measured 0.116 of MiniLM's 10 nearest kept). A batch built
from a few seed sentences and each one's nearest neighbours puts the rankings
that matter inside the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_neighbours(teacher: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Each row's ``k`` nearest other rows by cosine, nearest first: (N, k) int64.

    Computed in chunks of rows, so memory stays at ``chunk x N`` similarities.
    """
    n = teacher.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and {n - 1}; got {k}")
    unit = teacher / np.maximum(np.linalg.norm(teacher, axis=1, keepdims=True), 1e-12)
    unit = unit.astype(np.float32)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sim = unit[start : start + chunk] @ unit.T  # (c, N)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


class NeighbourBatches:
    """Draws batches of sentences made of seed sentences and their nearest neighbours.

    Args:
        ids: the distinct sentences (cache ids), (N,).
        teacher: their teacher embeddings, (N, D).
        k: neighbours per seed.
        seed: of the batches' own generator, so that drawing them leaves every other
            random draw of a training step (augmentation) as it would be without them.
    """

    def __init__(self, ids: Sequence[str], teacher: np.ndarray, k: int, seed: int = 0) -> None:
        if len(ids) != teacher.shape[0]:
            raise ValueError(f"{len(ids)} ids for {teacher.shape[0]} teacher rows")
        self.ids = list(ids)
        self.teacher = np.asarray(teacher, dtype=np.float32)
        self.neighbours = nearest_neighbours(self.teacher, k)
        self.rng = np.random.default_rng(seed)

    def sample(self, seeds: int) -> np.ndarray:
        """Row indices of ``seeds`` random sentences and each one's neighbours, each once."""
        chosen = self.rng.choice(len(self.ids), size=min(seeds, len(self.ids)), replace=False)
        rows = np.concatenate([chosen[:, None], self.neighbours[chosen]], axis=1).reshape(-1)
        return np.asarray(list(dict.fromkeys(rows.tolist())), dtype=np.int64)

"""Training pairs whose features are cached, and batches that never repeat a caption group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.training.data import Pair, PairSet, SkipReport, read_dataset
from model.training.features import FeatureCache, item_id, text_item_id


def load_split(specs: Sequence[str], limit: int | None = None) -> PairSet:
    """The pairs of several dataset specs, in order; the first ``limit`` only if given."""
    merged = PairSet([])
    for spec in specs:
        part = read_dataset(spec)
        merged.pairs.extend(part.pairs)
        merged.skipped.extend(part.skipped)
    if limit is not None:
        merged.pairs = merged.pairs[:limit]
    return merged


@dataclass
class CachedPairs:
    """Pairs whose media and caption features are in the caches, as parallel lists."""

    pairs: list[Pair]
    media_ids: list[str]
    text_ids: list[str]
    groups: np.ndarray  # (N,) int64 caption group

    def __len__(self) -> int:
        return len(self.pairs)


def cached_pairs(
    pairs: Sequence[Pair], caches: dict[str, FeatureCache]
) -> tuple[CachedPairs, SkipReport]:
    """Keep the pairs whose features are cached; report the others (unreadable media)."""
    skipped = SkipReport()
    kept: list[Pair] = []
    media_ids: list[str] = []
    text_ids: list[str] = []
    for pair in pairs:
        try:
            mid = item_id(pair)
        except OSError:
            skipped.add(pair.origin, f"missing file {pair.path}")
            continue
        tid = text_item_id(pair.text)
        if mid not in caches[pair.modality]:
            skipped.add(pair.origin, "no cached features (media could not be encoded)")
            continue
        if tid not in caches["text"]:
            skipped.add(pair.origin, "no cached caption features")
            continue
        kept.append(pair)
        media_ids.append(mid)
        text_ids.append(tid)
    index: dict[str, int] = {}
    groups = np.array([index.setdefault(p.group, len(index)) for p in kept], dtype=np.int64)
    return CachedPairs(kept, media_ids, text_ids, groups), skipped


def unique_group_batches(
    groups: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """A shuffled epoch of index batches, none holding two items of one group.

    An item whose group is already in the batch being filled waits for the
    next batch. The last batch may be smaller; batches of one item are dropped.
    """
    pending = rng.permutation(len(groups)).tolist()
    batches: list[np.ndarray] = []
    while pending:
        batch: list[int] = []
        seen: set[int] = set()
        rest: list[int] = []
        for pos, idx in enumerate(pending):
            if len(batch) == batch_size:
                rest.extend(pending[pos:])
                break
            g = int(groups[idx])
            if g in seen:
                rest.append(idx)
            else:
                seen.add(g)
                batch.append(idx)
        if len(batch) > 1:
            batches.append(np.array(batch))
        elif len(rest) == len(pending):
            break
        pending = rest
    return batches

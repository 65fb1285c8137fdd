"""Retrieval evaluation: R@1, R@5, R@10 and MRR in both directions, at each Matryoshka dim.

For a set of (media, caption) pairs, media and captions are embedded; each
direction ranks a gallery for every query:

- ``audio->text``: one query per clip, the gallery is the distinct captions;
- ``text->audio``: one query per distinct caption, the gallery is every clip;
  any clip of that caption is a correct answer.

Relevance is by caption group (:attr:`model.training.data.Pair.group`), so several
clips of one sentence are never counted as each other's false negatives.
The rank of a query is the number of gallery items scoring strictly higher
than its best correct item (ties resolve in the query's favour); R@k is the
share of queries with rank < k and MRR the mean of 1 / (rank + 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.constants import EMBED_DIM, MATRYOSHKA_DIMS
from model.matryoshka import truncate
from model.training.features import FeatureCache, collate
from model.training.runtime import autocast

if TYPE_CHECKING:
    from model.training.pairs import CachedPairs
    from model.training.trainable import AlignmentModel

KS: tuple[int, ...] = (1, 5, 10)


def first_relevant_ranks(
    sim: np.ndarray, query_groups: np.ndarray, gallery_groups: np.ndarray
) -> np.ndarray:
    """0-based rank of each query's best-scoring relevant gallery item.

    Args:
        sim: (Q, G) similarities.
        query_groups: (Q,) group id of each query.
        gallery_groups: (G,) group id of each gallery item.

    Returns:
        (Q,) int64: how many gallery items score strictly above the best relevant one.
    """
    relevant = query_groups[:, None] == gallery_groups[None, :]  # (Q, G)
    if not relevant.any(axis=1).all():
        missing = int(np.flatnonzero(~relevant.any(axis=1))[0])
        raise ValueError(f"query {missing} has no relevant item in the gallery")
    best = np.where(relevant, sim, -np.inf).max(axis=1)  # (Q,)
    return (sim > best[:, None]).sum(axis=1).astype(np.int64)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@k for each k and MRR from 0-based ranks."""
    out = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / (ranks + 1.0)))
    return out


def chance_r1(query_groups: np.ndarray, gallery_groups: np.ndarray) -> float:
    """Expected R@1 of a random ranking: mean share of relevant items in the gallery."""
    relevant = query_groups[:, None] == gallery_groups[None, :]
    return float(relevant.mean(axis=1).mean())


def retrieval_report(
    media: np.ndarray,
    texts: np.ndarray,
    media_groups: np.ndarray,
    text_groups: np.ndarray,
    *,
    media_name: str,
    dims: Sequence[int] = MATRYOSHKA_DIMS,
) -> dict[str, dict[str, dict[str, float]]]:
    """Both directions of one modality pair at each dim.

    Args:
        media: (N, 512) unit embeddings of the media items.
        texts: (M, 512) unit embeddings of the distinct captions.
        media_groups: (N,) caption group of each media item.
        text_groups: (M,) group of each caption.
        media_name: "audio" or "image".

    Returns:
        ``{"audio->text": {"512": {"R@1": ..., ...}, ...}, "text->audio": {...}}``
    """
    report: dict[str, dict[str, dict[str, float]]] = {
        f"{media_name}->text": {},
        f"text->{media_name}": {},
    }
    for d in dims:
        m, t = truncate(media, d), truncate(texts, d)
        sim = m @ t.T  # (N, M)
        report[f"{media_name}->text"][str(d)] = metrics_from_ranks(
            first_relevant_ranks(sim, media_groups, text_groups)
        )
        report[f"text->{media_name}"][str(d)] = metrics_from_ranks(
            first_relevant_ranks(sim.T, text_groups, media_groups)
        )
    return report


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], title: str = "") -> str:
    """Markdown table: one row per direction and dim."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| direction | dims | R@1 | R@5 | R@10 | MRR |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for direction, by_dim in results.items():
        for d, m in sorted(by_dim.items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {direction} | {d} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} "
                f"| {m['MRR']:.3f} |"
            )
    return "\n".join(lines)


@torch.no_grad()
def embed_cached(
    model: AlignmentModel,
    modality: str,
    cache: FeatureCache,
    ids: Sequence[str],
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings (N, 512) float32 of cached items, in eval mode, batched by length."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: cache.length(ids[i]))
    out = np.zeros((len(ids), EMBED_DIM), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tokens, mask = collate([cache.get(ids[i]) for i in chunk])
        with autocast(device):
            emb = model.forward_features(
                modality, tokens.to(device), mask.to(device), with_llm_tokens=False
            ).embedding
        out[chunk] = emb.float().cpu().numpy()
    model.train(was_training)
    return out


def evaluate_cached(
    model: AlignmentModel,
    data: CachedPairs,
    caches: dict[str, FeatureCache],
    device: torch.device,
) -> dict[str, dict[str, dict[str, float]]]:
    """Retrieval report of every media modality against the captions of ``data``."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for modality in sorted({p.modality for p in data.pairs}):
        rows = [i for i, p in enumerate(data.pairs) if p.modality == modality]
        media = embed_cached(
            model, modality, caches[modality], [data.media_ids[i] for i in rows], device
        )
        first: dict[int, int] = {}
        for i in rows:
            first.setdefault(int(data.groups[i]), i)
        text_rows = list(first.values())
        texts = embed_cached(
            model, "text", caches["text"], [data.text_ids[i] for i in text_rows], device
        )
        results.update(
            retrieval_report(
                media,
                texts,
                data.groups[rows],
                data.groups[text_rows],
                media_name=modality,
            )
        )
    return results


def score(results: dict[str, dict[str, dict[str, float]]]) -> float:
    """Model-selection score: mean R@1 at 512 dims over every direction."""
    values = [by_dim["512"]["R@1"] for by_dim in results.values() if "512" in by_dim]
    return float(np.mean(values)) if values else 0.0


def neighbourhood_recall(embeddings: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Share of each item's ``k`` nearest neighbours under ``reference`` that are also
    among its ``k`` nearest under ``embeddings`` (cosine; the item itself excluded).

    Both are (N, D) arrays of the same N items (widths may differ). 1.0 means the
    same neighbourhoods; chance is about k / (N - 1).
    """
    if embeddings.shape[0] != reference.shape[0]:
        raise ValueError(
            f"{embeddings.shape[0]} embeddings against {reference.shape[0]} reference rows"
        )
    n = embeddings.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be between 1 and {n - 1}; got {k}")

    def top_k(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k, axis=1)[:, :k]

    mine, theirs = top_k(embeddings), top_k(reference)
    hits = sum(len(set(a) & set(b)) for a, b in zip(mine, theirs, strict=True))
    return hits / (n * k)

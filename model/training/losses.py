"""Contrastive losses and embedding-space metrics.

- :func:`clip_loss`: symmetric InfoNCE over a batch of matched pairs.
- :class:`MatryoshkaLoss`: a base loss summed over truncated, renormalised prefixes
  (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss).
- :func:`alignment_uniformity`: Wang & Isola (2020) metrics of a paired embedding set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.constants import MATRYOSHKA_DIMS
from model.matryoshka import check_dims, truncate


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` should match row i of ``b`` and no other.

    Args:
        a, b: (B, D) embeddings (normalised here, so any scale works).
        logit_scale: 1 / temperature.

    Returns:
        0-d loss, the mean of the a->b and b->a cross-entropies (log B at chance).
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"clip_loss needs two (B, D) tensors of one shape; got {a.shape}, {b.shape}"
        )
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = logit_scale * a @ b.T  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class MatryoshkaLoss(nn.Module):
    """Sum of ``base_loss`` over the first d dims (renormalised) for each d in ``dims``.

    With the default dims the full 512-d loss is one of the terms. Weights default
    to 1 for every d.
    """

    def __init__(
        self,
        dims: Sequence[int] = MATRYOSHKA_DIMS,
        weights: Sequence[float] | None = None,
        base_loss: Callable[
            [torch.Tensor, torch.Tensor, torch.Tensor | float], torch.Tensor
        ] = clip_loss,
    ) -> None:
        super().__init__()
        dims = [check_dims(d) for d in dims]
        if not dims or len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct and non-empty; got {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} weights for {len(dims)} dims")
        order = sorted(range(len(dims)), key=lambda i: dims[i])
        self.dims = [dims[i] for i in order]
        self.weights = [weights[i] for i in order]
        self.base_loss = base_loss

    def components(
        self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> dict[int, torch.Tensor]:
        """{d: base loss at d dims}, unweighted."""
        return {d: self.base_loss(truncate(a, d), truncate(b, d), logit_scale) for d in self.dims}

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> torch.Tensor:
        parts = self.components(a, b, logit_scale)
        return sum(w * parts[d] for d, w in zip(self.dims, self.weights, strict=True))


@torch.no_grad()
def alignment_uniformity(a: torch.Tensor, b: torch.Tensor, t: float = 2.0) -> dict[str, float]:
    """Alignment and uniformity of paired unit embeddings (Wang & Isola 2020).

    alignment: mean squared distance of matched pairs (0 is perfect, 4 is opposite).
    uniformity: log of the mean Gaussian potential exp(-t |x - y|^2) over distinct
    pairs within each side, averaged over the two sides (lower is more uniform;
    -t*2 = -4 is the limit for points spread over a high-dimensional sphere).

    Args:
        a, b: (B, D), B >= 2.
    """
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(
            f"need two (B, D) tensors of one shape with B >= 2; got {a.shape}, {b.shape}"
        )
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    alignment = (a - b).pow(2).sum(dim=-1).mean()

    def uniformity(x: torch.Tensor) -> torch.Tensor:
        return torch.pdist(x).pow(2).mul(-t).exp().mean().log()

    ua, ub = uniformity(a), uniformity(b)
    return {
        "alignment": float(alignment),
        "uniformity": float((ua + ub) / 2),
        "uniformity_a": float(ua),
        "uniformity_b": float(ub),
    }


def similarity_distillation(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Keep the teacher's neighbourhoods: row-wise KL between in-batch similarity softmaxes.

    ``student`` (B, D) and ``teacher`` (B, D') are embeddings of the same B items
    (any widths; both are L2-normalised here). For each item, the distribution
    over the other B-1 items given by the teacher's cosine similarities is the
    target for the student's: KL(teacher || student), averaged over rows. It
    constrains only relative similarities, so the student keeps its own space
    while ranking neighbours as the teacher does. Self-similarity is masked.
    """
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student has {student.shape[0]} rows, teacher {teacher.shape[0]}; they must match"
        )
    if student.shape[0] < 2:
        return student.new_zeros(())
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    s_logits = (s @ s.T / temperature).masked_fill(eye, float("-inf"))
    t_logits = (t @ t.T / temperature).masked_fill(eye, float("-inf"))
    log_p_s = F.log_softmax(s_logits, dim=-1).masked_fill(eye, 0.0)
    p_t = F.softmax(t_logits, dim=-1)
    log_p_t = F.log_softmax(t_logits, dim=-1).masked_fill(eye, 0.0)
    return (p_t * (log_p_t - log_p_s)).sum(dim=-1).mean()

"""Per-modality MLP adapter, and frame pooling: maps one encoder's tokens into the resampler's width."""

from __future__ import annotations

import torch
from torch import nn

from model.config import AdapterConfig


class Adapter(nn.Module):
    """LayerNorm, Linear(D_enc, hidden_mult * D_enc), GELU, Dropout, Linear(., dim), per token.

    (B, T, D_enc) -> (B, T, dim).
    """

    def __init__(self, *, in_dim: int, out_dim: int, config: AdapterConfig) -> None:
        super().__init__()
        hidden = config.hidden_mult * in_dim
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def pool_frames(
    tokens: torch.Tensor, mask: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average tokens in non-overlapping groups of ``size``, ignoring padding.

    Args:
        tokens: (B, T, D).
        mask: (B, T) bool, True = real token.
        size: group size; 1 returns the inputs unchanged.

    Returns:
        tokens (B, ceil(T / size), D) and mask (B, ceil(T / size)); a group is
        real when any of its tokens is, and averages only its real tokens, so
        the result does not depend on how much padding follows a clip.
    """
    if size == 1:
        return tokens, mask
    B, T, D = tokens.shape
    groups = -(-T // size)
    pad = groups * size - T
    weights = mask.to(tokens.dtype)
    if pad:
        tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
        weights = torch.nn.functional.pad(weights, (0, pad))
    weights = weights.view(B, groups, size, 1)
    summed = (tokens.view(B, groups, size, D) * weights).sum(dim=2)  # (B, G, D)
    counts = weights.sum(dim=2)  # (B, G, 1)
    return summed / counts.clamp(min=1.0), counts.squeeze(-1) > 0

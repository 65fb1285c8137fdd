"""Operations on padded token batches: (B, T, D) tokens with a (B, T) mask, True = real."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def on_real_tokens(
    fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Apply a per-token ``fn`` to the real tokens only; padding rows come back as zeros.

    Args:
        fn: maps (n, D) to (n, D_out), row by row.
        tokens: (B, T, D).
        mask: (B, T) bool.

    Returns:
        (B, T, D_out). Padding is masked out downstream anyway, and in a batch of
        mixed lengths it can be most of the rows, so it is not computed.
    """
    real = fn(tokens[mask])  # (n_real, D_out)
    out = real.new_zeros(*mask.shape, real.shape[-1])
    out[mask] = real
    return out


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
        tokens = F.pad(tokens, (0, 0, 0, pad))
        weights = F.pad(weights, (0, pad))
    weights = weights.view(B, groups, size, 1)
    summed = (tokens.view(B, groups, size, D) * weights).sum(dim=2)  # (B, G, D)
    counts = weights.sum(dim=2)  # (B, G, 1)
    return summed / counts.clamp(min=1.0), counts.squeeze(-1) > 0


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens: (B, L, D) with a (B, L) mask -> (B, D).

    Applied to MiniLM's token outputs this is its own sentence embedding (before
    its L2 normalisation).
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

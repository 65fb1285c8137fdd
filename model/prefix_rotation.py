"""A learned rotation of the whole embedding that decides what its Matryoshka prefixes hold.

Every prefix of a blended vector was the two-sided branch's alone: its first 64 dims
carry 0.96 of what that branch's 256 do, and none of the locked branch's. A rotation
``R`` (orthogonal, 512 x 512) applied to every vector of every modality leaves every
512-dim similarity exactly as it was (``(Rx)·(Ry) = x·y``), while the first 64, 128
and 256 dims become the axes, drawn from both branches, that were trained to retrieve
(model/training/prefix_rotation.py). It is a fixed buffer of the model, stored in
float32: rounded to float16 it would no longer be orthogonal.
"""

from __future__ import annotations

import torch
from torch import nn


class PrefixRotation(nn.Module):
    """``x -> x Rᵀ`` on (..., D) vectors, and its inverse ``x -> x R``.

    Starts as the identity; a checkpoint loads the trained matrix into ``weight``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.to(x.dtype).T

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors as they were before the rotation."""
        return x @ self.weight.to(x.dtype)

    def set(self, rotation: torch.Tensor, tolerance: float = 1e-4) -> None:
        """Install ``rotation``; it must be orthogonal within ``tolerance``.

        Raises:
            ValueError: wrong shape, or not a rotation.
        """
        dim = self.weight.shape[0]
        if tuple(rotation.shape) != (dim, dim):
            raise ValueError(
                f"a prefix rotation must be ({dim}, {dim}); got {tuple(rotation.shape)}"
            )
        rotation = rotation.detach().to(torch.float32)
        error = (rotation @ rotation.T - torch.eye(dim)).abs().max().item()
        if error > tolerance:
            raise ValueError(f"the prefix rotation is not orthogonal (R Rᵀ - I up to {error:.2g})")
        self.weight.copy_(rotation)

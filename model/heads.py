"""Output heads on the resampler's latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AlignmentHead(nn.Module):
    """Mean-pool the latents, project, L2-normalise: (B, N, dim) -> (B, embed_dim) unit rows.

    No mask is needed: every latent is real.
    """

    def __init__(self, *, dim: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        pooled = latents.mean(dim=1)  # (B, dim)
        return F.normalize(self.proj(pooled), dim=-1)  # (B, embed_dim)


class LLMProjector(nn.Module):
    """Project each latent to an LLM's hidden size: (B, N, dim) -> (B, N, llm_dim) prefix tokens."""

    def __init__(self, *, dim: int, llm_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, llm_dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.proj(latents)

"""Output heads on the resampler's latents."""

from __future__ import annotations

import math

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


class Temperature(nn.Module):
    """Learnable softmax temperature (init 0.07), clamped from below at ``min_temperature``.

    The parameter is ``log(1 / temperature)`` as in CLIP; calling the module returns
    the logit scale ``1 / temperature`` clamped to at most ``1 / min_temperature``
    (100 for the default 0.01), where its gradient stops.
    """

    def __init__(self, *, init: float = 0.07, min_temperature: float = 0.01) -> None:
        super().__init__()
        self.max_scale = 1.0 / min_temperature
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))

    def forward(self) -> torch.Tensor:
        """The logit scale, a 0-d tensor."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def value(self) -> float:
        """The current temperature."""
        return float(1.0 / self.forward().detach())

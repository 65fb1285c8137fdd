"""Per-modality MLP adapter: maps one encoder's tokens into the resampler's width."""

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

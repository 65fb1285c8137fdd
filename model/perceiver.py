"""The Perceiver Resampler (Flamingo, Alayrac et al. 2022), shared by every modality.

A fixed set of learned latents reads a variable number of tokens through
cross-attention, so whatever the modality and length the output is
(B, num_latents, dim). Each layer: cross-attention from the latents to the tokens,
self-attention among the latents, a feed-forward block; pre-norm, residuals.

As in Flamingo, the keys and values of the cross-attention are the tokens *and*
the latents themselves (concatenated), so a latent can keep its own content.
This also means no query row is ever fully masked: even a batch row whose tokens
are all padding attends to the latents, so softmax never sees only -inf and
can never produce NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import PerceiverConfig
from model.tokens import on_real_tokens


class CrossAttention(nn.Module):
    """Latents (queries) attend to [tokens; latents] (keys/values), padding tokens masked out."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_latents = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(
        self, latents: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            latents: (B, N, D).
            tokens: (B, T, D).
            mask: (B, T) bool, True = real token.

        Returns:
            (B, N, D), the update to add to the latents.
        """
        B, N, D = latents.shape
        h = self.heads
        latents = self.norm_latents(latents)
        kv_tokens = on_real_tokens(
            lambda t: self.to_kv(self.norm_tokens(t)), tokens, mask
        )  # (B, T, 2D), zeros at padding (masked out below)
        kv = torch.cat([kv_tokens, self.to_kv(latents)], dim=1)  # (B, T+N, 2D)
        q = self.to_q(latents).view(B, N, h, D // h).transpose(1, 2)  # (B, h, N, hs)
        k, v = kv.chunk(2, dim=-1)  # (B, T+N, D) each
        k = k.view(B, -1, h, D // h).transpose(1, 2)  # (B, h, T+N, hs)
        v = v.view(B, -1, h, D // h).transpose(1, 2)  # (B, h, T+N, hs)
        keep = torch.cat([mask, mask.new_ones(B, N)], dim=1)  # (B, T+N)
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, T+N), True = attend
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, N, hs)
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.to_out(out)


class SelfAttention(nn.Module):
    """Latents attend to each other (no mask: every latent is real)."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D), the update to add to the latents."""
        B, N, D = latents.shape
        h = self.heads
        q, k, v = self.to_qkv(self.norm(latents)).chunk(3, dim=-1)  # (B, N, D) each
        q, k, v = (t.view(B, N, h, D // h).transpose(1, 2) for t in (q, k, v))  # (B, h, N, hs)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, N, hs)
        return self.to_out(out.transpose(1, 2).reshape(B, N, D))


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear(D, mult*D), GELU, Dropout, Linear(mult*D, D)."""

    def __init__(self, *, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, mult * dim, bias=False),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * dim, dim, bias=False),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


class PerceiverLayer(nn.Module):
    """Cross-attention to the tokens, self-attention among latents, feed-forward; residuals."""

    def __init__(self, *, config: PerceiverConfig) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(dim=config.dim, heads=config.heads, dropout=config.dropout)
        self.self_attn = SelfAttention(dim=config.dim, heads=config.heads, dropout=config.dropout)
        self.ff = FeedForward(dim=config.dim, mult=config.ff_mult, dropout=config.dropout)

    def forward(
        self, latents: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        latents = latents + self.cross_attn(latents, tokens, mask)
        latents = latents + self.self_attn(latents)
        latents = latents + self.ff(latents)
        return latents


class PerceiverResampler(nn.Module):
    """(B, T, D) tokens with a (B, T) mask -> (B, num_latents, D) latents."""

    def __init__(self, *, config: PerceiverConfig) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(config.num_latents, config.dim) * 0.02)
        self.layers = nn.ModuleList(PerceiverLayer(config=config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            tokens: (B, T, D) adapted encoder tokens; T may be 0.
            mask: (B, T) bool, True = real token; padding tokens have no influence.

        Returns:
            (B, num_latents, D).
        """
        B = tokens.shape[0]
        latents = self.latents.to(tokens.dtype).expand(B, -1, -1)  # (B, N, D)
        mask = mask.to(device=tokens.device, dtype=torch.bool)
        for layer in self.layers:
            latents = layer(latents, tokens, mask)
        return self.norm(latents)

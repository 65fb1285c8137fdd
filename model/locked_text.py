"""The locked text tower: the text encoder's own sentence embedding, turned onto its principal axes.

With ``ModelConfig.text_tower = "locked"`` the text path skips the adapter and
the resampler. A text's embedding is the text encoder's mean-pooled, unit
sentence embedding (MiniLM's own), multiplied by a fixed orthonormal matrix
and zero-padded from D_text to 512 dims. Only the other modalities train, onto
that fixed space, the way SONAR and SAMU-XLSR train speech encoders onto a
frozen text space. Text-to-text search then ranks exactly as the text encoder
does at full length. The matrix puts the text encoder's principal axes first
(fitted once on the training text by :meth:`LockedTextTower.fit`), so the
Matryoshka prefixes keep as much of its neighbourhoods as any linear map of
that size can (model/training/experiments.md, "A locked text tower").

The matrix is a buffer, not a parameter: checkpoints carry it, optimisers never
see it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.tokens import masked_mean


class LockedTextTower(nn.Module):
    """(B, T, D_text) encoder tokens -> (B, embed_dim) unit rows, with no trainable weights.

    ``rotation`` is (D_text, embed_dim): its first D_text columns are an orthonormal
    basis (principal axes first), the rest zero. Before :meth:`fit` it is the identity,
    so an unfitted tower still returns the text encoder's embedding, zero-padded.
    """

    def __init__(self, *, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        if text_dim > embed_dim:
            raise ValueError(
                f"a locked text tower pads the text encoder's {text_dim} dims to {embed_dim}; "
                "it cannot hold more dims than the embedding has"
            )
        self.text_dim = text_dim
        self.register_buffer("rotation", torch.eye(text_dim, embed_dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.rotate(masked_mean(tokens, mask))

    def rotate(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D_text) sentence embeddings (any norm) -> (B, embed_dim) unit rows."""
        pooled = F.normalize(pooled, dim=-1)
        rotation = self.rotation.to(pooled.dtype)
        return F.normalize(pooled @ rotation, dim=-1)  # (B, embed_dim)

    @torch.no_grad()
    def fit(self, sentence_embeddings: np.ndarray | torch.Tensor) -> None:
        """Set the rotation to the principal axes of ``sentence_embeddings`` (N, D_text).

        The embeddings are normalised and not centred: retrieval compares unit
        vectors by their dot product, and a rotation of them (unlike a centring)
        leaves every dot product as it was at full length.
        """
        x = torch.as_tensor(np.asarray(sentence_embeddings, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != self.text_dim:
            raise ValueError(f"need (N, {self.text_dim}) sentence embeddings; got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("fitting the principal axes needs at least one sentence")
        x = F.normalize(x, dim=-1)
        # (D_text, D_text) rows: the axes by variance; with fewer sentences than dims
        # the last ones complete the basis (any orthonormal completion will do).
        _, _, vt = torch.linalg.svd(x, full_matrices=True)
        # An axis's sign is arbitrary; fix it so a refit on the same data is the same.
        signs = torch.sign(vt.sum(dim=1, keepdim=True))
        signs[signs == 0] = 1.0
        rotation = torch.zeros_like(self.rotation, dtype=torch.float64)
        rotation[:, : self.text_dim] = (vt * signs).T
        self.rotation.copy_(rotation.to(self.rotation.dtype))

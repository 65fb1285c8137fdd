"""An auxiliary training objective that makes a clip's latents say which words it holds.

Contrastive loss alone separates a batch's 128 sentences by whatever differs most, and on
short test sentences the latents were found to carry little lexical identity (a probe
recovered only function words; experiments.md, phase 2). This head reads the mean of a
clip's resampler latents and predicts the bag of its sentence's tokens (the text
encoder's own vocabulary, special tokens left out): softmax cross-entropy against the
normalised token counts. It trains with the model and is then thrown away; a checkpoint
never holds it, so serving is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class BagOfWordsHead(nn.Module):
    """(B, N, dim) latents -> (B, vocab) logits over the sentence's tokens."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(latents.float().mean(dim=1)))


def bag_targets(
    token_ids: Sequence[Sequence[int]], vocab_size: int, ignore: set[int]
) -> torch.Tensor:
    """(B, vocab) normalised counts of each sentence's tokens, the `ignore` ids left out.

    A sentence with no token left gets an all-zero row, which adds nothing to the loss.
    """
    targets = torch.zeros(len(token_ids), vocab_size)
    for row, ids in enumerate(token_ids):
        kept = [i for i in ids if i not in ignore]
        if kept:
            targets[row].index_add_(
                0, torch.tensor(kept), torch.full((len(kept),), 1.0 / len(kept))
            )
    return targets


def bag_of_words_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the predicted token distribution against the bag, per sentence."""
    return -(targets.to(logits.device) * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


class BagOfWords:
    """The head, the tokenizer's ids of each training sentence (cached), and the loss."""

    def __init__(self, dim: int, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)  # type: ignore[arg-type]
        self.ignore = set(tokenizer.all_special_ids)  # type: ignore[attr-defined]
        self.head = BagOfWordsHead(dim, self.vocab_size)
        self._ids: dict[str, list[int]] = {}

    def token_ids(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return self._ids[text]

    def loss(self, latents: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        targets = bag_targets([self.token_ids(t) for t in texts], self.vocab_size, self.ignore)
        return bag_of_words_loss(self.head(latents), targets)

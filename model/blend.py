"""A blend: one vector from a two-sided branch and a branch trained onto a locked text tower.

The two-sided branch (the model's own adapters, resampler and head) retrieves
across modalities well but loses the text encoder's neighbourhoods; a branch
whose text is locked (model/locked_text.py) keeps them exactly but retrieves
worse (model/training/experiments.md, "A locked text tower"). Their errors
differ, so their concatenation retrieves better than either and, weighted
towards the locked part for text, keeps most of the neighbourhoods
(:class:`~model.config.BlendConfig`). Neither branch sees the other: each is
trained as a model of its own and :func:`compose` puts their weights into one
checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from model.adapters import Adapter
from model.config import AdapterConfig, BlendConfig, ModelConfig
from model.efficientnet import NUM_CLASSES
from model.heads import AlignmentHead
from model.image_labels import LabelPrior
from model.locked_text import LockedTextTower
from model.perceiver import PerceiverResampler
from model.tokens import on_real_tokens, pool_frames

BRANCH_PREFIX = "locked_branch."
# What a locked-text model's checkpoint gives a blend's second branch (its LLM
# projector and temperature are left out: the blend uses neither).
BRANCH_PARTS = (
    "adapters.",
    "resampler.",
    "alignment_head.",
    "text_tower.",
    "label_token.",
    "cascade_weight",
)


def build_adapters(
    config: ModelConfig, modalities: Iterable[str], dim: int, adapter: AdapterConfig
) -> nn.ModuleDict:
    """One :class:`Adapter` per modality, from its encoder's width to ``dim``."""
    return nn.ModuleDict(
        {
            m: Adapter(in_dim=config.encoders[m].hidden_size, out_dim=dim, config=adapter)
            for m in modalities
        }
    )


def resample(
    adapter: nn.Module,
    resampler: PerceiverResampler,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    frame_pool: int,
) -> torch.Tensor:
    """Adapter then resampler on encoder tokens: (B, T, D_enc) -> latents (B, N, dim).

    ``frame_pool`` > 1 first averages tokens in groups of that many (audio frames).
    """
    tokens, mask = pool_frames(tokens, mask, frame_pool)
    x = on_real_tokens(adapter, tokens, mask)  # (B, T', dim), zeros at padding
    return resampler(x, mask)


class LockedBranch(nn.Module):
    """The second branch of a blend: media through their own adapters and resampler onto
    a locked text tower; (B, T, D_enc) tokens -> (B, 512) unit rows.

    An image encoder with a classifier (EfficientNet-lite) adds the label path: its
    logits become the text encoder's embedding of the likely class names
    (:class:`~model.image_labels.LabelPrior`), which enters the resampler as one more
    token and is also added, rotated like a text, to the image's embedding with a
    learned weight. An untrained image path thus starts from the label cascade and
    learns what the classes miss.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        blend = config.blend
        if blend is None:
            raise ValueError("a locked branch needs the model config's blend settings")
        self.blend = blend
        dim = blend.perceiver.dim
        media = [m for m in config.modalities if m != "text"]
        self.adapters = build_adapters(config, media, dim, blend.adapter)
        self.resampler = PerceiverResampler(config=blend.perceiver)
        self.alignment_head = AlignmentHead(dim=dim, embed_dim=config.head.embed_dim)
        text_dim = config.encoders["text"].hidden_size
        self.text_tower = LockedTextTower(text_dim=text_dim, embed_dim=config.head.embed_dim)
        self.labelled = has_label_prior(config)
        if self.labelled:
            self.label_token = nn.Linear(text_dim, dim)
            self.cascade_weight = nn.Parameter(torch.tensor(1.0))

    def forward(
        self,
        modality: str,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embedding (B, 512), latents (B, N, dim) or None for text). ``prior``: the
        label prior of labelled images (B, D_text), from the model's ``labels``."""
        if modality == "text":
            return self.text_tower(tokens, mask), None
        if modality == "image" and self.labelled:
            if prior is None:
                raise ValueError("a labelled image needs its label prior")
            latents = labelled_latents(
                self.adapters["image"], self.label_token, self.resampler, tokens, mask, prior
            )
            trained = self.alignment_head(latents)
            cascade = self.text_tower.rotate(prior)
            return F.normalize(trained + self.cascade_weight * cascade, dim=-1), latents
        pool = self.blend.adapter.frame_pool(modality)
        latents = resample(self.adapters[modality], self.resampler, tokens, mask, pool)
        return self.alignment_head(latents), latents


def has_label_prior(config: ModelConfig) -> bool:
    """Whether images get a label prior: an image encoder with a classifier
    (EfficientNet-lite) and a text encoder to embed the class names with."""
    image = config.encoders.get("image")
    return image is not None and image.family == "efficientnet" and "text" in config.encoders


def label_prior(config: ModelConfig, top_k: int) -> LabelPrior:
    """An unfitted :class:`LabelPrior` in the text encoder's space."""
    return LabelPrior(
        num_labels=NUM_CLASSES, text_dim=config.encoders["text"].hidden_size, top_k=top_k
    )


def labelled_latents(
    adapter: nn.Module,
    label_token: nn.Module,
    resampler: PerceiverResampler,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    prior: torch.Tensor,
) -> torch.Tensor:
    """A labelled image's latents: the label prior as one token, then the adapted feature
    map (token 0 of the encoder carries the logits the prior came from)."""
    spatial = on_real_tokens(adapter, tokens[:, 1:], mask[:, 1:])
    label = label_token(prior.to(spatial.dtype)).unsqueeze(1)  # (B, 1, dim)
    return resampler(torch.cat([label, spatial], dim=1), mask)


def blend_embeddings(
    main: torch.Tensor | None,
    locked: torch.Tensor,
    blend: BlendConfig,
    *,
    modality: str,
) -> torch.Tensor:
    """``[sqrt(1 - w) * main[:512 - dims] | sqrt(w) * locked[:dims]]``, each part made unit
    first, then laid out as ``blend.prefix_main`` says; (B, 512) and (B, 512) -> (B, 512)
    unit rows. ``w`` is ``blend.weight_of(modality)``; ``main`` None (a modality only the
    locked branch embeds): ``w = 1``."""
    keep = locked.shape[-1] - blend.dims
    tail = F.normalize(locked[..., : blend.dims], dim=-1)
    if main is None:
        head = tail.new_zeros(*tail.shape[:-1], keep)
    else:
        weight = blend.weight_of(modality)
        head = F.normalize(main[..., :keep], dim=-1) * math.sqrt(1.0 - weight)
        tail = tail * math.sqrt(weight)
    return arrange(head, tail, blend)


def arrange(head: torch.Tensor, tail: torch.Tensor, blend: BlendConfig) -> torch.Tensor:
    """Interleave the two parts block by block (:meth:`BlendConfig.prefix_sizes`)."""
    parts, h, t = [], 0, 0
    for main, locked in blend.prefix_sizes():
        parts += [head[..., h : h + main], tail[..., t : t + locked]]
        h, t = h + main, t + locked
    return torch.cat(parts, dim=-1)


def compose_state(
    main: Mapping[str, torch.Tensor], locked: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The trainable tensors of a blend from its two models' (``trainable_state_dict()``)."""
    branch = {
        BRANCH_PREFIX + name: t for name, t in locked.items() if name.startswith(BRANCH_PARTS)
    }
    return {**main, **branch}


def blend_config(
    main: ModelConfig,
    locked: ModelConfig,
    *,
    dims: int,
    text_weight: float,
    media_weight: float,
) -> ModelConfig:
    """The config of the blend of a two-sided model and a locked-text model over the same
    encoders (ValueError where they cannot be blended)."""
    if main.text_tower != "trained" or main.blend is not None:
        raise ValueError("the main model of a blend must be a plain two-sided model")
    if locked.text_tower != "locked" or locked.blend is not None:
        raise ValueError("the second model of a blend must have a locked text tower")
    if main.encoders != locked.encoders:
        raise ValueError(
            "the two models of a blend must share their encoders; got "
            f"{ {m: e.identity for m, e in main.encoders.items()} } and "
            f"{ {m: e.identity for m, e in locked.encoders.items()} }"
        )
    blend = BlendConfig(
        dims=dims,
        text_weight=text_weight,
        media_weight=media_weight,
        adapter=locked.adapter,
        perceiver=locked.perceiver,
    )
    return dataclasses.replace(main, blend=blend)

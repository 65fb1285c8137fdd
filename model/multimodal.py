"""The multimodal model: frozen encoders, per-modality adapters, a shared resampler, heads.

The trainable part (adapters, resampler, heads, temperature) never sees raw
inputs: :meth:`MultimodalModel.encode` runs a frozen encoder under
``torch.inference_mode()`` and :meth:`MultimodalModel.forward_features` takes its
tokens, so encoder outputs can be cached once and reused by every epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.audio import valid_frames
from model.blend import (
    LockedBranch,
    blend_embeddings,
    build_adapters,
    has_label_prior,
    label_prior,
    labelled_latents,
    resample,
)
from model.config import ModelConfig, TranscriptConfig
from model.constants import MODALITIES, SAMPLE_RATE
from model.efficientnet import logits_of
from model.encoders import EncoderOutput, FrozenEncoder, build_encoder
from model.errors import InvalidInput, MissingModality
from model.heads import AlignmentHead, LLMProjector, Temperature
from model.locked_text import LockedTextTower
from model.perceiver import PerceiverResampler
from model.prefix_rotation import PrefixRotation
from model.transcripts import (
    Transcriber,
    build_transcriber,
    decode_chunks,
    mix_transcripts,
    window_frames,
)

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "encoders."
TRANSCRIBER_PREFIX = "transcriber."
# Parameters that never train and no checkpoint stores.
FROZEN_PREFIXES = (ENCODER_PREFIX, TRANSCRIBER_PREFIX)


@dataclass
class ModelOutput:
    """Output of the trainable path.

    Attributes:
        embedding: (B, 512) unit rows, the alignment embedding (Matryoshka-truncatable).
        latents: (B, num_latents, dim) the resampler's output; None for text when the
            text tower is locked (text then skips the resampler).
        llm_tokens: (B, num_latents, llm_dim) latents projected for an LLM (None when
            ``forward_features`` was asked not to compute them, or without latents).
        transcripts: audio through :meth:`MultimodalModel.forward` with a transcript
            decoder: what each clip was heard to say ("" for none); else None.
    """

    embedding: torch.Tensor
    latents: torch.Tensor | None
    llm_tokens: torch.Tensor | None
    transcripts: list[str] | None = None


class MultimodalModel(nn.Module):
    """Frozen encoders + trainable adapters, Perceiver Resampler and heads, from a :class:`ModelConfig`.

    With ``config.text_tower == "locked"`` text has no adapter: its embedding comes
    from :class:`~model.locked_text.LockedTextTower` (``self.text_tower``), and the
    resampler serves the other modalities only. With ``config.blend`` a second,
    locked-text branch (:class:`~model.blend.LockedBranch`, ``self.locked_branch``)
    fills the last dims of every embedding (model/blend.py). With
    ``config.transcript`` a frozen Whisper decoder (``self.transcriber``) transcribes
    each clip and its text vector is mixed into the clip's (model/transcripts.py).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.perceiver.dim
        self.encoders = nn.ModuleDict(
            {m: build_encoder(config.encoders[m]) for m in config.modalities}
        )
        locked_only = config.blend.locked_only if config.blend is not None else ()
        adapted = [
            m
            for m in config.modalities
            if not (m == "text" and self.text_locked) and m not in locked_only
        ]
        self.adapters = build_adapters(config, adapted, dim, config.adapter)
        self.text_tower = (
            LockedTextTower(
                text_dim=config.encoders["text"].hidden_size, embed_dim=config.head.embed_dim
            )
            if self.text_locked
            else None
        )
        self.locked_branch = LockedBranch(config) if config.blend is not None else None
        # Images from an encoder with a classifier (model/image_labels.py): the label
        # prior, shared by both branches, and the main branch's label token.
        self.labels = None
        if has_label_prior(config):
            top_k = config.blend.label_top_k if config.blend is not None else 5
            self.labels = label_prior(config, top_k)
            if "image" in self.adapters:
                self.label_token = nn.Linear(config.encoders["text"].hidden_size, dim)
        self.resampler = PerceiverResampler(config=config.perceiver)
        self.alignment_head = AlignmentHead(dim=dim, embed_dim=config.head.embed_dim)
        self.llm_projector = LLMProjector(dim=dim, llm_dim=config.head.llm_dim)
        self.temperature = Temperature(
            init=config.init_temperature, min_temperature=config.min_temperature
        )
        self.transcriber: Transcriber | None = None
        if config.transcript is not None:
            self.transcriber = build_transcriber(config.transcript)
        self.prefix_rotation = (
            PrefixRotation(config.head.embed_dim) if config.prefix_rotation else None
        )
        self._check_frozen()
        logger.info(
            "MultimodalModel %s (%s): %d trainable parameters, %d frozen",
            config.name,
            "/".join(config.modalities),
            sum(p.numel() for p in self.trainable_parameters()),
            sum(p.numel() for n, p in self.named_parameters() if n.startswith(FROZEN_PREFIXES)),
        )

    def _check_frozen(self) -> None:
        for name, p in self.named_parameters():
            frozen = name.startswith(FROZEN_PREFIXES)
            if frozen == p.requires_grad:
                state = "trainable" if p.requires_grad else "frozen"
                raise AssertionError(
                    f"parameter {name} is {state}; only encoders and the transcript decoder "
                    "may be frozen"
                )

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    @property
    def text_locked(self) -> bool:
        """True when text embeddings are the text encoder's own (nothing of text trains)."""
        return self.config.text_tower == "locked" and "text" in self.config.encoders

    def train(self, mode: bool = True) -> MultimodalModel:
        """Train mode for the trainable part; the encoders stay in eval mode."""
        super().train(mode)
        self.encoders.train(False)
        if self.transcriber is not None:
            self.transcriber.train(False)
        return self

    def encoder(self, modality: str) -> FrozenEncoder:
        """The frozen encoder for ``modality``; MissingModality if the model has none."""
        if modality not in MODALITIES:
            raise InvalidInput(f"unknown modality {modality!r}; expected one of {list(MODALITIES)}")
        if modality not in self.encoders:
            raise MissingModality(
                f"this model has no {modality} encoder (it has {', '.join(self.modalities)})"
            )
        return self.encoders[modality]

    def weights_digest(self) -> str:
        """sha256 of what decides this model's vector space: every weight outside the
        frozen encoders (as float32, so fp16 and fp32 copies agree) and the identity of
        random demo encoders. Real encoders are left out, since a checkpoint already
        refuses encoder weights other than its own (:mod:`model.checkpoint`); so is the
        transcript decoder's source, but not how transcripts are mixed in."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if name.startswith(FROZEN_PREFIXES):
                continue
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        for modality in self.modalities:
            encoder = self.config.encoders[modality]
            random_identity = encoder.identity if encoder.source is None else "pretrained"
            digest.update(f"{modality}:{encoder.family}:{random_identity}".encode())
        transcript = self.config.transcript
        if transcript is not None:
            mixing = dataclasses.asdict(transcript)
            if transcript.source is not None:
                del mixing["source"], mixing["random_init"], mixing["seed"]
            if not transcript.min_decode_seconds:
                del mixing["min_decode_seconds"]  # releases before it keep their digest
            digest.update(f"transcript:{json.dumps(mixing, sort_keys=True)}".encode())
        return digest.hexdigest()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Adapters, resampler, heads and temperature: everything the optimizer should see."""
        return [p for _, p in self.trainable_named_parameters()]

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(FROZEN_PREFIXES)]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by name (what a checkpoint stores)."""
        return {n: t for n, t in self.state_dict().items() if not n.startswith(FROZEN_PREFIXES)}

    def preprocess(
        self, modality: str, raw_items: Sequence[Any], **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Turn raw inputs into encoder inputs (CPU tensors).

        - text: list[str] -> input_ids, attention_mask (B, L);
        - image: list[PIL.Image] -> pixel_values (B, 3, 224, 224);
        - audio: list[np.ndarray] (1-D or (samples, channels)); pass ``sampling_rate=``
          (default 16000) -> input_features (W, 80, 3000), num_frames (W,), window_clip (W,).

        Bad inputs raise InvalidInput naming the item.
        """
        return self.encoder(modality).preprocess(raw_items, **kwargs)

    def encode(self, modality: str, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        """Run the frozen encoder under ``torch.inference_mode()``.

        Returns tokens (B, T, D_enc) and mask (B, T) (True = valid). The tensors are
        ordinary (non-inference) tensors, so they may enter an autograd graph.
        """
        encoder = self.encoder(modality)
        with torch.inference_mode():
            out = encoder(batch)
        if torch.is_inference_mode_enabled():
            return out
        return EncoderOutput(tokens=out.tokens.clone(), mask=out.mask.clone())

    def forward_features(
        self,
        modality: str,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        *,
        with_llm_tokens: bool = True,
    ) -> ModelOutput:
        """The trainable path on encoder tokens; with a prefix rotation, the embedding
        is rotated last (:mod:`model.prefix_rotation`).

        Args:
            modality: which adapter to use.
            tokens: (B, T, D_enc) encoder tokens (any float dtype; cast to the model's).
            mask: (B, T) bool, True = real token.
            with_llm_tokens: False skips the LLM projector (``llm_tokens`` is then None);
                embedding-only callers save its cost.

        Returns:
            ModelOutput with embedding (B, 512), latents (B, N, dim), llm_tokens (B, N, llm_dim).
        """
        out = self._branch_features(modality, tokens, mask, with_llm_tokens=with_llm_tokens)
        out.embedding = self.rotated(out.embedding)
        return out

    def rotated(self, embedding: torch.Tensor) -> torch.Tensor:
        """``embedding`` through the prefix rotation (unchanged without one)."""
        return embedding if self.prefix_rotation is None else self.prefix_rotation(embedding)

    def unrotated(self, embedding: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`rotated`: vectors in the branches' own layout."""
        if self.prefix_rotation is None:
            return embedding
        return self.prefix_rotation.inverse(embedding)

    def _branch_features(
        self, modality: str, tokens: torch.Tensor, mask: torch.Tensor, *, with_llm_tokens: bool
    ) -> ModelOutput:
        self.encoder(modality)
        expected = self.config.encoders[modality].hidden_size
        if tokens.ndim != 3 or tokens.shape[-1] != expected:
            raise InvalidInput(
                f"{modality} tokens must be (B, T, {expected}); got {tuple(tokens.shape)}"
            )
        if mask.shape != tokens.shape[:2]:
            raise InvalidInput(
                f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}"
            )
        param = self.resampler.latents
        tokens = tokens.to(param.device, param.dtype)
        mask = mask.to(param.device, torch.bool)
        if modality == "text" and self.text_tower is not None:
            return ModelOutput(
                embedding=self.text_tower(tokens, mask), latents=None, llm_tokens=None
            )
        prior = None
        if modality == "image" and self.labels is not None:
            prior = self.labels(logits_of(tokens))  # (B, D_text)
        if modality in self.adapters:
            if prior is not None:
                latents = labelled_latents(
                    self.adapters[modality], self.label_token, self.resampler, tokens, mask, prior
                )
            else:
                pool = self.config.adapter.frame_pool(modality)
                latents = resample(self.adapters[modality], self.resampler, tokens, mask, pool)
            embedding = self.alignment_head(latents)  # (B, 512)
        else:  # a modality only the blend's locked branch embeds
            latents, embedding = None, None
        if self.locked_branch is not None:
            locked, locked_latents = self.locked_branch(modality, tokens, mask, prior)
            embedding = blend_embeddings(
                embedding, locked, self.locked_branch.blend, modality=modality
            )
            if latents is None:
                return ModelOutput(embedding=embedding, latents=locked_latents, llm_tokens=None)
        return ModelOutput(
            embedding=embedding,
            latents=latents,
            llm_tokens=self.llm_projector(latents) if with_llm_tokens else None,  # (B, N, llm_dim)
        )

    def forward(
        self, modality: str, batch: dict[str, torch.Tensor], *, with_llm_tokens: bool = True
    ) -> ModelOutput:
        """encode + forward_features; with a transcript decoder, audio is also
        transcribed and its text vector mixed in (:meth:`with_transcripts`) before the
        prefix rotation."""
        out, result = self._unrotated_forward(modality, batch, with_llm_tokens=with_llm_tokens)
        if modality == "audio" and self.transcriber is not None:
            result.transcripts = self.transcribe(out, batch)
            result.embedding = self.with_transcripts(result.embedding, result.transcripts)
        else:
            result.embedding = self.rotated(result.embedding)
        return result

    def _unrotated_forward(
        self, modality: str, batch: dict[str, torch.Tensor], *, with_llm_tokens: bool
    ) -> tuple[EncoderOutput, ModelOutput]:
        out = self.encode(modality, batch)
        return out, self._branch_features(
            modality, out.tokens, out.mask, with_llm_tokens=with_llm_tokens
        )

    def transcribe(self, encoded: EncoderOutput, batch: dict[str, torch.Tensor]) -> list[str]:
        """What each clip of an encoded audio batch says: every 30 s window decoded on
        its own frames, windows that hold no speech left out, the rest of a clip joined."""
        assert self.transcriber is not None
        threshold = self.transcriber.no_speech_threshold
        return [
            " ".join(text for text, no_speech in windows if text and no_speech <= threshold)
            for windows in self.hear(encoded, batch)
        ]

    def hear(
        self, encoded: EncoderOutput, batch: dict[str, torch.Tensor]
    ) -> list[list[tuple[str, float]]]:
        """Per clip, per 30 s window: (decoded text, no-speech probability), before the
        no-speech threshold (:meth:`transcribe` applies it). A window of digital silence
        (the same log-mel everywhere) is not decoded: ("", 1.0). A window shorter than
        the config's ``min_decode_seconds`` is encoded again with the silence after it
        up to that length, and decoded from that (:meth:`_padded_windows`)."""
        if self.transcriber is None:
            raise InvalidInput("this model has no transcript decoder")
        frames, mask, clip_of = window_frames(
            encoded.tokens, encoded.mask, batch["num_frames"], batch["window_clip"]
        )
        sound = [
            bool(mel[:, : 2 * int(n)].std() > 0)
            for mel, n in zip(batch["input_features"], batch["num_frames"], strict=True)
        ]
        least = self._least_decode_frames()
        counts = batch["num_frames"].tolist()
        plain = [keep and n >= least for keep, n in zip(sound, counts, strict=True)]
        short = [w for w, n in enumerate(counts) if sound[w] and n < least]
        heard: list[tuple[str, float]] = [("", 1.0)] * len(sound)
        for chunk in decode_chunks(batch["num_frames"], plain):
            index = torch.tensor(chunk)
            for w, window in zip(
                chunk, self.transcriber.hear(frames[index], mask[index]), strict=True
            ):
                heard[w] = window
        if short:
            padded, padded_mask = self._padded_windows(batch, short, least)
            for w, window in zip(short, self.transcriber.hear(padded, padded_mask), strict=True):
                heard[w] = window
        windows: list[list[tuple[str, float]]] = [[] for _ in range(encoded.tokens.shape[0])]
        for clip, window in zip(clip_of, heard, strict=True):
            windows[clip].append(window)
        return windows

    def _least_decode_frames(self) -> int:
        """Encoder frames in ``min_decode_seconds`` of audio (0: no minimum)."""
        seconds = self.config.transcript.min_decode_seconds if self.config.transcript else 0.0
        return valid_frames(round(seconds * SAMPLE_RATE)) if seconds > 0 else 0

    def _padded_windows(
        self, batch: dict[str, torch.Tensor], windows: list[int], frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``windows`` of ``batch`` encoded again over their first ``frames`` frames,
        the silence after the clip included: (len(windows), frames, D) and the mask.

        Whisper was trained on 30 s windows; decoded from a few frames of a short word
        ("a duck", 0.7 s), it often writes nothing at all. The feature extractor has
        already padded each window with silence, so this reads further into it. The
        speech path keeps the clip's own frames: only the transcript is read this way.
        """
        index = torch.tensor(windows)
        sub = {
            "input_features": batch["input_features"][index],
            "num_frames": batch["num_frames"][index].clamp(min=frames),
            "window_clip": torch.arange(len(windows)),
        }
        encoded = self.encode("audio", sub)
        padded, mask, _ = window_frames(
            encoded.tokens, encoded.mask, sub["num_frames"], sub["window_clip"]
        )
        return padded, mask

    def with_transcripts(self, embedding: torch.Tensor, transcripts: Sequence[str]) -> torch.Tensor:
        """Audio vectors (B, 512) in the branches' layout -> as served: their
        transcripts mixed in (:meth:`transcript_mixed`), rotated. Clips with no
        transcript are only rotated."""
        if self.config.transcript is None:
            return self.rotated(embedding)
        text, heard = self.transcript_vectors(transcripts)
        if not bool(heard.any()):
            return self.rotated(embedding)
        return self.transcript_mixed(embedding, text, heard)

    def transcript_mixed(
        self,
        speech: torch.Tensor,
        text: torch.Tensor,
        heard: torch.Tensor,
        transcript: TranscriptConfig | None = None,
    ) -> torch.Tensor:
        """Speech vectors with their transcripts' text vectors (both (B, 512), in the
        branches' layout) mixed into each part of the blend
        (:func:`~model.transcripts.mix_transcripts`), then rotated; with a transcript
        prefix, the rotated vectors' first ``prefix_dims`` turn towards the rotated
        text vectors' by ``prefix_weight`` more. Rows where ``heard`` is False are only
        rotated. ``transcript``: the mixing (default: the model's)."""
        transcript = transcript or self.config.transcript
        if transcript is None:
            raise ValueError("this model mixes in no transcripts")
        text = text.to(speech.device, speech.dtype)
        parts = self.transcript_parts(transcript)
        vectors = self.rotated(mix_transcripts(speech, text, heard, parts))
        if not transcript.prefix_weight:
            return vectors
        prefix = [(torch.arange(transcript.prefix_dims), transcript.prefix_weight)]
        return mix_transcripts(vectors, self.rotated(text), heard, prefix)

    def transcript_vectors(self, transcripts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The text vectors (B, 512) of transcripts, zero where one is empty, and which
        are not (B,) bool. A transcript over the text encoder's limit is cut. Vectors are
        in the branches' own layout: a prefix rotation is not applied."""
        heard = [i for i, text in enumerate(transcripts) if text]
        text = torch.zeros(len(transcripts), self.config.head.embed_dim)
        flags = torch.zeros(len(transcripts), dtype=torch.bool)
        if heard:
            encoder = self.encoder("text")
            ids = [
                row if len(row) <= encoder.max_tokens else row[: encoder.max_tokens - 1] + row[-1:]
                for row in encoder.token_ids([transcripts[i] for i in heard])
            ]
            _, out = self._unrotated_forward("text", encoder.pad(ids), with_llm_tokens=False)
            text[heard] = out.embedding.float().cpu()
            flags[heard] = True
        return text, flags

    def transcript_parts(
        self, transcript: TranscriptConfig | None = None
    ) -> list[tuple[torch.Tensor, float]]:
        """(dims, transcript weight) of each part of the vector: with a blend, the
        two-sided branch's dims and the locked branch's; without, all 512. The weights
        are ``transcript``'s (default: the model's)."""
        transcript = transcript or self.config.transcript
        if transcript is None:
            raise ValueError("this model mixes in no transcripts")
        if self.locked_branch is None:
            return [(torch.arange(self.config.head.embed_dim), transcript.main_weight)]
        main: list[int] = []
        locked: list[int] = []
        start = 0
        for m, k in self.locked_branch.blend.prefix_sizes():
            main += range(start, start + m)
            locked += range(start + m, start + m + k)
            start += m + k
        return [
            (torch.tensor(main), transcript.main_weight),
            (torch.tensor(locked), transcript.locked_weight),
        ]

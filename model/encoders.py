"""The frozen encoders: CLIP vision tower, Whisper encoder, MiniLM (BERT), with their preprocessors.

Each encoder is loaded from a hub ID or a local folder (``EncoderConfig.source``)
and checked for missing weights, or built at random from a config for the tiny
preset. Encoders never train: their parameters have ``requires_grad=False`` and
they stay in eval mode whatever ``train()`` is called with.

Outputs (:class:`EncoderOutput`):
- image: tokens (B, 50, 768) for CLIP ViT-B/32 (CLS + 7x7 patches), mask all True;
  or (B, 50, 1280) for EfficientNet-lite0 (ImageNet logits token + 7x7 map,
  model/efficientnet.py);
- audio: tokens (B, T, 512) for Whisper-base, where T is the most valid frames of
  any clip in the batch (150 for a 3 s clip; 1500 per 30 s window; clips over
  30 s join their windows' valid frames), mask True on each clip's valid frames;
- text: tokens (B, L, 384) for MiniLM, mask = the tokenizer's attention mask.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import string
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import logging as hf_logging

from model import audio as audio_lib
from model import efficientnet
from model.config import EncoderConfig
from model.errors import CheckpointMismatch, InvalidInput, MissingWeights
from model.imaging import check_images, on_white
from model.runtime import onnx_module

log = logging.getLogger(__name__)


@dataclass
class EncoderOutput:
    """Frozen-encoder output.

    Attributes:
        tokens: (B, T, D_enc) float.
        mask: (B, T) bool, True where a token is real (not padding).
    """

    tokens: torch.Tensor
    mask: torch.Tensor


class FrozenEncoder(nn.Module):
    """Base class: a pretrained encoder that never trains, plus its preprocessor."""

    modality: str = ""

    def __init__(self, config: EncoderConfig, model: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()
        self._onnx: Callable[..., torch.Tensor] | None = None
        self._onnx_runtime = "onnx"  # or "onnx-int8"

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Frozen encoders stay in eval mode (no dropout) whatever ``mode`` is."""
        return super().train(False)

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        raise NotImplementedError

    @property
    def runtime(self) -> str:
        """How the encoder runs: "torch", or "onnx" / "onnx-int8" once :meth:`use_onnx` has run."""
        return self._onnx_runtime if self._onnx is not None else "torch"

    def use_onnx(
        self,
        threads: int,
        cache_dir: str | os.PathLike[str] | None = None,
        int8: bool = False,
    ) -> None:
        """Run the encoder with ONNX Runtime on CPU from now on (see :mod:`model.runtime`).

        ``threads``: ONNX Runtime's intra-op threads; ``cache_dir``: where exported
        models are kept and reused (None: export every time); ``int8``: run the
        exported model after dynamic int8 quantisation (the "onnx-int8" runtime).
        """
        raise ValueError(f"the {self.modality} encoder has no ONNX runtime; use 'torch'")

    def fingerprint(self) -> dict[str, list[float]]:
        """{tensor name: [L2 norm, first value]} for every weight, in float64.

        Tells one set of weights from another (a different checkpoint or a random init)
        while the same weights stored in fp32, fp16 or bf16 stay within a relative 1e-2;
        see :func:`fingerprints_match`.
        """
        out = {}
        for name, p in sorted(self.model.named_parameters()):
            w = p.detach().to("cpu", torch.float64).flatten()
            out[name] = [round(float(w.norm()), 8), round(float(w[0]), 8)]
        return out


def fingerprints_match(
    got: dict[str, list[float]], want: dict[str, list[float]]
) -> tuple[bool, str]:
    """Whether two :meth:`FrozenEncoder.fingerprint` results come from the same weights;
    if not, the first difference in words."""
    if sorted(got) != sorted(want):
        extra, lacking = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        return False, f"tensor names differ (extra {extra[:3]}, lacking {lacking[:3]})"
    for name in sorted(want):
        for kind, a, b in zip(("norm", "first value"), got[name], want[name], strict=True):
            if not math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-4):
                return False, f"{name} {kind} is {a:.6g}, expected {b:.6g}"
    return True, ""


@contextlib.contextmanager
def quiet_load_report() -> Any:
    """Keep transformers' load report (a multi-line warning table) and its
    "Loading weights" progress bars off the log.

    Its only entries for our encoders are weights we drop on purpose (MiniLM's
    pooler, Whisper's decoder); missing or mis-shaped weights are refused below
    with our own error, and conversion errors still raise inside transformers.
    """
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a bar for each sub-second load, on every start
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(cls: Any, config: EncoderConfig, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained(source)`` in float32, refusing any missing or mis-shaped weight."""
    return load_pretrained(cls, str(config.source), f"{config.modality} encoder", **kwargs)


def load_pretrained(cls: Any, source: str, what: str, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained(source)`` in float32; ``what`` ("the audio encoder") names it
    in the MissingWeights raised for any missing or mis-shaped weight."""
    try:
        with quiet_load_report():
            model, info = cls.from_pretrained(
                source, output_loading_info=True, dtype=torch.float32, **kwargs
            )
    except (OSError, ValueError) as exc:
        raise MissingWeights(f"cannot load the {what} from {source!r}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [str(k) for k in info.get("mismatched_keys") or []]
    if missing or mismatched:
        shown = ", ".join((missing + mismatched)[:8])
        more = len(missing) + len(mismatched) - 8
        raise MissingWeights(
            f"the {what} at {source!r} lacks {len(missing)} weights and "
            f"has {len(mismatched)} of the wrong shape ({shown}{f', ... {more} more' if more > 0 else ''}); "
            "refusing to run with randomly initialised weights"
        )
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        log.debug(
            "%s %s: %d checkpoint weights not used (%s)",
            what,
            source,
            len(unused),
            ", ".join(unused[:4]),
        )
    return model


def _load_preprocessor(cls: Any, config: EncoderConfig, what: str) -> Any:
    """``cls.from_pretrained(source)`` for a tokenizer or feature extractor, failing clearly."""
    try:
        return cls.from_pretrained(config.source)
    except (OSError, ValueError, TypeError) as exc:
        raise MissingWeights(
            f"cannot load the {config.modality} {what} from {config.source!r}: {exc}"
        ) from exc


def _random_model(build: Any, config: EncoderConfig) -> nn.Module:
    """Build a randomly initialised encoder, seeded so every process builds the same one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build()


def _check_hidden_size(config: EncoderConfig, actual: int) -> None:
    if actual != config.hidden_size:
        raise CheckpointMismatch(
            f"the {config.modality} encoder from {config.identity!r} has hidden size {actual}, "
            f"but the model config expects {config.hidden_size}"
        )


# ---------------------------------------------------------------------------- text


def tiny_tokenizer(model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """A character-level WordPiece tokenizer built in code (no download), BERT-style.

    Vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], every printable ASCII character and
    its "##" continuation (193 entries), lower-cased input.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [c for c in string.printable if not c.isspace() and not c.isupper()]
    vocab_list = specials + chars + [f"##{c}" for c in chars]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def _check_tokenizer(config: EncoderConfig, tokenizer: Any, vocab_size: int) -> None:
    """Refuse a tokenizer that cannot be the model's: transformers builds an empty one
    (special tokens only) from a folder that lacks the tokenizer files."""
    size = len(tokenizer)
    if size <= len(set(tokenizer.all_special_tokens)):
        raise MissingWeights(
            f"cannot load the text tokenizer from {config.identity!r}: its vocabulary holds only "
            f"{size} special tokens (tokenizer files missing?)"
        )
    if size > vocab_size:
        raise MissingWeights(
            f"the text tokenizer from {config.identity!r} has {size} tokens, more than the "
            f"encoder's {vocab_size} embeddings"
        )


class TextEncoder(FrozenEncoder):
    """A BERT-family sentence encoder (all-MiniLM-L6-v2) and its tokenizer."""

    modality = "text"

    def __init__(self, config: EncoderConfig) -> None:
        if config.source is not None:
            # The pooler is never used (tokens are the last hidden state); its weights
            # may be in the checkpoint and are ignored.
            model = _load_pretrained(AutoModel, config, add_pooling_layer=False)
            tokenizer = _load_preprocessor(AutoTokenizer, config, "tokenizer")
        else:
            bert_config = BertConfig(**(config.random_init or {}))
            model = _random_model(lambda: BertModel(bert_config, add_pooling_layer=False), config)
            tokenizer = tiny_tokenizer(bert_config.max_position_embeddings)
        super().__init__(config, model)
        _check_hidden_size(config, self.hidden_size)
        _check_tokenizer(config, tokenizer, int(model.config.vocab_size))
        self.tokenizer = tokenizer
        # Fast tokenizers are not safe to call from two threads at once.
        self._tokenizer_lock = threading.Lock()
        limits = [int(model.config.max_position_embeddings)]
        if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
            limits.append(int(tokenizer.model_max_length))
        if config.max_tokens is not None:
            limits.append(int(config.max_tokens))
        self.max_tokens = min(limits)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, special tokens included, with no limit applied.

        Texts that are not strings, or are empty, raise InvalidInput naming the item.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidInput(f"texts must be a list of strings; got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"text {i} must be a string; got {type(text).__name__}")
            if not text.strip():
                raise InvalidInput(f"text {i} is empty")
        if not texts:
            return []
        with self._tokenizer_lock:
            return self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text becomes, special tokens included (no limit applied)."""
        return [len(ids) for ids in self.token_ids(texts)]

    def check_lengths(self, ids: Sequence[Sequence[int]]) -> None:
        """InvalidInput naming the first row over :attr:`max_tokens` (never truncated)."""
        for i, row in enumerate(ids):
            if len(row) > self.max_tokens:
                raise InvalidInput(
                    f"text {i} is {len(row)} tokens long; the limit is {self.max_tokens}"
                )

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Already tokenised rows (from :meth:`token_ids`) as a padded batch."""
        with self._tokenizer_lock:
            return dict(self.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt"))

    def preprocess(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize; texts over :attr:`max_tokens` are refused, never truncated.

        Returns: input_ids, attention_mask (and token_type_ids), each (B, L) int64.
        """
        ids = self.token_ids(texts)
        self.check_lengths(ids)
        return self.pad(ids)

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        device = self.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if self._onnx is not None:
            tokens = self._onnx(ids, mask)
        else:
            tokens = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return EncoderOutput(tokens=tokens, mask=mask.bool())  # (B, L, D), (B, L)

    def use_onnx(
        self,
        threads: int,
        cache_dir: str | os.PathLike[str] | None = None,
        int8: bool = False,
    ) -> None:
        example = self.preprocess(["a short example", "a somewhat longer example sentence"])
        self._onnx = onnx_module(
            "text",
            _LastHiddenState(self.model),
            {"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]},
            {"input_ids": (0, 1), "attention_mask": (0, 1)},
            threads=threads,
            cache_dir=cache_dir,
            int8=int8,
        )
        self._onnx_runtime = "onnx-int8" if int8 else "onnx"


class _LastHiddenState(nn.Module):
    """A BERT model as tensors in, last hidden state (B, L, D) out: what ONNX exports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


# --------------------------------------------------------------------------- image


class ImageEncoder(FrozenEncoder):
    """The CLIP vision tower; tokens are its last hidden state (CLS + patches)."""

    modality = "image"

    def __init__(self, config: EncoderConfig) -> None:
        if config.source is not None:
            model = _load_pretrained(CLIPVisionModel, config)
            processor = _load_preprocessor(CLIPImageProcessorPil, config, "image processor")
        else:
            clip_config = CLIPVisionConfig(**(config.random_init or {}))
            model = _random_model(lambda: CLIPVisionModel(clip_config), config)
            size = clip_config.image_size
            processor = CLIPImageProcessorPil(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        super().__init__(config, model)
        _check_hidden_size(config, self.hidden_size)
        self.processor = processor

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Resize, centre-crop and normalise. Returns pixel_values (B, 3, 224, 224) float32."""
        rgb = [on_white(image) for image in check_images(images)]
        if not rgb:
            return {"pixel_values": torch.zeros(0, 3, 224, 224)}
        return {"pixel_values": self.processor(images=rgb, return_tensors="pt")["pixel_values"]}

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        pixels = batch["pixel_values"].to(self.device, self.dtype)  # (B, 3, H, W)
        tokens = self.model(pixel_values=pixels).last_hidden_state  # (B, 1 + patches, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask)


class EfficientNetImageEncoder(FrozenEncoder):
    """An ImageNet EfficientNet-lite (model/efficientnet.py): token 0 carries the
    classifier's logits, tokens 1.. the last feature map."""

    modality = "image"

    def __init__(self, config: EncoderConfig) -> None:
        if config.source is not None:
            network = efficientnet.load_network(config.source)
        else:
            variant = (config.random_init or {}).get("variant", "efficientnet-lite0")
            network = _random_model(lambda: efficientnet.build_network(variant), config)
        super().__init__(config, network)
        _check_hidden_size(config, self.hidden_size)
        self.size = efficientnet.image_size(config)

    @property
    def hidden_size(self) -> int:
        return efficientnet.FEATURE_DIM

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Letterbox on white and scale to [-1, 1]: pixel_values (B, 3, S, S) float32."""
        return {"pixel_values": efficientnet.pixels(images, self.size)}

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        x = batch["pixel_values"].to(self.device, self.dtype)
        tokens = efficientnet.tokens_of(self.model, x)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask)


# --------------------------------------------------------------------------- audio


class AudioEncoder(FrozenEncoder):
    """The Whisper encoder with its log-mel feature extractor.

    ``config.audio_window`` picks how a window is run: "full" pads it to 30 s and
    runs all 1500 positions (Whisper's own behaviour, cost independent of length);
    "trimmed" runs only the frames the batch needs, with Whisper's self-attention
    masked to each window's valid frames (cost follows the clip's length).
    Either way only valid frames are returned.
    """

    modality = "audio"
    WINDOWS_PER_PASS = 16

    def __init__(self, config: EncoderConfig) -> None:
        if config.source is not None:
            # The hub's openai/whisper-base stores the whole encoder-decoder model, the
            # encoder under "model.encoder." (other exports under "encoder."); without
            # this mapping no weight would load (and _load_pretrained refuses that).
            model = _load_pretrained(
                WhisperEncoder, config, key_mapping={r"^(model\.)?encoder\.": ""}
            )
            extractor = _load_preprocessor(WhisperFeatureExtractor, config, "feature extractor")
        else:
            whisper_config = WhisperConfig(**(config.random_init or {}))
            model = _random_model(lambda: WhisperEncoder(whisper_config), config)
            extractor = WhisperFeatureExtractor(feature_size=whisper_config.num_mel_bins)
        super().__init__(config, model)
        _check_hidden_size(config, self.hidden_size)
        if extractor.feature_size != model.config.num_mel_bins:
            raise MissingWeights(
                f"the audio feature extractor from {config.identity!r} makes "
                f"{extractor.feature_size} mel bins; the encoder expects {model.config.num_mel_bins}"
            )
        if int(model.config.max_source_positions) != audio_lib.FRAMES_PER_WINDOW:
            raise ValueError(
                f"Whisper encoder has {model.config.max_source_positions} positions; "
                f"expected {audio_lib.FRAMES_PER_WINDOW} (30 s)"
            )
        self.feature_extractor = extractor

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.d_model)

    def preprocess(
        self, clips: Sequence[np.ndarray], sampling_rate: int = audio_lib.SAMPLE_RATE
    ) -> dict[str, torch.Tensor]:
        """Validate, mix to mono, resample to 16 kHz, cut into 30 s windows, log-mel.

        Returns:
            input_features: (W, 80, 3000) float32 log-mel, one row per 30 s window;
            num_frames: (W,) int64 valid encoder frames of each window (1..1500);
            window_clip: (W,) int64 index of the clip each window belongs to.
        """
        if isinstance(clips, np.ndarray) or not isinstance(clips, Sequence):
            raise InvalidInput(f"clips must be a list of numpy arrays; got {type(clips).__name__}")
        windows: list[np.ndarray] = []
        owner: list[int] = []
        for i, clip in enumerate(clips):
            samples = audio_lib.prepare_clip(
                clip, sampling_rate, max_seconds=self.config.max_audio_seconds, index=i
            )
            for window in audio_lib.split_windows(samples):
                windows.append(window)
                owner.append(i)
        if not windows:
            return {
                "input_features": torch.zeros(0, self.model.config.num_mel_bins, 3000),
                "num_frames": torch.zeros(0, dtype=torch.long),
                "window_clip": torch.zeros(0, dtype=torch.long),
            }
        features = self.feature_extractor(
            windows, sampling_rate=audio_lib.SAMPLE_RATE, return_tensors="pt"
        )["input_features"]
        return {
            "input_features": features,
            "num_frames": torch.tensor([audio_lib.valid_frames(len(w)) for w in windows]),
            "window_clip": torch.tensor(owner, dtype=torch.long),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        features = batch["input_features"]  # (W, 80, 3000)
        num_frames = batch["num_frames"].to(self.device)  # (W,)
        window_clip = batch["window_clip"].tolist()
        # Long clips make many windows: run them a few at a time to bound memory.
        chunks = []
        for start in range(0, features.shape[0], self.WINDOWS_PER_PASS):
            part = features[start : start + self.WINDOWS_PER_PASS].to(self.device, self.dtype)
            frames = num_frames[start : start + self.WINDOWS_PER_PASS]
            if self.config.audio_window == "full":
                hidden = self._forward_full(part)  # (w, 1500, D)
            else:
                hidden = self._forward_trimmed(part, frames)  # (w, max frames, D)
            chunks.extend(hidden.unbind(0))
        return _join_windows(chunks, num_frames.tolist(), window_clip)

    def use_onnx(
        self,
        threads: int,
        cache_dir: str | os.PathLike[str] | None = None,
        int8: bool = False,
    ) -> None:
        frames = 24
        example = {
            "features": torch.zeros(2, self.model.config.num_mel_bins, 2 * frames + 2),
            "valid": torch.arange(frames)[None, :] < torch.tensor([[frames], [frames // 2]]),
        }
        self._onnx = onnx_module(
            "audio",
            _WhisperFrames(self.model),
            example,
            {"features": (0, 2), "valid": (0, 1)},
            threads=threads,
            cache_dir=cache_dir,
            int8=int8,
        )
        self._onnx_runtime = "onnx-int8" if int8 else "onnx"

    def _forward_full(self, features: torch.Tensor) -> torch.Tensor:
        """Whisper on whole 30 s windows (W, 80, 3000) -> (W, 1500, D), padding attended."""
        if self._onnx is None:
            return self.model(input_features=features).last_hidden_state
        # Every position valid: the same computation as Whisper's own forward.
        valid = torch.ones(features.shape[0], audio_lib.FRAMES_PER_WINDOW, dtype=torch.bool)
        return self._onnx(features, valid)

    def _forward_trimmed(self, features: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        """Whisper on the first ``max(num_frames)`` frames only, masking padding frames.

        Two extra mel frames make the conv outputs identical to those of the full window.
        """
        frames = int(num_frames.max())
        mel = features[..., : min(2 * frames + 2, features.shape[-1])]  # (W, 80, ~2F)
        valid = torch.arange(frames, device=mel.device)[None, :] < num_frames[:, None]  # (W, F)
        if self._onnx is not None:
            return self._onnx(mel, valid)
        return whisper_frames(self.model, mel, valid)


def whisper_frames(encoder: nn.Module, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Whisper's encoder on any number of frames F, with padding frames masked.

    Whisper's own forward insists on 3000 mel frames; this repeats its steps
    (conv1, conv2, positions, layers, layer_norm) on a shorter input.
    features: (W, 80, M) log-mel with M >= 2F (M = 2F + 2 makes the last frame exact);
    valid: (W, F) bool, True on real frames. Returns (W, F, D).
    """
    frames = valid.shape[1]
    x = nn.functional.gelu(encoder.conv1(features))  # (W, D, M)
    x = nn.functional.gelu(encoder.conv2(x))  # (W, D, ~M/2)
    x = x.permute(0, 2, 1)[:, :frames]  # (W, F, D)
    x = x + encoder.embed_positions.weight[:frames]
    bias = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
    bias = bias.masked_fill(~valid, torch.finfo(x.dtype).min)
    attn_mask = bias[:, None, None, :]  # (W, 1, 1, F): keys of padding frames are ignored
    for layer in encoder.layers:
        x = layer(x, attn_mask)
    return encoder.layer_norm(x)


class _WhisperFrames(nn.Module):
    """:func:`whisper_frames` as a module: what ONNX exports."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return whisper_frames(self.encoder, features, valid)


def _join_windows(
    hidden: list[torch.Tensor], num_frames: list[int], window_clip: list[int]
) -> EncoderOutput:
    """Keep each window's valid frames and join the windows of each clip along time.

    hidden: W tensors (T_w, D) -> tokens (B, T, D) with T = most valid frames of any clip.
    """
    if not hidden:
        raise InvalidInput("no audio clips to encode")
    num_clips = max(window_clip) + 1
    per_clip: list[list[torch.Tensor]] = [[] for _ in range(num_clips)]
    for w, clip in enumerate(window_clip):
        per_clip[clip].append(hidden[w][: num_frames[w]])
    lengths = [sum(t.shape[0] for t in parts) for parts in per_clip]
    longest = max(lengths)
    tokens = hidden[0].new_zeros(num_clips, longest, hidden[0].shape[-1])
    mask = torch.zeros(num_clips, longest, dtype=torch.bool, device=hidden[0].device)
    for c, parts in enumerate(per_clip):
        tokens[c, : lengths[c]] = torch.cat(parts, dim=0)
        mask[c, : lengths[c]] = True
    return EncoderOutput(tokens=tokens, mask=mask)


_ENCODERS: dict[str, type[FrozenEncoder]] = {
    "image": ImageEncoder,
    "audio": AudioEncoder,
    "text": TextEncoder,
}


def build_encoder(config: EncoderConfig) -> FrozenEncoder:
    """Load (or, for a random config, build) the frozen encoder ``config`` describes."""
    if config.family == "efficientnet":
        return EfficientNetImageEncoder(config)
    return _ENCODERS[config.modality](config)

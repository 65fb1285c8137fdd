"""The embedding engine: one dynamic batcher per modality over a shared `Embedder`.

Inputs arrive already decoded (text, RGB image, 16 kHz mono clip). The engine
always embeds at the full 512 dims, so requests asking for different `dims`
share one batch; truncation and renormalisation happen per caller afterwards.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    """One decoded input, ready for its modality's batcher."""

    modality: str
    value: str | Image.Image | AudioClip


def embed_batch(embedder: Embedder, modality: str, values: Sequence[Any]) -> np.ndarray:
    """Full 512-d embeddings of decoded inputs of one modality (texts, images or clips)."""
    if modality == "text":
        return embedder.embed_texts(list(values), dims=EMBED_DIM)
    if modality == "image":
        return embedder.embed_images(list(values), dims=EMBED_DIM)
    return embedder.embed_audio(
        [c.samples for c in values], sampling_rate=SAMPLE_RATE, dims=EMBED_DIM
    )


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
        self.batchers: dict[str, Batcher] = {
            modality: Batcher(
                modality,
                functools.partial(embed_batch, embedder, modality),
                max_batch_size=settings.max_batch_size,
                max_wait_ms=settings.max_wait_ms,
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
        for batcher in self.batchers.values():
            await batcher.start()

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.batchers.values()))

    def queue_depths(self) -> dict[str, int]:
        return {m: b.depth for m, b in self.batchers.items()}

    def require(self, modality: str) -> Batcher:
        require_modality(modality, self.modalities)
        return self.batchers[modality]

    async def embed(self, inputs: Sequence[Input]) -> np.ndarray:
        """Full 512-d unit embeddings for mixed inputs, shape (N, 512), in input order."""
        by_modality: dict[str, list[int]] = {}
        for i, item in enumerate(inputs):
            by_modality.setdefault(item.modality, []).append(i)
        batchers = {m: self.require(m) for m in by_modality}
        rows = await asyncio.gather(
            *(
                batchers[m].submit_many([inputs[i].value for i in positions])
                for m, positions in by_modality.items()
            )
        )
        out = np.empty((len(inputs), EMBED_DIM), dtype=np.float32)
        for positions, vectors in zip(by_modality.values(), rows, strict=True):
            out[positions] = np.stack(vectors)
        return out

    async def embed_one(self, item: Input) -> np.ndarray:
        """Full 512-d unit embedding of one input, shape (512,)."""
        return (await self.embed([item]))[0]

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts, computed on the text worker thread (tokenizers are not thread-safe)."""
        return await self.require("text").run_on_worker(self.embedder.count_tokens, texts)

    @staticmethod
    def at_dims(vectors: np.ndarray, dims: int) -> np.ndarray:
        """(N, 512) or (512,) -> first `dims` components, renormalised to unit length."""
        return truncate(vectors, dims)

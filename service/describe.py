"""`/describe` behind the routes: the language model, loaded once, and its queue.

The language model is optional (the ``[llm]`` extra). :func:`load_describer` finds it
(``--llm`` / ``MMEMBED_LLM``, then the packaged SmolLM2) and pairs it with the
projector saved beside the served model; when either is missing, the service runs
without it and :class:`DescribeUnavailable` says why on every ``/describe``.

Descriptions run one at a time on their own worker (a queue of ``queue_size`` with
the request timeout, as embeddings have): greedy decoding of one row at a time gives
the same text for the same input, whatever else is being described.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from model import Embedder
from model.describer import Describer, Generation
from model.errors import MissingWeights
from service.batching import Batcher, BatchObserver
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DescribeJob:
    """One description to write: the input's latents (L, D), its modality, the prompt
    (None: the default one for the modality) and the most tokens to generate."""

    latents: np.ndarray
    modality: str
    prompt: str | None
    max_tokens: int


class DescribeService:
    """A loaded :class:`Describer` and the queue that feeds it."""

    def __init__(
        self,
        describer: Describer,
        name: str,
        settings: Settings,
        observer: BatchObserver | None = None,
    ) -> None:
        self.describer = describer
        self.name = name
        self.batcher: Batcher[DescribeJob, Generation] = Batcher(
            "describe",
            self.run,
            max_batch_size=1,
            max_wait_ms=0,
            workers=1,
            queue_size=settings.queue_size,
            timeout_s=settings.describe_timeout_s,
            observer=observer,
        )

    def run(self, jobs: list[DescribeJob]) -> list[Generation]:
        """Describe jobs one after another, on the calling thread."""
        out = []
        for job in jobs:
            latents = torch.from_numpy(job.latents).unsqueeze(0)
            (generation,) = self.describer.generate(
                latents, [job.modality], [job.prompt], max_tokens=job.max_tokens
            )
            out.append(generation)
        return out

    def prompt_tokens(self, modality: str, prompt: str | None) -> int:
        """Tokens the prompt adds, template included."""
        return self.describer.prompt_tokens(self.describer.prompt_for(modality, prompt))

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def describe(self, job: DescribeJob) -> Generation:
        return await self.batcher.submit(job)


def load_describer(
    embedder: Embedder, settings: Settings, observer: BatchObserver | None = None
) -> tuple[DescribeService | None, str | None]:
    """(the service, None) or (None, why ``/describe`` is off), never raising for a
    missing optional part: the embedding service runs either way."""
    from model.llm import INSTALL_HINT, llm_fingerprint, load_llm, resolve_llm

    if not embedder.has_projector:
        return None, "this model has no trained LLM projector (describer/ beside its checkpoint)"
    try:
        source = resolve_llm(settings.llm)
    except MissingWeights as exc:
        return None, str(exc)
    if source is None:
        if settings.llm is not None:
            return None, "the language model is turned off (--llm none)"
        return None, f"no language model is installed; {INSTALL_HINT}"
    if embedder.projector is None:
        return None, "the LLM projector beside this model was trained on another model's latents"
    try:
        llm, tokenizer = load_llm(source)
    except MissingWeights as exc:
        return None, str(exc)
    config = embedder.describer_config
    if config.llm_fingerprint and config.llm_fingerprint != llm_fingerprint(llm):
        return None, (
            f"the projector was trained for {config.llm or 'another language model'}, "
            f"not {source.name}"
        )
    describer = Describer(embedder.projector, config, llm, tokenizer)
    logger.info("describe: %s reads the latents", source.name)
    return DescribeService(describer, source.name, settings, observer), None

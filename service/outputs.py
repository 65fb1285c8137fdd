"""`/embed?output=...`: the embedding, the raw latents, the LLM prefix, as floats or base64,
and what a clip was heard to say.

The design's resampler has three outputs (DESIGN.md): the alignment embedding, the
latents themselves and their projection into a language model's input space. The
embedding is the default; ``output=latents``, ``output=llm_prefix`` or a
comma-separated list (``embedding,latents``) asks for the others. A model that mixes
Whisper's transcript of each clip into its vector (model/transcripts.py) also
answers ``output=transcript``: the words its vector holds (null for text and images). Arrays come as
row-major float lists or, with ``encoding_format=base64``, as the base64 of their
little-endian float32 bytes (as ``/v1/embeddings`` does), each with its shape.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Query
from pydantic import AfterValidator

from service.engine import EmbeddingEngine, Input, OutputRow
from service.errors import ServiceError

OUTPUTS = ("embedding", "latents", "llm_prefix", "transcript")


class OutputUnavailable(ServiceError):
    status_code = 400
    error_type = "output_unavailable"


def _split(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise ValueError(
            f"output must be one or more of {', '.join(OUTPUTS)}, comma-separated; got {value!r}"
        )
    return names


def _check_outputs(value: str) -> str:
    _split(value)
    return value


OutputQuery = Annotated[
    str,
    AfterValidator(_check_outputs),
    Query(
        description="What to return, comma-separated: `embedding` (default), `latents` (the "
        "resampler's raw latents), `llm_prefix` (the latents projected for the language "
        "model), `transcript` (what a clip was heard to say, for a model that mixes "
        "transcripts into audio vectors; null for text and images).",
        examples=["embedding", "latents", "embedding,llm_prefix", "embedding,transcript"],
    ),
]
EncodingQuery = Annotated[
    Literal["float", "base64"],
    Query(description="Arrays as float lists, or base64 of little-endian float32 bytes."),
]


def parse_outputs(value: str) -> tuple[str, ...]:
    """The outputs a validated ``output`` query asks for, in order, without repeats."""
    return _split(value)


def check_outputs(outputs: tuple[str, ...], engine: EmbeddingEngine) -> None:
    """OutputUnavailable when the served model cannot give what is asked."""
    if "llm_prefix" in outputs and engine.embedder.projector is None:
        raise OutputUnavailable(
            "this model has no trained LLM projector, so no llm_prefix; it has embedding "
            "and latents"
        )
    if "transcript" in outputs and engine.embedder.model.config.transcript is None:
        raise OutputUnavailable(
            "this model does not transcribe clips (no transcript decoder), so no transcript"
        )


def encode_array(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """{"shape", "data"}: floats, or base64 of little-endian float32."""
    array = np.ascontiguousarray(array, dtype="<f4")
    if encoding == "base64":
        return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}
    return {"shape": list(array.shape), "data": array.reshape(-1)}


def encode_vector(vector: np.ndarray, encoding: str) -> np.ndarray | str:
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def output_fields(
    item: Input, row: OutputRow, *, dims: int, outputs: tuple[str, ...], encoding: str
) -> dict[str, Any]:
    """One input's answer: modality, dims and what ``outputs`` asks for."""
    vector, latents, prefix, _, heard = row
    fields: dict[str, Any] = {"modality": item.modality, "dims": dims}
    if "embedding" in outputs:
        fields["embedding"] = encode_vector(EmbeddingEngine.at_dims(vector, dims), encoding)
    if "latents" in outputs:
        fields["latents"] = encode_array(latents, encoding)
    if "llm_prefix" in outputs:
        if prefix is None:  # pragma: no cover - check_outputs refuses this first
            raise OutputUnavailable("this model has no trained LLM projector")
        fields["llm_prefix"] = encode_array(prefix, encoding)
    if "transcript" in outputs:
        fields["transcript"] = heard
    return fields


def floats_in(rows: list[OutputRow], outputs: tuple[str, ...], dims: int) -> int:
    """How many floats the answer holds (to decide where to encode it)."""
    total = 0
    for _, latents, prefix, _, _ in rows:
        total += dims if "embedding" in outputs else 0
        total += latents.size if "latents" in outputs else 0
        total += prefix.size if "llm_prefix" in outputs and prefix is not None else 0
    return total

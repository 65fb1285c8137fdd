"""`POST /v1/embeddings` and `GET /v1/models`, compatible with the OpenAI API.

The official `openai` client works unchanged with `base_url=http://host:port/v1`.
`dimensions` is the Matryoshka truncation (64, 128, 256, 512); `encoding_format`
"base64" returns little-endian float32 bytes, as the client expects (it asks for
base64 by default). Only text inputs exist in that API; token arrays are refused.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends

from model.constants import EMBED_DIM, MATRYOSHKA_DIMS
from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep, StateDep
from service.engine import Input
from service.errors import InvalidRequest
from service.inputs import check_text
from service.schemas import (
    ERROR_RESPONSES,
    OpenAIEmbedding,
    OpenAIEmbeddingsIn,
    OpenAIEmbeddingsOut,
    OpenAIModel,
    OpenAIModelList,
    OpenAIUsage,
)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])

MODEL_ID = "mmembed"


def _texts(body: OpenAIEmbeddingsIn) -> list[str]:
    value = body.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequest("input must not be an empty list")
    texts = [v for v in value if isinstance(v, str)]
    if len(texts) != len(value):
        raise InvalidRequest("token arrays are not supported: send input as strings")
    return texts


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post(
    "/embeddings",
    response_model=OpenAIEmbeddingsOut,
    responses=ERROR_RESPONSES,
    summary="Create text embeddings (OpenAI-compatible)",
)
async def create_embeddings(body: OpenAIEmbeddingsIn, engine: EngineDep, settings: SettingsDep):
    dims = EMBED_DIM if body.dimensions is None else body.dimensions
    if dims not in MATRYOSHKA_DIMS:
        raise InvalidRequest(
            f"dimensions must be one of {', '.join(map(str, MATRYOSHKA_DIMS))}; got {dims}"
        )
    texts = _texts(body)
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(texts)} inputs; the limit is {settings.max_inputs_per_request} per request"
        )
    items = []
    for i, text in enumerate(texts):
        try:
            items.append(Input("text", check_text(text, settings)))
        except InvalidRequest as exc:
            raise InvalidRequest(f"input[{i}]: {exc.message}") from exc
    vectors = engine.at_dims(await engine.embed(items), dims)
    tokens = sum(await engine.count_tokens(texts))
    return OpenAIEmbeddingsOut(
        data=[
            OpenAIEmbedding(index=i, embedding=_encode(v, body.encoding_format))
            for i, v in enumerate(vectors)
        ],
        model=body.model,
        usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


@router.get("/models", response_model=OpenAIModelList, summary="The one model served")
async def list_models(state: StateDep):
    return OpenAIModelList(data=[OpenAIModel(id=MODEL_ID, created=state.started_at)])

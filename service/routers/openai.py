"""`POST /v1/embeddings` and `GET /v1/models`, compatible with the OpenAI API.

The official `openai` client works unchanged with `base_url=http://host:port/v1`.
`dimensions` is the Matryoshka truncation (64, 128, 256, 512); `encoding_format`
"base64" returns little-endian float32 bytes, as the client expects (it asks for
base64 by default). Only text inputs exist in that API; token arrays are refused.
`usage` counts the tokens the embedding batch itself produced (no second pass), and
the response is encoded once from the vectors (`service.responses`).
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from model.constants import EMBED_DIM, MATRYOSHKA_DIMS
from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep, StateDep
from service.engine import Input
from service.errors import InvalidRequest
from service.inputs import check_text, read_json, require_json
from service.responses import vector_response
from service.schemas import (
    ERROR_RESPONSES,
    OpenAIEmbeddingsIn,
    OpenAIEmbeddingsOut,
    OpenAIModel,
    OpenAIModelList,
    request_body,
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


def _encode(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector


@router.post(
    "/embeddings",
    response_model=OpenAIEmbeddingsOut,
    responses=ERROR_RESPONSES,
    summary="Create text embeddings (OpenAI-compatible)",
    openapi_extra=request_body(json_model=OpenAIEmbeddingsIn),
)
async def create_embeddings(request: Request, engine: EngineDep, settings: SettingsDep):
    # The body is read here, as `/embed` reads its own, rather than as a FastAPI body
    # parameter: that answered a body without Content-Type, a form body and malformed JSON
    # alike with a 422 about dictionaries. The schema stays documented (`openapi_extra`).
    require_json(request)
    body = await read_json(request, OpenAIEmbeddingsIn)
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
    embedded = await engine.embed_counted(items)
    vectors = engine.at_dims(embedded.vectors, dims)
    tokens = sum(embedded.tokens)  # counted by the batch that embedded them
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    content = {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return await vector_response(content, floats=vectors.size)


@router.get("/models", response_model=OpenAIModelList, summary="The one model served")
async def list_models(state: StateDep):
    return OpenAIModelList(data=[OpenAIModel(id=MODEL_ID, created=state.started_at)])

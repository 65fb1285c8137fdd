"""`GET /search` (text query) and `POST /search` (file or text query).

A hit carries the item's id, score and modality, and by default its stored `text`
(null when it has none) and `metadata`; `include=` names the fields wanted
(`include=metadata` leaves the texts unread, `include=` returns neither).

Every answer carries a `Server-Timing` header (`embed;dur=..., search;dur=...`,
milliseconds) so a client, or the browser's developer tools, can tell model time
from index time.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from index import SearchHit
from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep, StoreDep
from service.engine import Input
from service.errors import InvalidRequest
from service.inputs import (
    DimsQuery,
    RawInput,
    decode_inputs,
    parse_json_object,
    read_single_input,
)
from service.responses import input_warnings
from service.schemas import (
    ERROR_RESPONSES,
    FILE_FIELD,
    TEXT_FIELD,
    Modality,
    SearchHitOut,
    SearchMode,
    SearchOut,
    TextIn,
    request_body,
)
from service.settings import Settings

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])

KQuery = Annotated[int, Query(ge=1, description="Number of results (at most MMEMBED_MAX_K).")]
ModalityQuery = Annotated[Modality | None, Query(description="Only results of this modality.")]
ModeQuery = Annotated[
    SearchMode,
    Query(description="'exact' at `dims`, or 'adaptive': a 64-d shortlist re-ranked at `dims`."),
]
WhereQuery = Annotated[
    str | None,
    Query(description='Metadata filter, a JSON object of exact matches: {"lang": "en"}.'),
]
HIT_FIELDS = ("text", "metadata")
IncludeQuery = Annotated[
    str,
    Query(
        description="Comma-separated fields each hit carries besides id, score and modality: "
        "`text`, `metadata`, both (the default) or none (empty)."
    ),
]


def _include(value: str) -> frozenset[str]:
    """The hit fields a caller asked for; 422 naming the allowed ones for any other."""
    asked = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(asked - set(HIT_FIELDS))
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "include"),
                    "msg": f"unknown field {unknown[0]!r}; include takes "
                    f"{', '.join(HIT_FIELDS)} (comma-separated) or nothing",
                    "type": "value_error",
                }
            ]
        )
    return asked


def _where(value: str | None) -> dict[str, Any] | None:
    return parse_json_object(value, name="where")


def _check_k(k: int, settings: Settings) -> None:
    if k > settings.max_k:
        raise InvalidRequest(f"k must be between 1 and {settings.max_k}; got {k}")


async def _search(
    query: Input,
    *,
    response: Response,
    engine: EngineDep,
    store: StoreDep,
    dims: int,
    k: int,
    modality: str | None,
    mode: str,
    where: dict[str, Any] | None,
    include: frozenset[str],
) -> SearchOut:
    started = time.perf_counter()
    vector = await engine.embed_one(query)
    embedded = time.perf_counter()
    hits = await store.search(
        vector,
        k=k,
        dims=dims,
        mode=mode,
        modality=modality,
        where=where,
        text="text" in include,
    )
    searched = time.perf_counter()
    response.headers["Server-Timing"] = (
        f"embed;dur={(embedded - started) * 1000:.1f}, search;dur={(searched - embedded) * 1000:.1f}"
    )
    return SearchOut(
        query_modality=query.modality,
        dims=dims,
        mode=mode,
        k=k,
        results=[_hit(h, include) for h in hits],
    )


def _hit(hit: SearchHit, include: frozenset[str]) -> SearchHitOut:
    """The hit with the fields asked for (left unset, and so out of the answer, otherwise)."""
    fields: dict[str, Any] = {}
    if "text" in include:
        fields["text"] = hit.text
    if "metadata" in include:
        fields["metadata"] = hit.metadata
    return SearchHitOut(id=hit.id, score=hit.score, modality=hit.modality, **fields)


@router.get(
    "/search",
    response_model=SearchOut,
    response_model_exclude_unset=True,
    responses=ERROR_RESPONSES,
    summary="Search by text",
)
async def search_text(
    response: Response,
    engine: EngineDep,
    store: StoreDep,
    settings: SettingsDep,
    q: Annotated[str, Query(description="The query text.")],
    dims: DimsQuery = 512,
    k: KQuery = 10,
    modality: ModalityQuery = None,
    mode: ModeQuery = "exact",
    where: WhereQuery = None,
    include: IncludeQuery = ",".join(HIT_FIELDS),
):
    _check_k(k, settings)
    filters = _where(where)
    fields = _include(include)
    (query,) = await decode_inputs([RawInput("q", text=q)], engine, settings)
    return await _search(
        query,
        response=response,
        engine=engine,
        store=store,
        dims=dims,
        k=k,
        modality=modality,
        mode=mode,
        where=filters,
        include=fields,
    )


@router.post(
    "/search",
    response_model=SearchOut,
    response_model_exclude_unset=True,
    responses=ERROR_RESPONSES,
    summary="Search with an uploaded image or audio clip (or a text) as the query",
    openapi_extra=request_body(
        json_model=TextIn,
        form_fields={"file": FILE_FIELD, "text": TEXT_FIELD},
        description='Multipart with one `file` part or one `text` field; or JSON `{"text": "..."}`.',
    ),
)
async def search_upload(
    request: Request,
    response: Response,
    engine: EngineDep,
    store: StoreDep,
    settings: SettingsDep,
    dims: DimsQuery = 512,
    k: KQuery = 10,
    modality: ModalityQuery = None,
    mode: ModeQuery = "exact",
    where: WhereQuery = None,
    include: IncludeQuery = ",".join(HIT_FIELDS),
):
    _check_k(k, settings)
    filters = _where(where)
    fields = _include(include)
    inputs = await read_single_input(request, settings)
    (query,) = await decode_inputs(inputs, engine, settings)
    response.headers.update(input_warnings([query]))
    return await _search(
        query,
        response=response,
        engine=engine,
        store=store,
        dims=dims,
        k=k,
        modality=modality,
        mode=mode,
        where=filters,
        include=fields,
    )

"""Stored items: add (one or a batch), list, get, delete. The index persists across restarts.

An item keeps its document: a text item its text, a file the `text` sent beside it
(a caption or title, stored but not embedded). `GET /items/{id}` and every search
hit return it as `text`. MMEMBED_STORE_TEXT=false, or `store_text=false` on a
request, keeps the vector only. A text longer than the stored-text limit
(MMEMBED_MAX_TEXT_CHARS) is refused with 413, never cut.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from index import Item, NewItem, Preview
from index.errors import ItemNotFound
from index.validation import MAX_ID_LENGTH, MAX_TEXT_CHARS
from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep, StateDep, StoreDep
from service.engine import EmbeddingEngine, Input
from service.errors import InvalidRequest, PayloadTooLarge
from service.inputs import (
    DimsQuery,
    RawInput,
    UndocumentedDimsQuery,
    base64_input,
    check_count,
    decode_inputs,
    form_inputs,
    form_text,
    is_json,
    parse_metadata,
    read_form,
    read_json,
    require_form_or_json,
)
from service.previews import PreviewLimits, make_preview
from service.schemas import (
    ERROR_RESPONSES,
    FILE_FIELD,
    FILES_FIELD,
    ID_FIELD,
    METADATA_FIELD,
    TEXT_FIELD,
    TEXTS_FIELD,
    DeletedOut,
    ItemCreated,
    ItemIn,
    ItemListOut,
    ItemOut,
    ItemsCreated,
    ItemsIn,
    Modality,
    request_body,
)
from service.settings import Settings

router = APIRouter(tags=["items"], dependencies=[Depends(require_api_key)])

ItemId = Annotated[str, Path(min_length=1, max_length=256, description="The item's id.")]
# Previews change only when their item is replaced: the browser may keep one, but asks
# (If-None-Match, answered 304) before each use, so a replaced item never shows a stale one.
PREVIEW_CACHE_CONTROL = "private, no-cache"
StoreTextQuery = Annotated[
    bool,
    Query(
        description="false: keep only the vector (and preview), not the text or caption. "
        "With MMEMBED_STORE_TEXT=false no text is kept whatever this says."
    ),
]


def stored_text_limit(settings: Settings) -> int:
    """The most characters a stored text may have: MMEMBED_MAX_TEXT_CHARS, within the
    index's own bound."""
    return min(settings.max_text_chars, MAX_TEXT_CHARS)


def _check_document(raw: RawInput, caption: str | None, settings: Settings) -> None:
    """413 naming the limit for a text or caption too long to store (never cut)."""
    limit = stored_text_limit(settings)
    for text, what in ((raw.text, "text"), (caption, "caption")):
        if text is not None and len(text) > limit:
            raise PayloadTooLarge(
                f"{raw.label}: the {what} is {len(text)} characters; a stored text is at most "
                f"{limit} (MMEMBED_MAX_TEXT_CHARS)"
            )


def _document(raw: RawInput, caption: str | None, keep: bool) -> str | None:
    """The text an item keeps: a text's own text, a file's caption; None if not kept."""
    if not keep:
        return None
    return raw.text if raw.text is not None else caption


def _split_caption(inputs: list[RawInput]) -> tuple[list[RawInput], str | None]:
    """One `file` part and one `text` field make one item: the file, and its caption."""
    files = [raw for raw in inputs if raw.data is not None]
    texts = [raw for raw in inputs if raw.text is not None]
    if len(files) == 1 and len(texts) == 1:
        return files, texts[0].text
    return inputs, None


async def _previews(
    inputs: list[RawInput], items: list[Input], settings: Settings
) -> list[Preview | None]:
    """One preview (or None) per input; all None when MMEMBED_PREVIEWS is off."""
    if not settings.previews:
        return [None] * len(items)
    limits = PreviewLimits.from_settings(settings)
    return await run_in_threadpool(
        lambda: [
            make_preview(item.modality, item.value, raw.data, limits, label=raw.label)
            for raw, item in zip(inputs, items, strict=True)
        ]
    )


def _item_out(item: Item, engine: EmbeddingEngine, dims: int | None) -> ItemOut:
    embedding = None if dims is None else engine.at_dims(item.vector, dims).tolist()
    return ItemOut(
        id=item.id,
        modality=item.modality,
        text=item.text,
        metadata=item.metadata,
        created_at=item.created_at,
        updated_at=item.updated_at,
        embedding=embedding,
    )


@router.post(
    "/items",
    status_code=201,
    response_model=ItemCreated,
    responses=ERROR_RESPONSES | {409: {"description": "An item with this id exists"}},
    summary="Embed and store one item",
    openapi_extra=request_body(
        json_model=ItemIn,
        form_fields={
            "file": FILE_FIELD,
            "text": TEXT_FIELD,
            "id": ID_FIELD,
            "metadata": METADATA_FIELD,
        },
        description=(
            "Multipart with one `file` part or one `text` field, optional `id` and `metadata` "
            '(a JSON object as text); or JSON `{"text": "...", "id": ..., "metadata": {...}}` '
            "(a file as `content_base64`). A `text` beside a file is its caption: stored and "
            "returned with it, not embedded."
        ),
    ),
)
async def add_item(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    store: StoreDep,
    settings: SettingsDep,
    store_text: StoreTextQuery = True,
):
    inputs, item_id, metadata, caption = await _read_item(request, settings)
    item, vector, preview, text = await _embed_item(inputs, caption, engine, settings, store_text)
    new_id = await store.add(
        vector, modality=item.modality, metadata=metadata, id=item_id, preview=preview, text=text
    )
    await state.refresh_index_gauge()
    return ItemCreated(id=new_id, modality=item.modality)


async def _embed_item(
    inputs: list[RawInput],
    caption: str | None,
    engine: EmbeddingEngine,
    settings: Settings,
    store_text: bool,
) -> tuple[Input, np.ndarray, Preview | None, str | None]:
    """What POST and PUT /items store for one input: the decoded item, its vector, its
    preview and the text kept with it."""
    (item,) = await decode_inputs(inputs, engine, settings)
    vector = await engine.embed_one(item)
    (preview,) = await _previews(inputs, [item], settings)
    return item, vector, preview, _document(inputs[0], caption, settings.store_text and store_text)


async def _read_item(
    request: Request, settings: Settings
) -> tuple[list[RawInput], str | None, dict | None, str | None]:
    """One item's input, id, metadata and caption, from multipart or JSON."""
    require_form_or_json(request)
    if is_json(request):
        body = await read_json(request, ItemIn)
        raw, caption = _json_input("input", body, settings)
        inputs = [raw]
        item_id, metadata = body.id, body.metadata
    else:
        async with read_form(request, settings) as form:
            inputs, caption = _split_caption(await form_inputs(form, settings))
            item_id = form_text(form, "id")
            metadata = parse_metadata(form_text(form, "metadata"))
        if item_id is not None and not 1 <= len(item_id) <= 256:
            raise InvalidRequest(f"id must be 1 to 256 characters, got {len(item_id)}")
    check_count(inputs, settings, single=True)
    _check_document(inputs[0], caption, settings)
    return inputs, item_id, metadata, caption


def _json_input(label: str, body: ItemIn, settings: Settings) -> tuple[RawInput, str | None]:
    """The input and the caption of a JSON item (a file's `text` is its caption)."""
    if body.content_base64 is None:
        return RawInput(label, text=body.text), None
    return base64_input(label, body.content_base64, settings), body.text


@router.post(
    "/items/batch",
    status_code=201,
    response_model=ItemsCreated,
    responses=ERROR_RESPONSES | {409: {"description": "An id exists already"}},
    summary="Embed and store several items; all or none",
    openapi_extra=request_body(
        json_model=ItemsIn,
        form_fields={"file": FILES_FIELD, "text": TEXTS_FIELD},
        description=(
            'JSON `{"items": [{"text" | "content_base64", "id"?, "metadata"?}, ...]}` (a '
            "`text` beside `content_base64` is the file's caption); or multipart with any "
            "number of `file` parts and `text` fields, each its own item (no ids, metadata or "
            "captions). Every input is checked and embedded before anything is stored."
        ),
    ),
)
async def add_items(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    store: StoreDep,
    settings: SettingsDep,
    store_text: StoreTextQuery = True,
):
    require_form_or_json(request)
    if is_json(request):
        body = await read_json(request, ItemsIn)
        read = [_json_input(f"items[{i}]", it, settings) for i, it in enumerate(body.items)]
        inputs = [raw for raw, _ in read]
        fields = [
            (it.id, it.metadata, caption) for it, (_, caption) in zip(body.items, read, strict=True)
        ]
    else:
        async with read_form(request, settings) as form:
            inputs = await form_inputs(form, settings)
        fields = [(None, None, None)] * len(inputs)
    check_count(inputs, settings, single=False)
    for raw, (_, _, caption) in zip(inputs, fields, strict=True):
        _check_document(raw, caption, settings)
    items = await decode_inputs(inputs, engine, settings)
    vectors = await engine.embed(items)
    previews = await _previews(inputs, items, settings)
    keep = settings.store_text and store_text
    new = [
        NewItem(
            vector=vector,
            modality=item.modality,
            metadata=meta,
            id=item_id,
            preview=preview,
            text=_document(raw, caption, keep),
        )
        for raw, item, vector, (item_id, meta, caption), preview in zip(
            inputs, items, vectors, fields, previews, strict=True
        )
    ]
    ids = await store.add_many(new)
    await state.refresh_index_gauge()
    return ItemsCreated(
        items=[ItemCreated(id=i, modality=it.modality) for i, it in zip(ids, items, strict=True)]
    )


@router.put(
    "/items/{item_id:path}",
    response_model=ItemCreated,
    responses=ERROR_RESPONSES,
    summary="Embed and store one item under this id, replacing any item it had",
    openapi_extra=request_body(
        json_model=ItemIn,
        form_fields={"file": FILE_FIELD, "text": TEXT_FIELD, "metadata": METADATA_FIELD},
        description="As `POST /items`; the id comes from the path (a body id must match it). "
        "The new text or caption replaces the old one (none sent: none kept).",
    ),
)
async def put_item(
    item_id: ItemId,
    request: Request,
    state: StateDep,
    engine: EngineDep,
    store: StoreDep,
    settings: SettingsDep,
    store_text: StoreTextQuery = True,
):
    inputs, body_id, metadata, caption = await _read_item(request, settings)
    if body_id is not None and body_id != item_id:
        raise InvalidRequest(f"the body's id {body_id!r} differs from the path's {item_id!r}")
    item, vector, preview, text = await _embed_item(inputs, caption, engine, settings, store_text)
    await store.upsert(
        vector, id=item_id, modality=item.modality, metadata=metadata, preview=preview, text=text
    )
    await state.refresh_index_gauge()
    return ItemCreated(id=item_id, modality=item.modality)


@router.get("/items", response_model=ItemListOut, responses=ERROR_RESPONSES, summary="List items")
async def list_items(
    engine: EngineDep,
    store: StoreDep,
    modality: Annotated[Modality | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
):
    items = await store.list(modality, limit, offset)
    total = await store.count(modality)
    return ItemListOut(total=total, items=[_item_out(it, engine, None) for it in items])


PREVIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/webp": {}, "audio/mpeg": {}},
        "description": "The thumbnail or audio clip",
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    404: {"description": "No such item, or it has no preview (texts never do)"},
}


# Registered before `GET /items/{id}`, whose path would otherwise swallow "/preview".
@router.get(
    "/items/{item_id:path}/preview",
    response_class=Response,
    responses=PREVIEW_RESPONSES,
    summary="The item's preview: a WebP thumbnail or an MP3 of its first seconds",
)
async def get_item_preview(
    item_id: ItemId,
    engine: EngineDep,
    store: StoreDep,
    if_none_match: Annotated[str | None, Header()] = None,
    include_embedding: Annotated[bool, Query(include_in_schema=False)] = False,
    dims: UndocumentedDimsQuery = 512,
):
    """404 `preview_not_found` when the item exists but has none; `not_found` when it does not."""
    # Before previews, GET /items/a/preview fetched an item whose id is "a/preview";
    # such an item still answers here exactly as it did (and hides a's preview here:
    # GET /previews/a has it). An id too long to have "/preview" added has no such twin.
    if len(item_id) + len("/preview") <= MAX_ID_LENGTH:
        try:
            shadowed = await store.get(f"{item_id}/preview")
        except ItemNotFound:
            pass
        else:
            out = _item_out(shadowed, engine, dims if include_embedding else None)
            return JSONResponse(jsonable_encoder(out))
    return _preview_response(await store.get_preview(item_id), if_none_match)


@router.get(
    "/previews/{item_id:path}",
    response_class=Response,
    responses=PREVIEW_RESPONSES,
    summary="An item's preview by its id alone: no suffix, so no other id can hide it",
)
async def get_preview(
    item_id: ItemId,
    store: StoreDep,
    if_none_match: Annotated[str | None, Header()] = None,
):
    """As `GET /items/{id}/preview`, for every id, "X/preview" and 256-character ones too."""
    return _preview_response(await store.get_preview(item_id), if_none_match)


def _preview_response(preview: Preview, if_none_match: str | None) -> Response:
    etag = '"' + hashlib.sha256(preview.data).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": PREVIEW_CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
    }
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(preview.data, media_type=preview.media_type, headers=headers)


@router.get(
    "/items/{item_id:path}",
    response_model=ItemOut,
    responses=ERROR_RESPONSES,
    summary="Get one item",
)
async def get_item(
    item_id: ItemId,
    engine: EngineDep,
    store: StoreDep,
    include_embedding: Annotated[bool, Query(description="Return the stored vector.")] = False,
    dims: DimsQuery = 512,
):
    item = await store.get(item_id)
    return _item_out(item, engine, dims if include_embedding else None)


@router.delete(
    "/items/{item_id:path}",
    response_model=DeletedOut,
    responses=ERROR_RESPONSES,
    summary="Delete one item",
)
async def delete_item(item_id: ItemId, state: StateDep, store: StoreDep):
    await store.delete(item_id)
    await state.refresh_index_gauge()
    return DeletedOut(id=item_id)

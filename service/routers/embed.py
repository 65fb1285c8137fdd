"""`POST /embed` (one input) and `POST /embed/batch` (several, mixed modalities).

Responses are encoded once from the float32 vectors (`service.responses`); the
`response_model`s only document them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep
from service.inputs import (
    DimsQuery,
    RawInput,
    check_count,
    decode_inputs,
    form_inputs,
    is_json,
    read_form,
    read_json,
    read_single_input,
    require_form_or_json,
)
from service.outputs import (
    EncodingQuery,
    OutputQuery,
    check_outputs,
    encode_vector,
    floats_in,
    output_fields,
    parse_outputs,
)
from service.responses import input_warnings, vector_response
from service.schemas import (
    ERROR_RESPONSES,
    FILE_FIELD,
    FILES_FIELD,
    TEXT_FIELD,
    TEXTS_FIELD,
    EmbedBatchOut,
    EmbedOut,
    TextIn,
    TextsIn,
    request_body,
)

router = APIRouter(tags=["embed"], dependencies=[Depends(require_api_key)])


@router.post(
    "/embed",
    response_model=EmbedOut,
    responses=ERROR_RESPONSES,
    summary="Embed one image, audio clip or text",
    openapi_extra=request_body(
        json_model=TextIn,
        form_fields={"file": FILE_FIELD, "text": TEXT_FIELD},
        description=(
            "Multipart with one `file` part (image or audio, detected from its bytes) or one "
            '`text` field; or JSON `{"text": "..."}`.'
        ),
    ),
)
async def embed(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    dims: DimsQuery = 512,
    output: OutputQuery = "embedding",
    encoding_format: EncodingQuery = "float",
):
    outputs = parse_outputs(output)
    check_outputs(outputs, engine)
    inputs = await read_single_input(request, settings)
    (item,) = await decode_inputs(inputs, engine, settings)
    if outputs == ("embedding",):
        vector = engine.at_dims(await engine.embed_one(item), dims)
        content = {
            "modality": item.modality,
            "dims": dims,
            "embedding": encode_vector(vector, encoding_format),
        }
        return await vector_response(content, floats=dims, headers=input_warnings([item]))
    (row,) = await engine.outputs([item])
    return await vector_response(
        output_fields(item, row, dims=dims, outputs=outputs, encoding=encoding_format),
        floats=floats_in([row], outputs, dims),
        headers=input_warnings([item]),
    )


@router.post(
    "/embed/batch",
    response_model=EmbedBatchOut,
    responses=ERROR_RESPONSES,
    summary="Embed several inputs of any modalities in one call",
    openapi_extra=request_body(
        json_model=TextsIn,
        form_fields={"file": FILES_FIELD, "text": TEXTS_FIELD},
        description=(
            "Multipart with any number of `file` parts and `text` fields (answered in the order "
            'sent); or JSON `{"texts": ["...", ...]}`. Any bad input fails the whole call.'
        ),
    ),
)
async def embed_batch(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    dims: DimsQuery = 512,
    output: OutputQuery = "embedding",
    encoding_format: EncodingQuery = "float",
):
    outputs = parse_outputs(output)
    check_outputs(outputs, engine)
    require_form_or_json(request)
    if is_json(request):
        body = await read_json(request, TextsIn)
        inputs = [RawInput(f"texts[{i}]", text=t) for i, t in enumerate(body.texts)]
    else:
        async with read_form(request, settings) as form:
            inputs = await form_inputs(form, settings)
    check_count(inputs, settings, single=False)
    items = await decode_inputs(inputs, engine, settings)
    if outputs == ("embedding",) and encoding_format == "float":
        vectors = engine.at_dims(await engine.embed(items), dims)
        rows = [
            {"index": i, "modality": item.modality, "dims": dims, "embedding": vector}
            for i, (item, vector) in enumerate(zip(items, vectors, strict=True))
        ]
        return await vector_response(
            {"dims": dims, "data": rows}, floats=vectors.size, headers=input_warnings(items)
        )
    got = await engine.outputs(items)
    rows = [
        {
            "index": i,
            **output_fields(item, row, dims=dims, outputs=outputs, encoding=encoding_format),
        }
        for i, (item, row) in enumerate(zip(items, got, strict=True))
    ]
    return await vector_response(
        {"dims": dims, "data": rows},
        floats=floats_in(got, outputs, dims),
        headers=input_warnings(items),
    )

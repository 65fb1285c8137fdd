"""`POST /describe`: a frozen language model reads an upload's latents and writes text.

Multipart with one `file` (audio, or an image where the model has images) and the
optional fields `prompt` and `max_tokens`. The upload goes through the same limits
and decoding as `/embed`; its latents come from the same resampler; the language
model then writes greedily, so the same input gives the same text. Without a
language model (the `[llm]` extra) or a trained projector the route answers
400 `describe_unavailable`, saying which is missing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.auth import require_api_key
from service.deps import EngineDep, SettingsDep, StateDep
from service.describe import DescribeJob
from service.errors import InvalidRequest, ServiceError
from service.inputs import (
    check_count,
    decode_inputs,
    form_inputs,
    form_text,
    read_form,
    require_form,
)
from service.responses import dumps, input_warnings
from service.schemas import ERROR_RESPONSES, FILE_FIELD, DescribeOut, request_body

router = APIRouter(tags=["describe"], dependencies=[Depends(require_api_key)])

DESCRIBED = ("audio", "image")


class DescribeUnavailable(ServiceError):
    status_code = 400
    error_type = "describe_unavailable"


def _max_tokens(value: str | None, cap: int) -> int:
    if value is None or not value.strip():
        return min(48, cap)
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"max_tokens must be a whole number; got {value!r}") from None
    if not 1 <= number <= cap:
        raise InvalidRequest(
            f"max_tokens must be 1 to {cap} (MMEMBED_DESCRIBE_MAX_TOKENS); got {number}"
        )
    return number


@router.post(
    "/describe",
    response_model=DescribeOut,
    responses=ERROR_RESPONSES,
    summary="Describe an audio clip or image in words (a language model reads its latents)",
    openapi_extra=request_body(
        json_model=None,
        form_fields={
            "file": FILE_FIELD,
            "prompt": {
                "type": "string",
                "description": "What to ask of the input (default: the prompt the projector "
                "was trained with, 'Write down what is said.' for audio).",
            },
            "max_tokens": {
                "type": "integer",
                "description": "Most tokens to write (default 48; at most "
                "MMEMBED_DESCRIBE_MAX_TOKENS).",
            },
        },
        description="Multipart with one `file` part, and optionally `prompt` and `max_tokens`.",
    ),
)
async def describe(request: Request, engine: EngineDep, settings: SettingsDep, state: StateDep):
    service = state.describer
    if service is None:
        raise DescribeUnavailable(f"/describe is off: {state.describer_off}")
    require_form(request)
    async with read_form(request, settings) as form:
        inputs = await form_inputs(form, settings)
        prompt = form_text(form, "prompt")
        max_tokens = _max_tokens(form_text(form, "max_tokens"), settings.describe_max_tokens)
    if any(raw.text is not None for raw in inputs):
        raise InvalidRequest("/describe takes a `file` part (audio or an image), not text")
    check_count(inputs, settings, single=True)
    (item,) = await decode_inputs(inputs, engine, settings)
    if item.modality not in DESCRIBED:
        raise InvalidRequest(f"/describe takes audio or an image; got {item.modality}")
    if prompt is not None:
        prompt = prompt.strip() or None
    if prompt is not None:
        count = service.prompt_tokens(item.modality, prompt)
        if count > settings.describe_max_prompt_tokens:
            raise InvalidRequest(
                f"prompt is {count} tokens; the limit is {settings.describe_max_prompt_tokens} "
                "(MMEMBED_DESCRIBE_MAX_PROMPT_TOKENS)"
            )
    (row,) = await engine.outputs([item])
    generation = await service.describe(
        DescribeJob(latents=row[1], modality=item.modality, prompt=prompt, max_tokens=max_tokens)
    )
    body = {
        "text": generation.text,
        "modality": item.modality,
        "model": service.name,
        "tokens": generation.tokens,
        "seconds": round(generation.seconds, 3),
    }
    return Response(dumps(body), headers=input_warnings([item]), media_type="application/json")

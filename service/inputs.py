"""Request bodies that carry inputs: multipart/form-data (files, text fields) or JSON.

Every endpoint that takes text takes it both as a form field and as JSON; files
come as multipart parts. Files are size-checked before they are read, decoded
off the event loop, and their modality comes from their bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ValidationError
from starlette._utils import AwaitableOrContextManager
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from model.constants import MATRYOSHKA_DIMS
from service.budget import reserve_decode
from service.engine import EmbeddingEngine, Input, require_modality
from service.errors import (
    AudioTooShort,
    CorruptMedia,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMedia,
)
from service.media import MediaCost, decode_media, probe_media
from service.schemas import TextIn
from service.settings import Settings

M = TypeVar("M", bound=BaseModel)

# What a JSON value from a client may hold (request bodies, form `metadata`, `where=`).
# Deeper or wider values, integers outside int64 (what SQLite and PostgreSQL's bigint
# hold), NaN and Infinity (no JSON answer can carry them), unpaired surrogates (not
# UTF-8) and NUL in keys (PostgreSQL's jsonb cannot hold it) are refused with a 400
# before anything else reads them.
MAX_JSON_DEPTH = 32
MAX_JSON_KEYS = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_INT_DIGITS = 20
BODY = "JSON body"


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits is out of range")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer {value} is outside the 64-bit range [-2^63, 2^63-1]")
    return value


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _check_string(value: str, where: str, *, key: bool) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where}: an unpaired surrogate is not valid Unicode ({exc.reason})"
        ) from None
    if key and "\x00" in value:
        raise ValueError(f"{where}: a key must not contain NUL")


def check_json_value(value: Any, *, name: str) -> Any:
    """`value` itself if it is within the limits above, else InvalidRequest naming `name`.

    Walks the value without recursion, so no nesting can overflow the stack.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, name)]
    try:
        while stack:
            node, depth, path = stack.pop()
            if isinstance(node, str):
                _check_string(node, path, key=False)
            elif isinstance(node, bool) or node is None or isinstance(node, float):
                continue
            elif isinstance(node, int):
                if not INT64_MIN <= node <= INT64_MAX:
                    raise ValueError(f"{path}: integer outside the 64-bit range")
            elif isinstance(node, dict | list):
                if depth > MAX_JSON_DEPTH:
                    raise ValueError(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
                if isinstance(node, dict):
                    if len(node) > MAX_JSON_KEYS:
                        raise ValueError(
                            f"{path}: {len(node)} keys; the limit is {MAX_JSON_KEYS} per object"
                        )
                    for key, child in node.items():
                        _check_string(str(key), f"{path}: key {str(key)[:40]!r}", key=True)
                        stack.append((child, depth + 1, f"{path}.{str(key)[:40]}"))
                else:
                    stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(node))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return value


def load_json(text: str | bytes, *, name: str) -> Any:
    """Parse client JSON and check it (`check_json_value`); InvalidRequest naming `name`.

    Malformed JSON, integers of over 20 digits (Python refuses 4,300 with a ValueError
    of its own), NaN/Infinity and nesting past the parser's recursion limit all give
    the same 400.
    """
    try:
        value = json.loads(text, parse_int=_json_int, parse_constant=_json_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if name == BODY:
            raise InvalidRequest(f"malformed JSON body: {exc}") from None
        raise InvalidRequest(f"{name} is not valid JSON: {exc}") from None
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    return check_json_value(value, name=name)


def _check_dims(value: int) -> int:
    if value not in MATRYOSHKA_DIMS:
        raise ValueError(f"dims must be one of {', '.join(map(str, MATRYOSHKA_DIMS))}")
    return value


DimsQuery = Annotated[
    int,
    AfterValidator(_check_dims),
    Query(
        description="Matryoshka size: the first `dims` components, renormalised.",
        json_schema_extra={"enum": list(MATRYOSHKA_DIMS)},
    ),
]
# The same parameter left out of the OpenAPI schema, for a route that only passes it on.
UndocumentedDimsQuery = Annotated[int, AfterValidator(_check_dims), Query(include_in_schema=False)]


@dataclass(frozen=True)
class RawInput:
    """One input before decoding: a text or a file's bytes; `label` names it in errors."""

    label: str
    text: str | None = None
    data: bytes | None = None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_form(request: Request) -> bool:
    return _content_type(request) in ("multipart/form-data", "application/x-www-form-urlencoded")


def is_json(request: Request) -> bool:
    kind = _content_type(request)
    return kind == "application/json" or kind.endswith("+json")


def require_form_or_json(request: Request) -> None:
    if not (is_form(request) or is_json(request)):
        got = _content_type(request) or "none"
        raise UnsupportedMedia(
            f"request body must be multipart/form-data (files, text fields) or "
            f"application/json; got Content-Type {got}"
        )


def require_form(request: Request) -> None:
    """415 unless the body is multipart/form-data (a route that takes a file upload)."""
    if not is_form(request):
        got = _content_type(request) or "none"
        raise UnsupportedMedia(
            f"request body must be multipart/form-data with a 'file' part; got Content-Type {got}"
        )


def require_json(request: Request) -> None:
    """415 unless the body is JSON; a request with no Content-Type is read as JSON."""
    if _content_type(request) and not is_json(request):
        raise UnsupportedMedia(
            f"request body must be application/json; got Content-Type {_content_type(request)}"
        )


async def read_json(request: Request, model: type[M]) -> M:
    """The JSON body validated against `model` (400 malformed, 422 invalid)."""
    data = load_json(await request.body(), name=BODY)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


def read_form(request: Request, settings: Settings) -> AwaitableOrContextManager[FormData]:
    """The form, as `async with read_form(...) as form` (closes its temp files).

    The parser refuses more parts than the input limit allows, and text fields larger
    than the text limit (in bytes, generously).
    """
    return request.form(
        max_files=settings.max_inputs_per_request,
        max_fields=settings.max_inputs_per_request + 8,
        max_part_size=max(settings.max_text_chars * 4, 64 * 1024),
    )


async def file_bytes(upload: UploadFile, label: str, settings: Settings) -> bytes:
    """The upload's bytes, refusing files over `max_upload_bytes` before reading them."""
    limit = settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(
            f"{label} is {upload.size} bytes; the limit is {limit} (MMEMBED_MAX_UPLOAD_BYTES)"
        )
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{label} is over the {limit}-byte limit (MMEMBED_MAX_UPLOAD_BYTES)")
    return data


async def form_inputs(form: FormData, settings: Settings) -> list[RawInput]:
    """Files (`file` parts) and texts (`text` fields), in the order they were sent."""
    inputs: list[RawInput] = []
    for key, value in form.multi_items():
        if key not in ("file", "text"):
            continue
        label = f"input {len(inputs)} ({key})"
        if isinstance(value, UploadFile):
            if key != "file":
                raise InvalidRequest(f"{label}: files go in 'file' parts, text in 'text' fields")
            inputs.append(RawInput(label, data=await file_bytes(value, label, settings)))
        else:
            if key == "file":
                raise InvalidRequest(f"{label}: the 'file' part must be a file upload")
            inputs.append(RawInput(label, text=value))
    return inputs


def form_text(form: FormData, key: str) -> str | None:
    """A plain (non-file) form field, or None; refuses a repeated or file-valued field."""
    values = form.getlist(key)
    if not values:
        return None
    if len(values) > 1 or isinstance(values[0], UploadFile):
        raise InvalidRequest(f"form field '{key}' must be given once, as text")
    return values[0]


def base64_input(label: str, content: str, settings: Settings) -> RawInput:
    if len(content) > settings.max_upload_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"{label} is over the {settings.max_upload_bytes}-byte upload limit")
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{label}: content_base64 is not valid base64: {exc}") from exc
    return RawInput(label, data=data)


def parse_json_object(value: Any, *, name: str) -> dict[str, Any] | None:
    """A JSON object given as text (form field, query, flag) or already parsed (JSON body).

    None when absent or blank; InvalidRequest naming `name` when it is not valid JSON
    or not an object.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        value = load_json(value, name=name)
    else:
        check_json_value(value, name=name)
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def parse_metadata(value: Any) -> dict[str, Any] | None:
    """Metadata from a form field (JSON text) or JSON body (object); 400 if not an object."""
    return parse_json_object(value, name="metadata")


def check_count(inputs: list[RawInput], settings: Settings, *, single: bool) -> None:
    if not inputs:
        raise InvalidRequest("no input: send a 'file' part or a 'text' field (or JSON text)")
    if single and len(inputs) > 1:
        raise InvalidRequest(
            f"this endpoint takes one input (a file or a text), got {len(inputs)}; "
            "use the batch endpoint for several"
        )
    if len(inputs) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(inputs)} inputs; the limit is {settings.max_inputs_per_request} per request"
        )


async def read_single_input(request: Request, settings: Settings) -> list[RawInput]:
    """The one input of a call taking a `file` part or a `text` field, or JSON `{"text"}`."""
    require_form_or_json(request)
    if is_json(request):
        inputs = [RawInput("input", text=(await read_json(request, TextIn)).text)]
    else:
        async with read_form(request, settings) as form:
            inputs = await form_inputs(form, settings)
    check_count(inputs, settings, single=True)
    return inputs


def check_text(text: str, settings: Settings) -> str:
    """The text itself if it is usable, else InvalidRequest naming the problem."""
    if not text.strip():
        raise InvalidRequest("text is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"text is not valid Unicode: an unpaired surrogate ({exc.reason})"
        ) from None
    if len(text) > settings.max_text_chars:
        raise InvalidRequest(
            f"text is {len(text)} characters; the limit is {settings.max_text_chars}"
        )
    return text


def decode_input(raw: RawInput, settings: Settings, loaded: Sequence[str]) -> Input:
    """A checked text or a decoded file of one of the ``loaded`` modalities.

    Errors name the input (``raw.label``); the HTTP routes and the command line
    both decode through here.
    """
    try:
        if raw.text is not None:
            return Input("text", check_text(raw.text, settings))
        assert raw.data is not None
        media = decode_media(
            raw.data,
            max_pixels=settings.max_image_pixels,
            min_audio_seconds=settings.min_audio_seconds,
            max_audio_seconds=settings.max_audio_seconds,
        )
        require_modality(media.modality, loaded)
        return Input(
            media.modality, media.value, tuple(f"{raw.label}: {w}" for w in media.warnings)
        )
    except (
        AudioTooShort,
        CorruptMedia,
        UnsupportedMedia,
        PayloadTooLarge,
        InvalidRequest,
    ) as exc:
        raise type(exc)(f"{raw.label}: {exc.message}") from exc


def _probe(raw: RawInput, settings: Settings) -> MediaCost:
    try:
        assert raw.data is not None
        return probe_media(
            raw.data,
            max_pixels=settings.max_image_pixels,
            max_audio_seconds=settings.max_audio_seconds,
        )
    except (CorruptMedia, UnsupportedMedia, PayloadTooLarge, InvalidRequest) as exc:
        raise type(exc)(f"{raw.label}: {exc.message}") from exc


def probe_files(inputs: Sequence[RawInput], settings: Settings) -> list[MediaCost]:
    """What decoding a request's files will take, from their headers alone; 413 when
    their pixels or seconds together are over the request's limits."""
    costs = [_probe(raw, settings) for raw in inputs if raw.data is not None]
    pixels = sum(cost.pixels for cost in costs)
    if pixels > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"the images in this request are {pixels} pixels together; the limit is "
            f"{settings.max_request_pixels} per request (MMEMBED_MAX_REQUEST_PIXELS)"
        )
    seconds = sum(cost.seconds for cost in costs)
    if seconds > settings.max_request_audio_seconds:
        raise PayloadTooLarge(
            f"the audio in this request is {seconds:.1f} s together; the limit is "
            f"{settings.max_request_audio_seconds:g} s per request "
            "(MMEMBED_MAX_REQUEST_AUDIO_SECONDS)"
        )
    return costs


def request_decode_bytes(costs: Sequence[MediaCost]) -> int:
    """Most memory decoding a request's files one after another holds: the largest
    one's peak, and what every file keeps once decoded."""
    if not costs:
        return 0
    return max(c.decode_bytes for c in costs) + sum(c.held_bytes for c in costs)


async def _decode(raw: RawInput, engine: EmbeddingEngine, settings: Settings) -> Input:
    if raw.text is not None:
        return decode_input(raw, settings, engine.modalities)
    return await run_in_threadpool(decode_input, raw, settings, engine.modalities)


async def decode_inputs(
    inputs: list[RawInput], engine: EmbeddingEngine, settings: Settings
) -> list[Input]:
    """Decoded inputs in order; the first bad one fails the request (nothing is embedded)."""
    if all(raw.text is not None for raw in inputs):  # checked in place: no task per input
        return [decode_input(raw, settings, engine.modalities) for raw in inputs]
    # Headers first: nothing is decoded until the whole request fits its limits and the
    # server has room for what decoding it will hold (service/budget.py).
    costs = await run_in_threadpool(probe_files, inputs, settings)
    await reserve_decode(request_decode_bytes(costs))
    # One file at a time: decoding is where memory peaks, so a request never holds
    # more than one file's peak at once (plus what earlier files left, reduced).
    return [await _decode(raw, engine, settings) for raw in inputs]

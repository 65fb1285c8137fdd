"""JSON responses serialised once, with orjson, straight from numpy vectors.

Routes that return embeddings build a plain dict holding float32 arrays and hand
it here; nothing converts 512 floats to Python objects or validates them through
pydantic (their `response_model` still documents the shape in OpenAPI). Encoding
one 512-d vector takes tens of microseconds, less than a hop to a worker thread,
so small bodies are encoded on the event loop; bodies over `OFFLOAD_FLOATS` floats
(a large batch) are encoded on a worker thread, keeping the loop free.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.engine import Input

OFFLOAD_FLOATS = 8 * 512
INPUT_WARNING_HEADER = "X-Mmembed-Input-Warning"


def dumps(content: Any) -> bytes:
    """JSON bytes; numpy arrays become lists of their float32 values."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def input_warnings(items: Iterable[Input]) -> dict[str, str]:
    """The `X-Mmembed-Input-Warning` header for inputs embedded despite a problem, if any."""
    found = [w for item in items for w in item.warnings]
    if not found:
        return {}
    return {INPUT_WARNING_HEADER: "; ".join(found).encode("ascii", "replace").decode()}


async def vector_response(
    content: Any, *, floats: int, headers: dict[str, str] | None = None
) -> Response:
    """A 200 JSON response for `content`, which holds `floats` vector components in all."""
    body = dumps(content) if floats <= OFFLOAD_FLOATS else await run_in_threadpool(dumps, content)
    return Response(body, headers=headers, media_type="application/json")

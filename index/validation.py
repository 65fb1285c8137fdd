"""Checks on item fields and query arguments shared by every backend, so all give the same errors."""

from __future__ import annotations

import functools
import json
import unicodedata
from typing import Any

import numpy as np

from .errors import InvalidItem, InvalidQuery, InvalidVector
from .items import Preview
from .vectors import EMBED_DIM, check_dims

MAX_ID_LENGTH = 256
MAX_MODALITY_LENGTH = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_PREVIEW_BYTES = 16 * 2**20  # a sanity bound; the service keeps previews far smaller
MAX_MEDIA_TYPE_LENGTH = 128
# The longest document a store keeps with an item. The service refuses longer texts
# first (MMEMBED_MAX_TEXT_CHARS, 10,000 by default); this bound holds whatever it is set to.
MAX_TEXT_CHARS = 100_000


def stack_vectors(vectors: list[Any]) -> np.ndarray:
    """Stack per-item vectors into (N, 512), naming the first item of the wrong shape."""
    arrays = []
    for n, vector in enumerate(vectors):
        try:
            array = np.asarray(vector)
        except (TypeError, ValueError) as exc:
            raise InvalidVector(f"vector {n} is not a numeric array: {exc}") from exc
        if array.ndim != 1 or array.shape[0] != EMBED_DIM:
            raise InvalidVector(
                f"vector {n} must have shape ({EMBED_DIM},), got {tuple(array.shape)}"
            )
        arrays.append(array)
    return np.stack(arrays)


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _printable(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def check_id(item_id: Any) -> str:
    if not isinstance(item_id, str) or not item_id or len(item_id) > MAX_ID_LENGTH:
        raise InvalidItem(
            f"id must be a string of 1 to {MAX_ID_LENGTH} characters, got {item_id!r}"
        )
    if not _printable(item_id):
        raise InvalidItem(f"id must not contain control characters, got {item_id!r}")
    if item_id in (".", ".."):
        # A URL path cannot name them: clients resolve /items/.. to / before sending it.
        raise InvalidItem(f"id must not be '.' or '..' (no URL can name it), got {item_id!r}")
    return item_id


@functools.lru_cache(maxsize=256)
def _valid_modality(modality: str) -> bool:
    return 0 < len(modality) <= MAX_MODALITY_LENGTH and _printable(modality)


def check_modality(modality: Any) -> str:
    if not isinstance(modality, str) or not _valid_modality(modality):
        raise InvalidItem(
            f"modality must be a printable string of 1 to {MAX_MODALITY_LENGTH} characters, "
            f"got {modality!r}"
        )
    return modality


def metadata_json(metadata: Any) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidItem(f"metadata must be a JSON object (dict), got {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidItem("metadata keys must be strings")
    try:
        text = json.dumps(metadata, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidItem(f"metadata is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidItem(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
    return text


def check_text(text: Any) -> str | None:
    """None, or a document of at most MAX_TEXT_CHARS characters (never cut: refused).

    Kept as given, newlines and tabs included; NUL (which PostgreSQL's text type
    cannot hold) and unpaired surrogates (not UTF-8) are refused, on both backends alike.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidItem(f"text must be a string or None, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidItem(
            f"text is {len(text)} characters; a stored text is at most {MAX_TEXT_CHARS}"
        )
    if "\x00" in text:
        raise InvalidItem("text must not contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidItem(f"text is not valid Unicode: {exc}") from exc
    return text


def check_where(where: Any) -> list[tuple[str, Any]]:
    """Validated metadata equalities `{key: scalar}` as (key, value) pairs.

    Values are strings, finite numbers, booleans or None; JSON types stay apart
    (1 matches 1.0 but not true or "1").
    """
    if where is None:
        return []
    if not isinstance(where, dict):
        raise InvalidQuery(f"where must be a dict of metadata equalities, got {where!r}")
    pairs = []
    for key, value in where.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise InvalidQuery(f"where keys must be non-empty strings without quotes, got {key!r}")
        if isinstance(value, float) and not np.isfinite(value):
            raise InvalidQuery(f"where[{key!r}] must be finite, got {value!r}")
        if value is not None and not isinstance(value, str | int | float):
            raise InvalidQuery(
                f"where[{key!r}] must be a string, number, boolean or null, "
                f"got {type(value).__name__}"
            )
        pairs.append((key, value))
    return pairs


def check_preview(preview: Any) -> Preview | None:
    """None, or a Preview of non-empty bytes (at most 16 MiB) with a `type/subtype` media type."""
    if preview is None:
        return None
    if not isinstance(preview, Preview):
        raise InvalidItem(f"preview must be a Preview or None, got {type(preview).__name__}")
    if not isinstance(preview.data, bytes) or not preview.data:
        raise InvalidItem("preview data must be non-empty bytes")
    if len(preview.data) > MAX_PREVIEW_BYTES:
        raise InvalidItem(f"preview is {len(preview.data)} bytes; the limit is {MAX_PREVIEW_BYTES}")
    kind = preview.media_type
    if (
        not isinstance(kind, str)
        or not 3 <= len(kind) <= MAX_MEDIA_TYPE_LENGTH
        or kind.count("/") != 1
        or not kind.isascii()
        or not _printable(kind)
        or any(ch.isspace() for ch in kind)
    ):
        raise InvalidItem(f"preview media_type must look like 'image/webp', got {kind!r}")
    return preview


SEARCH_MODES = ("exact", "adaptive")


def check_search(k: Any, dims: Any, mode: Any, modality: Any, max_k: int) -> int:
    """Check a search's k, dims, mode and modality filter; returns the dims as an int."""
    if not is_int(k) or not 1 <= k <= max_k:
        raise InvalidQuery(f"k must be an int in [1, {max_k}], got {k!r}")
    dims = check_dims(dims)
    if mode not in SEARCH_MODES:
        raise InvalidQuery(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    if modality is not None:
        check_modality(modality)
    return dims

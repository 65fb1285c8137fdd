"""Move a collection between backends through a portable JSON-lines file.

One item per line: `{"id": str, "modality": str, "metadata": {...}, "vector": [512 floats]}`,
plus `"text": str` for an item that has a document (a file written before documents
were kept has none, and imports as before).
Vectors are written as float64 decimals of the stored float32 values, so none
of their precision is lost (the store re-normalises them on import: float32
rounding, about 1e-8). `created_at` is not carried: imported items are new. `export_items` pages through any
`VectorBackend` in creation order; `import_items` writes batches with `add_many`
(each batch all or nothing) or, with `replace=True`, upserts item by item.

Export a collection that is not being written to: pages are read by offset, so
writes during an export may shift items between pages.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from .backend import VectorBackend
from .errors import StoreError
from .items import NewItem
from .vectors import EMBED_DIM

PAGE = 1000


class TransferError(StoreError, ValueError):
    """A line of an import file is not an item; names the line."""


def export_items(
    store: VectorBackend, out: IO[str], *, progress: bool | None = None, page: int = PAGE
) -> int:
    """Write every item of `store` to `out`, one JSON object per line; returns the count."""
    total = store.count()
    written = 0
    with tqdm(total=total, desc="export", unit="item", disable=_quiet(progress)) as bar:
        while True:
            items = store.list(limit=page, offset=written)
            for item in items:
                row: dict[str, Any] = {
                    "id": item.id,
                    "modality": item.modality,
                    "metadata": item.metadata,
                }
                if item.text is not None:
                    row["text"] = item.text
                row["vector"] = item.vector.astype(np.float64).tolist()
                out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            written += len(items)
            bar.update(len(items))
            if len(items) < page:
                return written


def import_items(
    store: VectorBackend,
    source: IO[str],
    *,
    replace: bool = False,
    batch: int = PAGE,
    size_bytes: int | None = None,
    progress: bool | None = None,
) -> int:
    """Add the items read from `source` to `store`; returns how many were written.

    An id that exists already fails its batch with DuplicateId (earlier batches stay
    written), unless `replace`, which upserts. `size_bytes` (the file's size) gives
    the progress bar a total.
    """
    written = 0
    pending: list[NewItem] = []
    with tqdm(
        total=size_bytes, desc="import", unit="B", unit_scale=True, disable=_quiet(progress)
    ) as bar:
        for item, length in _read(source):
            pending.append(item)
            bar.update(length)
            if len(pending) >= batch:
                written += _write(store, pending, replace)
                pending = []
        if pending:
            written += _write(store, pending, replace)
    return written


def _write(store: VectorBackend, items: list[NewItem], replace: bool) -> int:
    if not replace:
        return len(store.add_many(items))
    for item in items:
        store.upsert(
            item.vector, id=item.id, modality=item.modality, metadata=item.metadata, text=item.text
        )
    return len(items)


def _read(source: Iterable[str]) -> Iterator[tuple[NewItem, int]]:
    """(item, bytes of its line) for each non-blank line; TransferError names a bad one."""
    for number, line in enumerate(source, start=1):
        length = len(line.encode())
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TransferError(f"line {number}: not JSON: {exc}") from exc
        yield _item(row, number), length


def _item(row: Any, number: int) -> NewItem:
    if not isinstance(row, dict):
        raise TransferError(f"line {number}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in ("id", "modality", "vector") if key not in row]
    if missing:
        raise TransferError(f"line {number}: missing {', '.join(missing)}")
    vector = row["vector"]
    if not isinstance(vector, list) or len(vector) != EMBED_DIM:
        size = len(vector) if isinstance(vector, list) else type(vector).__name__
        raise TransferError(
            f"line {number}: vector must be a list of {EMBED_DIM} numbers, got {size}"
        )
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TransferError(f"line {number}: vector holds a non-number: {exc}") from exc
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise TransferError(f"line {number}: text must be a string, got {type(text).__name__}")
    return NewItem(array, row["modality"], row.get("metadata"), row["id"], text=text)


def _quiet(progress: bool | None) -> bool:
    """No bar when asked for none, or by default when stderr is not a terminal."""
    return not (sys.stderr.isatty() if progress is None else progress)

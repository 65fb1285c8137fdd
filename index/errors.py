"""Domain errors of the vector store.

Every error raised by `index` derives from `StoreError`; input errors also derive
from `ValueError` and a missing id from `KeyError`, so callers can map them to
4xx answers without importing FAISS or SQLite.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by the vector store."""


class ItemNotFound(StoreError, KeyError):
    """No item has the requested id."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"no item with id {self.item_id!r}"


class PreviewNotFound(StoreError, KeyError):
    """The item exists but has no preview (a text, or stored without one)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"item {self.item_id!r} has no preview"


class DuplicateId(StoreError, ValueError):
    """`add` was given an id that already exists (use `upsert` to replace it)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"an item with id {item_id!r} already exists; use upsert to replace it")
        self.item_id = item_id


class InvalidVector(StoreError, ValueError):
    """A vector has the wrong shape or type, holds NaN/inf, or is all zeros."""


class InvalidQuery(StoreError, ValueError):
    """Bad search or listing arguments (k, dims, mode, filters, limit, offset)."""


class InvalidItem(StoreError, ValueError):
    """Bad item fields other than the vector: id, modality or metadata."""


class StoreLocked(StoreError):
    """Another process (or another open store in this process) holds the data directory."""

    def __init__(self, data_dir: str, holder_pid: int | None) -> None:
        holder = f"process {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"data directory {data_dir} is in use by {holder}; "
            "only one process may open a store at a time"
        )
        self.data_dir = data_dir
        self.holder_pid = holder_pid


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, restarting, or no free connection in time).

    The request may be retried: nothing was half-written (each write is one transaction).
    """


class ModelMismatch(StoreError):
    """The store holds vectors of another model than the one about to write or search it."""

    def __init__(self, location: str, held: object, loaded: object, items: int) -> None:
        super().__init__(
            f"the index at {location} holds {items} vectors made by {held}, but the model "
            f"loaded now is {loaded}. Vectors of different models are not comparable: serve "
            "the model that made them, give the new model its own data directory or "
            "database (MMEMBED_DATA_DIR / MMEMBED_INDEX_URL), or re-embed the items into it."
        )
        self.held = held
        self.loaded = loaded
        self.items = items

"""Matryoshka-aware vector store: FAISS 64-d and 512-d indexes over a durable SQLite store.

The names below are imported on first use, so that ``index.atomic`` (the
project's file writer, used by ``model/`` for checkpoints and caches) loads
neither FAISS nor numpy.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import VectorBackend
    from .config import IndexConfig
    from .items import Item, NewItem, Preview, SearchHit
    from .store import VectorStore
    from .vectors import MATRYOSHKA_DIMS

_HOMES = {
    "MATRYOSHKA_DIMS": ".vectors",
    "IndexConfig": ".config",
    "Item": ".items",
    "NewItem": ".items",
    "Preview": ".items",
    "SearchHit": ".items",
    "VectorBackend": ".backend",
    "VectorStore": ".store",
}

__all__ = [
    "MATRYOSHKA_DIMS",
    "IndexConfig",
    "Item",
    "NewItem",
    "Preview",
    "SearchHit",
    "VectorBackend",
    "VectorStore",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module 'index' has no attribute {name!r}")

"""Matryoshka-aware vector store: FAISS 64-d and 512-d indexes over a durable SQLite store."""

from .backend import VectorBackend
from .config import IndexConfig
from .items import Item, NewItem, Preview, SearchHit
from .store import VectorStore
from .vectors import MATRYOSHKA_DIMS

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

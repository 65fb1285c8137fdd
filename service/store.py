"""The vector store seen from the event loop: every call runs on the store's own threads.

`open_backend(settings)` picks the backend: PostgreSQL when `index_url` is set
(`index.pg.PostgresStore`, shared by replicas), else the local FAISS+SQLite
`VectorStore` in `data_dir`. Both are thread-safe but blocking (commits, scans,
network round trips). This wrapper keeps all of that off the event loop, on a
small dedicated pool so a burst of searches cannot starve the model threads'
pool or vice versa. Nothing else in the service knows which backend it has.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from index import IndexConfig, Item, NewItem, Preview, SearchHit, VectorBackend, VectorStore
from index.items import ModelStamp
from index.pg import PostgresConfig, PostgresStore
from index.pg.store import describe_url
from model.constants import MODALITIES
from service.settings import Settings

R = TypeVar("R")


def open_backend(settings: Settings) -> VectorBackend:
    """The index the settings name: PostgreSQL if `index_url` is set, else `data_dir`."""
    if settings.index_url is not None:
        config = PostgresConfig(
            kind=settings.index_kind,
            max_k=settings.max_k,
            pool_size=settings.index_pool_size,
            pool_min_size=min(2, settings.index_pool_size),
        )
        return PostgresStore.open(settings.index_url.get_secret_value(), config)
    return VectorStore.open(
        settings.data_dir, IndexConfig(kind=settings.index_kind, max_k=settings.max_k)
    )


def model_stamp(info: dict[str, Any]) -> ModelStamp:
    """The stamp an index records for the model `Embedder.info` describes."""
    if info.get("model"):
        name = f"{info['model']} {info.get('version') or ''}".strip()
    elif info.get("checkpoint"):
        name = f"checkpoint {info['checkpoint']}"
    else:
        name = f"preset {info.get('preset')}"
    if not info.get("trained"):
        name += " (untrained)"
    modalities = set(info.get("encoders") or ())
    adopts = tuple(
        (
            str(earlier["fingerprint"]),
            tuple(sorted(modalities - set(earlier.get("modalities") or modalities))),
        )
        for earlier in info.get("same_vectors_as") or ()
    )
    return ModelStamp(name=name, fingerprint=str(info["weights_digest"]), adopts=adopts)


def index_location(settings: Settings) -> str:
    """Where the index lives, for logs: the database (never its password) or the folder."""
    if settings.index_url is not None:
        return f"postgresql {describe_url(settings.index_url.get_secret_value())}"
    return str(settings.data_dir)


class AsyncStore:
    """Async facade over an open `VectorBackend`; create with `await AsyncStore.open(...)`."""

    def __init__(self, store: VectorBackend, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self._executor = executor

    @classmethod
    async def open(cls, settings: Settings, *, threads: int = 4) -> AsyncStore:
        """Open the settings' backend off the event loop; `threads` calls may run at once."""
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor, open_backend, settings)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await self._call(self.store.close)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    async def add(
        self,
        vector: np.ndarray,
        *,
        modality: str,
        metadata: dict | None,
        id: str | None,
        preview: Preview | None = None,
        text: str | None = None,
    ) -> str:
        return await self._call(
            self.store.add,
            vector,
            modality=modality,
            metadata=metadata,
            id=id,
            preview=preview,
            text=text,
        )

    async def upsert(
        self,
        vector: np.ndarray,
        *,
        id: str,
        modality: str,
        metadata: dict | None,
        preview: Preview | None = None,
        text: str | None = None,
    ) -> str:
        return await self._call(
            self.store.upsert,
            vector,
            id=id,
            modality=modality,
            metadata=metadata,
            preview=preview,
            text=text,
        )

    async def add_many(self, items: list[NewItem]) -> list[str]:
        return await self._call(self.store.add_many, items)

    async def get(self, id: str) -> Item:
        return await self._call(self.store.get, id)

    async def get_preview(self, id: str) -> Preview:
        return await self._call(self.store.get_preview, id)

    async def delete(self, id: str) -> None:
        await self._call(self.store.delete, id)

    async def list(self, modality: str | None, limit: int, offset: int) -> list[Item]:
        return await self._call(self.store.list, modality=modality, limit=limit, offset=offset)

    async def bind_model(self, stamp: ModelStamp) -> ModelStamp | None:
        """`VectorBackend.bind_model`: claim the index for this model, or ModelMismatch."""
        return await self._call(self.store.bind_model, stamp)

    async def count(self, modality: str | None = None) -> int:
        return await self._call(self.store.count, modality)

    async def counts(self) -> dict[str, int]:
        """Items per modality, for /metrics and /readyz."""
        return await self._call(lambda: {m: self.store.count(m) for m in MODALITIES})

    async def search(self, query: np.ndarray, **kwargs: Any) -> list[SearchHit]:
        return await self._call(self.store.search, query, **kwargs)

    async def info(self) -> dict[str, Any]:
        return await self._call(self.store.info)

    def connection_stats(self) -> dict[str, int]:
        """Pool counters (no I/O, so called on the event loop); empty for the local store."""
        return self.store.connection_stats()

"""The vector store seen from the event loop: every call runs on the store's own threads.

`VectorStore` is thread-safe (searches share a readers-writer lock, writes are
exclusive) but blocking: SQLite commits fsync and FAISS searches take CPU. This
wrapper keeps all of that off the event loop, on a small dedicated pool so a
burst of searches cannot starve the model threads' pool or vice versa.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index import IndexConfig, Item, NewItem, Preview, SearchHit, VectorStore
from model.constants import MODALITIES

R = TypeVar("R")


class AsyncStore:
    """Async facade over an open `VectorStore`; create with `await AsyncStore.open(...)`."""

    def __init__(self, store: VectorStore, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self._executor = executor

    @classmethod
    async def open(cls, data_dir: Path, config: IndexConfig, *, threads: int = 4) -> AsyncStore:
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor, VectorStore.open, data_dir, config)
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
    ) -> str:
        return await self._call(
            self.store.add, vector, modality=modality, metadata=metadata, id=id, preview=preview
        )

    async def upsert(
        self,
        vector: np.ndarray,
        *,
        id: str,
        modality: str,
        metadata: dict | None,
        preview: Preview | None = None,
    ) -> str:
        return await self._call(
            self.store.upsert, vector, id=id, modality=modality, metadata=metadata, preview=preview
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

    async def count(self, modality: str | None = None) -> int:
        return await self._call(self.store.count, modality)

    async def counts(self) -> dict[str, int]:
        """Items per modality, for /metrics and /readyz."""
        return await self._call(lambda: {m: self.store.count(m) for m in MODALITIES})

    async def search(self, query: np.ndarray, **kwargs: Any) -> list[SearchHit]:
        return await self._call(self.store.search, query, **kwargs)

    async def info(self) -> dict[str, Any]:
        return await self._call(self.store.info)

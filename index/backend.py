"""The narrow interface the service depends on.

`VectorStore` (FAISS over SQLite, one process) and `index.pg.PostgresStore`
(PostgreSQL + pgvector, shared by many processes) implement it; a client of
another vector database could implement the same methods and the service would
not change. Everything crossing this
boundary is plain data: strings, JSON-safe dicts, float32 numpy arrays, and
the dataclasses of `index.items`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .errors import InvalidVector, ModelMismatch
from .items import Item, ModelStamp, NewItem, Preview, SearchHit
from .vectors import EMBED_DIM

logger = logging.getLogger(__name__)
MODEL_KEY = "model"  # the meta key holding the ModelStamp of the vectors


class VectorBackend(ABC):
    """Items with a 512-d Matryoshka vector, searchable at 64, 128, 256 or 512 dims."""

    location: str  # where the store lives, for messages (a folder, or a database and schema)

    def add(
        self,
        vector: Any,
        *,
        modality: str,
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
        preview: Preview | None = None,
        text: str | None = None,
    ) -> str:
        """Store a new item (and its preview and document, if any); returns its id.

        Raises DuplicateId if the id exists.
        """
        return self.add_many([NewItem(vector, modality, metadata, id, preview, text)])[0]

    @abstractmethod
    def add_many(self, items: list[NewItem]) -> list[str]:
        """Store new items all-or-nothing; returns their ids in order."""

    @abstractmethod
    def upsert(
        self,
        vector: Any,
        *,
        id: str,
        modality: str,
        metadata: dict[str, Any] | None = None,
        preview: Preview | None = None,
        text: str | None = None,
    ) -> str:
        """Store or replace the item with this id (created_at is kept on replace).

        The old item's preview and document are replaced by `preview` and `text`, or
        removed when they are None.
        """

    @abstractmethod
    def get(self, id: str) -> Item:
        """The item with this id; raises ItemNotFound."""

    @abstractmethod
    def get_preview(self, id: str) -> Preview:
        """The item's preview; raises ItemNotFound, or PreviewNotFound when it has none."""

    @abstractmethod
    def delete(self, id: str) -> None:
        """Remove the item, its preview and its document together; raises ItemNotFound."""

    @abstractmethod
    def count(self, modality: str | None = None) -> int: ...

    @abstractmethod
    def list(self, modality: str | None = None, limit: int = 100, offset: int = 0) -> list[Item]:
        """Items in creation order, paged."""

    def search(
        self,
        query: Any,
        *,
        k: int = 10,
        dims: int = 512,
        mode: str = "exact",
        modality: str | None = None,
        where: dict[str, Any] | None = None,
        text: bool = True,
    ) -> list[SearchHit]:
        """Nearest items to one (512,) query by cosine at `dims`, best first.

        `text=False` leaves the hits' documents unread (their `text` is None).
        """
        try:
            array = np.asarray(query)
        except (TypeError, ValueError) as exc:
            raise InvalidVector(f"query is not a numeric array: {exc}") from exc
        if array.shape != (EMBED_DIM,):
            raise InvalidVector(f"query must have shape ({EMBED_DIM},), got {tuple(array.shape)}")
        return self.search_batch(
            array[None, :], k=k, dims=dims, mode=mode, modality=modality, where=where, text=text
        )[0]

    @abstractmethod
    def search_batch(
        self,
        queries: np.ndarray,
        *,
        k: int = 10,
        dims: int = 512,
        mode: str = "exact",
        modality: str | None = None,
        where: dict[str, Any] | None = None,
        text: bool = True,
    ) -> list[list[SearchHit]]:
        """`search` for each row of a (Q, 512) array."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """JSON-safe facts for readiness and metrics: counts, kind, dims, location."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; idempotent."""

    def bind_model(self, stamp: ModelStamp) -> ModelStamp | None:
        """Claim the store for the model that will write and search it; returns the
        stamp it held before (None: none).

        A store holds one model's vectors. An empty store, or one written before
        stamps were kept, takes `stamp`, and so does one filled by a model `stamp.adopts`
        (whose vectors this model makes unchanged) when it holds no item of a modality
        whose vectors changed since; one holding another model's vectors raises
        ModelMismatch, since searching them with this model's queries would answer
        with confident nonsense.
        """
        held = self.model_stamp()
        if held is not None and held.fingerprint == stamp.fingerprint:
            return held
        changed = dict(stamp.adopts).get(held.fingerprint) if held is not None else None
        if changed is not None and not any(self.count(m) for m in changed):
            self._write_meta(MODEL_KEY, stamp.to_json())
            logger.info(
                "the index at %s held %s, whose vectors %s keeps%s: it is %s's now, "
                "nothing to re-embed",
                self.location,
                held,
                stamp.name,
                f" for all but {'/'.join(changed)}, of which it holds none"
                if changed
                else " unchanged",
                stamp.name,
            )
            return held
        if held is not None and (items := self.count()):
            raise ModelMismatch(self.location, held, stamp, items)
        self._write_meta(MODEL_KEY, stamp.to_json())
        if held is not None:
            logger.info("the empty index at %s held %s; it is %s's now", self.location, held, stamp)
        return held

    def model_stamp(self) -> ModelStamp | None:
        """The stamp of the model whose vectors the store holds, if one was bound."""
        found = self._read_meta(MODEL_KEY)
        return ModelStamp.from_json(found) if found is not None else None

    @abstractmethod
    def _read_meta(self, key: str) -> str | None:
        """A value of the store's own key/value table (None if the key is absent)."""

    @abstractmethod
    def _write_meta(self, key: str, value: str) -> None:
        """Set a value of the store's own key/value table."""

    def connection_stats(self) -> dict[str, int]:
        """Counters of the backend's connection pool (for /metrics); empty if it has none."""
        return {}

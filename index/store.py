"""VectorStore: FAISS indexes over a durable SQLite store, in one data directory.

Layout of `data_dir`:
    LOCK                 flock held by the process that has the store open (holds its pid)
    items.sqlite3(-wal)  the source of truth (see sqlite_store.py)
    faiss.json           manifest of the last FAISS snapshot: generation, sizes, CRC32s
    index64-*.faiss      64-d prefix index     } a cache, rebuilt from SQLite whenever
    index512-*.faiss     full 512-d index      } missing, stale or corrupt

A write commits to SQLite first (that commit is the acknowledgement), then
updates FAISS in memory. Snapshots are written every `snapshot_every` changes
and on close, never per write. On open the snapshot is loaded and reconciled
with SQLite by label sets (labels are never reused, so this is exact): labels
missing from FAISS are added from SQLite, extra ones dropped. A snapshot that
is missing, corrupt or for another configuration is rebuilt from scratch.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from .backend import VectorBackend
from .config import IndexConfig
from .errors import InvalidItem, InvalidQuery, StoreError
from .faiss_index import Capture, IndexFileError, LabelFilter, MatryoshkaIndexes
from .items import Item, NewItem, Preview, SearchHit
from .lock import DirectoryLock
from .rwlock import ReadWriteLock
from .snapshot_worker import run_snapshot_process
from .sqlite_store import Row, SqliteStore
from .validation import check_id as _check_id
from .validation import check_modality as _check_modality
from .validation import check_preview as _check_preview
from .validation import check_search
from .validation import check_text as _check_text
from .validation import is_int as _is_int
from .validation import metadata_json as _metadata_json
from .validation import stack_vectors as _stack
from .vectors import EMBED_DIM, MATRYOSHKA_DIMS, as_unit_matrix

logger = logging.getLogger(__name__)

MAX_LIST_LIMIT = 10_000
# SQLite integers are signed 64-bit; a larger OFFSET overflows in the driver.
SQLITE_MAX_INT = 2**63 - 1
FILTER_CACHE_SIZE = 32  # recent filters' label sets, dropped at every write
_RECONCILE_BATCH = 10_000


class VectorStore(VectorBackend):
    """Open with `VectorStore.open(data_dir, IndexConfig())`; thread-safe; one per directory."""

    def __init__(
        self,
        data_dir: Path,
        config: IndexConfig,
        lock: DirectoryLock,
        sql: SqliteStore,
        indexes: MatryoshkaIndexes,
        open_report: dict[str, Any],
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self._lock = lock
        self._sql = sql
        self._indexes = indexes
        self._rw = ReadWriteLock()
        self._save_lock = threading.Lock()  # snapshot() runs under the shared lock
        self._snapshotter: threading.Thread | None = None  # the background snapshot, if any
        self._snapshot_failed = False
        self._filters: OrderedDict[tuple[Any, ...], LabelFilter] = OrderedDict()
        self._filters_lock = threading.Lock()
        self._open_report = open_report
        self._unsaved = int(open_report["changes_applied"])
        self._snapshot_generation: int | None = open_report["snapshot_generation"]
        self._closed = False

    @property
    def location(self) -> str:
        return str(self.data_dir)

    # ---- life cycle ----

    @classmethod
    def open(cls, data_dir: str | Path, config: IndexConfig | None = None) -> VectorStore:
        """Open (creating if needed) the store in `data_dir`.

        Raises StoreLocked if another process, or another open store in this one,
        holds the directory.
        """
        config = config or IndexConfig()
        if config.faiss_threads is not None:
            faiss.omp_set_num_threads(config.faiss_threads)
        if config.blas_threads is not None:
            ThreadpoolController().select(internal_api="openblas").limit(limits=config.blas_threads)
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(data_dir)
        lock.acquire()
        sql: SqliteStore | None = None
        try:
            started = time.perf_counter()
            sql = SqliteStore(data_dir, synchronous=config.synchronous)
            try:
                indexes, snapshot = MatryoshkaIndexes.load(data_dir, config)
                reason = None
            except IndexFileError as exc:
                indexes, snapshot, reason = MatryoshkaIndexes(config), None, str(exc)
            loaded_at = time.perf_counter()
            added, removed = _reconcile(indexes, sql, config)
            if reason is not None and (sql.count() or reason != "no FAISS snapshot"):
                logger.warning("rebuilt FAISS indexes from SQLite (%s): %d items", reason, added)
            elif added or removed:
                logger.info("caught FAISS snapshot up with SQLite: +%d -%d", added, removed)
            report = {
                "rebuilt": reason is not None,
                "rebuild_reason": reason,
                "snapshot_generation": None if snapshot is None else snapshot.generation,
                "changes_applied": added + removed,
                "load_seconds": round(loaded_at - started, 3),
                "reconcile_seconds": round(time.perf_counter() - loaded_at, 3),
            }
            store = cls(data_dir, config, lock, sql, indexes, report)
            if store._unsaved >= config.snapshot_every:
                store._save()
            return store
        except BaseException:
            if sql is not None:
                sql.close()
            lock.release()
            raise

    def close(self) -> None:
        """Write a FAISS snapshot if anything changed, close SQLite, release the directory."""
        with self._rw.write():
            if self._closed:
                return
            try:
                self.wait_for_snapshot()  # it takes no store lock, so it can finish
                if self._unsaved or self._snapshot_generation is None or self._snapshot_failed:
                    self._save()
            finally:
                self._closed = True
                self._sql.close()
                self._lock.release()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def snapshot(self) -> None:
        """Write the FAISS files now (searches continue; writes wait)."""
        with self._rw.read():
            self._check_open()
            self._save()

    def _save(self) -> None:
        """Write a snapshot; the caller holds the shared or the exclusive lock."""
        with self._save_lock:
            started = time.perf_counter()
            generation = self._sql.generation()
            self._indexes.save(self.data_dir, generation)
            self._snapshot_generation = generation
            self._snapshot_failed = False
            self._unsaved = 0
            logger.info(
                "FAISS snapshot of generation %d (%d items) written in %.2f s",
                generation,
                self._indexes.live_count,
                time.perf_counter() - started,
            )

    def _start_snapshot(self) -> None:
        """Snapshot after `snapshot_every` changes (write lock held).

        Flat indexes: a background thread starts `index.snapshot_worker`, a process that
        rebuilds the indexes from one consistent read of SQLite and writes them; no store
        lock is held meanwhile, so searches and writes go on. HNSW graphs are too slow to
        rebuild: they are copied here, under the lock (a memory copy, much faster than
        the write), and a background thread writes the copy.
        """
        if self._snapshotter is not None and self._snapshotter.is_alive():
            return  # one at a time; the next comes after the next snapshot_every changes
        self._unsaved = 0
        if self.config.kind == "flat":
            target, args = self._snapshot_in_background, ()
        else:
            target, args = self._write_capture, (self._indexes.capture(self._sql.generation()),)
        self._snapshotter = threading.Thread(
            target=target, args=args, name="faiss-snapshot", daemon=True
        )
        self._snapshotter.start()

    def _write_capture(self, capture: Capture) -> None:
        """Write an HNSW store's indexes as copied under the lock (`_save_lock` only); a
        snapshot of a later generation written meanwhile is kept."""
        try:
            with self._save_lock:
                if (self._snapshot_generation or -1) >= capture.generation:
                    return
                started = time.perf_counter()
                self._indexes.write_capture(self.data_dir, capture)
                self._snapshot_generation = capture.generation
                self._snapshot_failed = False
                logger.info(
                    "FAISS snapshot of generation %d (%d indexed) written in the background "
                    "in %.2f s; writes and searches went on",
                    capture.generation,
                    capture.ntotal,
                    time.perf_counter() - started,
                )
        except Exception:
            self._snapshot_failed = True  # SQLite holds every item; close writes it
            logger.exception("background FAISS snapshot failed")

    def _snapshot_in_background(self) -> None:
        """Have `index.snapshot_worker` rebuild the flat indexes from one committed SQLite
        state and write them, in a process of its own.

        Labels are never reused, so the rebuilt indexes equal the live ones at that
        generation; the manifest is written last, as by every save. Holds `_save_lock`
        (one writer of the files at a time), never the store's lock.
        """
        try:
            with self._save_lock:
                started = time.perf_counter()
                result = run_snapshot_process(self.data_dir, self.config)
                self._snapshot_generation = int(result["generation"])
                self._snapshot_failed = False
                logger.info(
                    "FAISS snapshot of generation %d (%d items) written in the background by "
                    "process %d in %.2f s (%.2f s to read, %.2f s to write); writes and "
                    "searches went on",
                    result["generation"],
                    result["items"],
                    result["pid"],
                    time.perf_counter() - started,
                    result["read_s"],
                    result["write_s"],
                )
        except Exception:
            # the next snapshot (or close) writes it; nothing is lost: SQLite holds every item
            self._snapshot_failed = True
            logger.exception("background FAISS snapshot failed")

    def wait_for_snapshot(self) -> None:
        """Wait for a background snapshot to finish (tests, close)."""
        thread = self._snapshotter
        if thread is not None:
            thread.join()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.data_dir} is closed")

    # ---- writes ----

    def add_many(self, items: list[NewItem]) -> list[str]:
        if not isinstance(items, list | tuple):
            raise InvalidItem(f"add_many takes a list of NewItem, got {type(items).__name__}")
        if not items:
            return []
        rows, vectors = self._rows(items)
        with self._rw.write():
            self._check_open()
            labels = self._sql.insert(rows, time.time())
            self._apply(add=(labels, vectors))
        return [row.id for row in rows]

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
        if id is None:
            raise InvalidItem("upsert needs an id")
        rows, vectors = self._rows([NewItem(vector, modality, metadata, id, preview, text)])
        with self._rw.write():
            self._check_open()
            label, old = self._sql.upsert(rows[0], time.time())
            removed = np.array([] if old is None else [old], dtype=np.int64)
            self._apply(add=(np.array([label], dtype=np.int64), vectors), remove=removed)
        return rows[0].id

    def delete(self, id: str) -> None:
        item_id = _check_id(id)
        with self._rw.write():
            self._check_open()
            label = self._sql.delete(item_id)
            self._apply(remove=np.array([label], dtype=np.int64))

    def _apply(
        self,
        add: tuple[np.ndarray, np.ndarray] | None = None,
        remove: np.ndarray | None = None,
    ) -> None:
        """Mirror a committed SQLite change in FAISS (write lock held)."""
        changes = 0
        with self._filters_lock:
            self._filters.clear()
        try:
            if remove is not None and len(remove):
                self._indexes.remove(remove)
                changes += len(remove)
            if add is not None:
                self._indexes.add(*add)
                changes += len(add[0])
        except BaseException:
            # the commit stands; bring FAISS back in step with it before failing
            _reconcile(self._indexes, self._sql, self.config)
            raise
        self._unsaved += changes
        if self._unsaved >= self.config.snapshot_every:
            self._start_snapshot()

    def _rows(self, items: list[NewItem] | tuple[NewItem, ...]) -> tuple[list[Row], np.ndarray]:
        for n, item in enumerate(items):
            if not isinstance(item, NewItem):
                raise InvalidItem(f"item {n} is a {type(item).__name__}, not a NewItem")
        vectors = as_unit_matrix(
            _stack([item.vector for item in items]),
            what="vector" if len(items) == 1 else "vectors",
        )
        rows = [
            Row(
                id=os.urandom(16).hex() if item.id is None else _check_id(item.id),
                modality=_check_modality(item.modality),
                metadata_json=_metadata_json(item.metadata),
                vector=vectors[n],
                preview=_check_preview(item.preview),
                text=_check_text(item.text),
            )
            for n, item in enumerate(items)
        ]
        return rows, vectors

    # ---- reads ----

    def get(self, id: str) -> Item:
        item_id = _check_id(id)
        with self._rw.read():
            self._check_open()
            return self._sql.get(item_id)

    def get_preview(self, id: str) -> Preview:
        item_id = _check_id(id)
        with self._rw.read():
            self._check_open()
            return self._sql.get_preview(item_id)

    def count(self, modality: str | None = None) -> int:
        if modality is not None:
            _check_modality(modality)
        with self._rw.read():
            self._check_open()
            return self._sql.count(modality)

    def list(self, modality: str | None = None, limit: int = 100, offset: int = 0) -> list[Item]:
        if modality is not None:
            _check_modality(modality)
        if not _is_int(limit) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidQuery(f"limit must be an int in [1, {MAX_LIST_LIMIT}], got {limit!r}")
        if not _is_int(offset) or not 0 <= offset <= SQLITE_MAX_INT:
            raise InvalidQuery(f"offset must be an int in [0, {SQLITE_MAX_INT}], got {offset!r}")
        with self._rw.read():
            self._check_open()
            return self._sql.list(modality, int(limit), int(offset))

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
        queries = as_unit_matrix(queries, what="query")
        dims = check_search(k, dims, mode, modality, self.config.max_k)
        if where is not None and not isinstance(where, dict):
            raise InvalidQuery(f"where must be a dict of metadata equalities, got {where!r}")
        if len(queries) == 0:
            return []
        with self._rw.read():
            self._check_open()
            allowed = None
            if modality is not None or where:
                allowed = self._label_filter(modality, where)
            scores, labels = self._indexes.search(
                queries, k=int(k), dims=dims, adaptive=mode == "adaptive", allowed=allowed
            )
            found = self._sql.hit_info(labels[labels >= 0].tolist(), text=bool(text))
        results: list[list[SearchHit]] = []
        for row_scores, row_labels in zip(scores, labels, strict=True):
            hits = []
            for score, label in zip(row_scores.tolist(), row_labels.tolist(), strict=True):
                info = found.get(label)
                if label < 0 or info is None:
                    continue
                hits.append(
                    SearchHit(info.id, float(score), info.modality, info.metadata, info.text)
                )
            results.append(hits)
        return results

    def _label_filter(self, modality: str | None, where: dict[str, Any] | None) -> LabelFilter:
        """The labels a filter admits, cached until the next write (read lock held)."""
        key = (modality, tuple((repr(k), repr(v)) for k, v in (where or {}).items()))
        with self._filters_lock:
            found = self._filters.get(key)
            if found is not None:
                self._filters.move_to_end(key)
                return found
        made = LabelFilter(self._sql.labels(modality, where))
        with self._filters_lock:
            self._filters[key] = made
            while len(self._filters) > FILTER_CACHE_SIZE:
                self._filters.popitem(last=False)
        return made

    def _read_meta(self, key: str) -> str | None:
        self._check_open()
        return self._sql.read_meta(key)

    def _write_meta(self, key: str, value: str) -> None:
        self._check_open()
        self._sql.write_meta(key, value)

    def check_consistency(self) -> dict[str, int]:
        """Compare the FAISS label set with SQLite's: counts of items, indexed, missing, extra.

        Both `missing` and `extra` are 0 in a healthy store.
        """
        with self._rw.read():
            self._check_open()
            in_store = self._sql.labels()
            in_index = np.sort(self._indexes.live_labels())
            in_64 = self._indexes.index64.ntotal
            return {
                "items": len(in_store),
                "indexed": len(in_index),
                "missing": len(np.setdiff1d(in_store, in_index, assume_unique=True)),
                "extra": len(np.setdiff1d(in_index, in_store, assume_unique=True)),
                "index_64_vs_512": int(in_64 - self._indexes.index512.ntotal),
            }

    def info(self) -> dict[str, Any]:
        with self._rw.read():
            self._check_open()
            counts = self._sql.counts_by_modality()
            return {
                "backend": "faiss+sqlite",
                "kind": self.config.kind,
                "count": sum(counts.values()),
                "counts": counts,
                "indexed": self._indexes.live_count,
                "preview_bytes": self._sql.preview_bytes(),
                "text_bytes": self._sql.text_bytes(),
                "tombstones": self._indexes.tombstone_count,
                "dims": list(MATRYOSHKA_DIMS),
                "embed_dim": EMBED_DIM,
                "max_k": self.config.max_k,
                "data_dir": str(self.data_dir),
                "generation": self._sql.generation(),
                "snapshot_generation": self._snapshot_generation,
                "unsaved_changes": self._unsaved,
                "open": dict(self._open_report),
            }


def _reconcile(
    indexes: MatryoshkaIndexes, sql: SqliteStore, config: IndexConfig
) -> tuple[int, int]:
    """Make the FAISS label set equal SQLite's; returns (added, removed).

    Labels are never reused, so equal label sets mean equal contents. An empty
    index (a rebuild) streams every vector in label order; otherwise only the
    missing labels are read.
    """
    in_store = sql.labels()
    in_index = np.sort(indexes.live_labels())
    extra = np.setdiff1d(in_index, in_store, assume_unique=True)
    missing = np.setdiff1d(in_store, in_index, assume_unique=True)
    indexes.remove(extra)
    show = len(missing) >= config.rebuild_progress_min and sys.stderr.isatty()
    with tqdm(
        total=len(missing), desc="indexing from SQLite", unit="item", disable=not show
    ) as bar:
        if len(in_index) == 0:
            for labels, vectors in sql.iter_vectors(_RECONCILE_BATCH):
                indexes.add(labels, vectors)
                bar.update(len(labels))
        else:
            for start in range(0, len(missing), _RECONCILE_BATCH):
                chunk = missing[start : start + _RECONCILE_BATCH]
                indexes.add(chunk, sql.vectors(chunk))
                bar.update(len(chunk))
    return len(missing), len(extra)

"""The durable source of truth: items in one SQLite database in WAL mode.

Each item row carries a `label`, the int64 id FAISS knows it by. Labels come
from a counter kept in the same database and are never reused: an upsert
deletes the old row and inserts a new one under a fresh label (keeping
`created_at`), so a label always names one immutable vector. That makes
"which store state does a FAISS file reflect" a plain set comparison of labels.

Durability: `journal_mode=WAL` with `synchronous=FULL` (default) fsyncs the WAL
at every COMMIT, so a write is acknowledged only once it would survive a process
kill or a power cut. `synchronous=NORMAL` in WAL mode still survives `kill -9`
(the WAL is in the OS page cache before COMMIT returns) but may lose the last
transactions on power loss.

Previews (thumbnails, short clips) and documents (a text item's text, a
caption) live in their own tables keyed by the item's label, written and
deleted in the same transaction as the item row, so an item never outlives
them nor the other way round. Item rows stay small and scans over them
(filters, rebuilds) never read preview bytes or texts.

Schema versions: 1 items; 2 adds `previews`; 3 adds `documents`. An older
database gains the (empty) tables on open, in one transaction: its items keep
their labels and vectors (nothing is re-indexed) and answer `text=None`.

Threads: one writer connection behind a lock; each reading thread gets its own
connection (WAL readers never block the writer nor each other).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DuplicateId, InvalidQuery, ItemNotFound, PreviewNotFound, StoreError
from .items import Item, Preview
from .vectors import EMBED_DIM

DB_NAME = "items.sqlite3"
SCHEMA_VERSION = 3
PAGE_SIZE = 16_384
_CHUNK = 900  # stay well under SQLite's bound-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    label INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_modality ON items (modality, label);
CREATE INDEX IF NOT EXISTS items_by_created ON items (created_at, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1);
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_label', 1);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0);
"""

# Version 2 adds previews; a version-1 database gains the (empty) table on open.
_PREVIEWS = """
CREATE TABLE IF NOT EXISTS previews (
    label INTEGER PRIMARY KEY,
    media_type TEXT NOT NULL,
    data BLOB NOT NULL
);
"""
# Version 3 adds documents; items of an older database have none (text None).
_DOCUMENTS = """
CREATE TABLE IF NOT EXISTS documents (
    label INTEGER PRIMARY KEY,
    text TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Row:
    """One item as written: the vector is already validated (512,) float32 unit."""

    id: str
    modality: str
    metadata_json: str
    vector: np.ndarray
    preview: Preview | None = None
    text: str | None = None


@dataclass(frozen=True)
class HitInfo:
    id: str
    modality: str
    metadata: dict[str, Any]
    text: str | None = None


class SqliteStore:
    """Items table plus a `meta` table holding the label counter and a generation counter."""

    def __init__(self, directory: Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(directory) / DB_NAME
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            version = self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the item database {self.path}: {exc}") from exc
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, this code reads {SCHEMA_VERSION}"
            )

    def _migrate(self) -> int:
        """Bring an older database up to SCHEMA_VERSION; returns the version found after."""
        conn = self._writer
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        steps = {1: _PREVIEWS, 2: _DOCUMENTS}
        if version in steps:
            conn.execute("BEGIN IMMEDIATE")
            try:
                while version in steps:
                    conn.execute(steps[version])
                    version += 1
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return int(version)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # rows are ~2.1 KB (the vector): 4 KiB pages would hold one row each, half empty;
        # 16 KiB pages hold seven. Takes effect only when the database is created.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    # ---- writes (each one transaction; COMMIT is the acknowledgement) ----

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("the store is closed")
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"write to {self.path} failed: {exc}") from exc
                raise

    def insert(self, rows: Sequence[Row], now: float) -> np.ndarray:
        """Insert new items atomically; returns their labels (N,) int64.

        Raises DuplicateId (and writes nothing) if any id exists or repeats.
        """
        seen: set[str] = set()
        for row in rows:
            if row.id in seen:
                raise DuplicateId(row.id)
            seen.add(row.id)
        ids = [row.id for row in rows]
        with self._transaction() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                taken = conn.execute(
                    f"SELECT id FROM items WHERE id IN ({marks}) LIMIT 1", chunk
                ).fetchone()
                if taken is not None:
                    raise DuplicateId(taken[0])
            first = self._take_labels(conn, len(rows))
            conn.executemany(
                "INSERT INTO items (label, id, modality, metadata, vector, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (first + i, r.id, r.modality, r.metadata_json, r.vector.tobytes(), now, now)
                    for i, r in enumerate(rows)
                ),
            )
            _insert_previews(conn, ((first + i, r.preview) for i, r in enumerate(rows)))
            _insert_documents(conn, ((first + i, r.text) for i, r in enumerate(rows)))
        return np.arange(first, first + len(rows), dtype=np.int64)

    def upsert(self, row: Row, now: float) -> tuple[int, int | None]:
        """Insert or replace by id; returns (new label, old label or None)."""
        with self._transaction() as conn:
            old = conn.execute(
                "SELECT label, created_at FROM items WHERE id = ?", (row.id,)
            ).fetchone()
            created_at = now
            if old is not None:
                conn.execute("DELETE FROM items WHERE label = ?", (old[0],))
                conn.execute("DELETE FROM previews WHERE label = ?", (old[0],))
                conn.execute("DELETE FROM documents WHERE label = ?", (old[0],))
                created_at = old[1]
            label = self._take_labels(conn, 1)
            conn.execute(
                "INSERT INTO items (label, id, modality, metadata, vector, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    label,
                    row.id,
                    row.modality,
                    row.metadata_json,
                    row.vector.tobytes(),
                    created_at,
                    now,
                ),
            )
            _insert_previews(conn, [(label, row.preview)])
            _insert_documents(conn, [(label, row.text)])
        return label, (None if old is None else int(old[0]))

    def delete(self, item_id: str) -> int:
        """Delete by id; returns the label it had. Raises ItemNotFound."""
        with self._transaction() as conn:
            found = conn.execute("SELECT label FROM items WHERE id = ?", (item_id,)).fetchone()
            if found is None:
                raise ItemNotFound(item_id)
            conn.execute("DELETE FROM items WHERE label = ?", (found[0],))
            conn.execute("DELETE FROM previews WHERE label = ?", (found[0],))
            conn.execute("DELETE FROM documents WHERE label = ?", (found[0],))
        return int(found[0])

    @staticmethod
    def _take_labels(conn: sqlite3.Connection, n: int) -> int:
        first = conn.execute("SELECT value FROM meta WHERE key = 'next_label'").fetchone()[0]
        conn.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (first + n,))
        return int(first)

    def write_meta(self, key: str, value: str) -> None:
        """Set a key of the meta table that no item write reads (so the generation,
        which tells a FAISS snapshot what it has seen, is left alone)."""
        if self._closed:
            raise StoreError("the store is closed")
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---- reads ----

    def read_meta(self, key: str) -> str | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def generation(self) -> int:
        """Number of committed write transactions so far."""
        return int(
            self._reader().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
        )

    def get(self, item_id: str) -> Item:
        row = (
            self._reader()
            .execute(f"SELECT {_ITEM_COLUMNS} FROM {_ITEM_TABLES} WHERE i.id = ?", (item_id,))
            .fetchone()
        )
        if row is None:
            raise ItemNotFound(item_id)
        return _item(row)

    def get_preview(self, item_id: str) -> Preview:
        """The item's preview; ItemNotFound, or PreviewNotFound when it has none."""
        row = (
            self._reader()
            .execute(
                "SELECT p.media_type, p.data FROM items AS i"
                " LEFT JOIN previews AS p ON p.label = i.label WHERE i.id = ?",
                (item_id,),
            )
            .fetchone()
        )
        if row is None:
            raise ItemNotFound(item_id)
        if row[0] is None:
            raise PreviewNotFound(item_id)
        return Preview(data=bytes(row[1]), media_type=row[0])

    def preview_bytes(self) -> int:
        """Total bytes of stored preview data (for info)."""
        found = self._reader().execute("SELECT SUM(LENGTH(data)) FROM previews").fetchone()
        return int(found[0] or 0)

    def count(self, modality: str | None = None) -> int:
        conn = self._reader()
        if modality is None:
            return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return int(
            conn.execute("SELECT COUNT(*) FROM items WHERE modality = ?", (modality,)).fetchone()[0]
        )

    def counts_by_modality(self) -> dict[str, int]:
        rows = self._reader().execute(
            "SELECT modality, COUNT(*) FROM items GROUP BY modality ORDER BY modality"
        )
        return {modality: int(n) for modality, n in rows}

    def list(self, modality: str | None, limit: int, offset: int) -> list[Item]:
        """Items in creation order (then id), paged."""
        sql = f"SELECT {_ITEM_COLUMNS} FROM {_ITEM_TABLES}"
        params: list[Any] = []
        if modality is not None:
            sql += " WHERE i.modality = ?"
            params.append(modality)
        sql += " ORDER BY i.created_at, i.id LIMIT ? OFFSET ?"
        params += [limit, offset]
        return [_item(row) for row in self._reader().execute(sql, params)]

    def labels(
        self, modality: str | None = None, where: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Sorted labels (N,) int64 of the items matching a modality and metadata equalities."""
        clauses: list[str] = []
        params: list[Any] = []
        if modality is not None:
            clauses.append("modality = ?")
            params.append(modality)
        for key, value in (where or {}).items():
            clause, args = _equality_clause(key, value)
            clauses.append(clause)
            params += args
        sql = "SELECT label FROM items"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY label"
        found = self._reader().execute(sql, params).fetchall()
        return np.fromiter((r[0] for r in found), dtype=np.int64, count=len(found))

    def hit_info(self, labels: Sequence[int], *, text: bool = True) -> dict[int, HitInfo]:
        """id, modality, metadata and (if `text`) the document of the given labels
        (missing labels are left out)."""
        out: dict[int, HitInfo] = {}
        conn = self._reader()
        unique = list(dict.fromkeys(int(x) for x in labels))
        document = "d.text" if text else "NULL"
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for label, item_id, modality, metadata, found in conn.execute(
                f"SELECT i.label, i.id, i.modality, i.metadata, {document} FROM items AS i"
                f" LEFT JOIN documents AS d ON d.label = i.label WHERE i.label IN ({marks})",
                chunk,
            ):
                out[label] = HitInfo(item_id, modality, json.loads(metadata), found)
        return out

    def text_bytes(self) -> int:
        """Total UTF-8 bytes of stored documents (for info)."""
        found = self._reader().execute("SELECT SUM(LENGTH(CAST(text AS BLOB))) FROM documents")
        return int(found.fetchone()[0] or 0)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Full vectors (N, 512) float32 of existing labels, in the order given."""
        conn = self._reader()
        out = np.empty((len(labels), EMBED_DIM), dtype=np.float32)
        position = {int(label): i for i, label in enumerate(labels)}
        keys = list(position)
        found = 0
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for label, blob in conn.execute(
                f"SELECT label, vector FROM items WHERE label IN ({marks})", chunk
            ):
                out[position[label]] = np.frombuffer(blob, dtype=np.float32)
                found += 1
        if found != len(keys):
            raise StoreError(f"{len(keys) - found} labels vanished from {self.path} during a read")
        return out

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All items in label order as (labels (B,) int64, vectors (B, 512) float32) batches."""
        return _iter_vectors(self._reader(), batch)


@contextmanager
def consistent_vectors(
    path: Path, batch: int = 10_000
) -> Iterator[tuple[int, int, Iterator[tuple[np.ndarray, np.ndarray]]]]:
    """(generation, item count, batches as `iter_vectors`) of one committed state, read on a
    connection of its own held in one read transaction: writes go on (WAL) and are not seen.

    Any process may call it while the store is open elsewhere (the snapshot worker does).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        conn.execute("BEGIN")
        generation = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
        count = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        yield int(generation), int(count), _iter_vectors(conn, batch)
        conn.execute("COMMIT")
        # While this read ran, no checkpoint could pass it and the WAL grew; copy it back
        # here, so that the next write's commit does not (at 400k items its worst add took
        # 55 ms without this, 40 with it).
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def _iter_vectors(conn: sqlite3.Connection, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    last = 0
    while True:
        rows = conn.execute(
            "SELECT label, vector FROM items WHERE label > ? ORDER BY label LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        yield labels, vectors.reshape(len(rows), EMBED_DIM).copy()
        last = int(labels[-1])


def _insert_previews(
    conn: sqlite3.Connection, previews: Iterable[tuple[int, Preview | None]]
) -> None:
    conn.executemany(
        "INSERT INTO previews (label, media_type, data) VALUES (?, ?, ?)",
        ((label, p.media_type, p.data) for label, p in previews if p is not None),
    )


def _insert_documents(
    conn: sqlite3.Connection, documents: Iterable[tuple[int, str | None]]
) -> None:
    conn.executemany(
        "INSERT INTO documents (label, text) VALUES (?, ?)",
        ((label, text) for label, text in documents if text is not None),
    )


_ITEM_COLUMNS = "i.id, i.modality, i.metadata, i.vector, i.created_at, i.updated_at, d.text"
_ITEM_TABLES = "items AS i LEFT JOIN documents AS d ON d.label = i.label"


def _item(row: tuple[Any, ...]) -> Item:
    item_id, modality, metadata, blob, created_at, updated_at, text = row
    return Item(
        id=item_id,
        modality=modality,
        metadata=json.loads(metadata),
        vector=np.frombuffer(blob, dtype=np.float32).copy(),
        created_at=float(created_at),
        updated_at=float(updated_at),
        text=text,
    )


def _equality_clause(key: Any, value: Any) -> tuple[str, list[Any]]:
    """SQL for `metadata[key] == value`, with JSON types kept apart (1 != true != "1")."""
    if not isinstance(key, str) or not key or '"' in key or "\\" in key:
        raise InvalidQuery(f"where keys must be non-empty strings without quotes, got {key!r}")
    path = f'$."{key}"'
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, int | float):
        if isinstance(value, float) and not np.isfinite(value):
            raise InvalidQuery(f"where[{key!r}] must be finite, got {value!r}")
        return (
            "json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?",
            [path, path, value],
        )
    if isinstance(value, str):
        return "json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?", [
            path,
            path,
            value,
        ]
    raise InvalidQuery(
        f"where[{key!r}] must be a string, number, boolean or null, got {type(value).__name__}"
    )

"""PostgresStore: the vector backend on PostgreSQL with pgvector, shared by many processes.

Stateless on the client side: every read and write is one transaction on a
pooled connection, so any number of mmembed replicas may use one database and
each sees every committed write at once (reads are never stale). The COMMIT is
the acknowledgement: a batch is stored whole or not at all.

A lost connection (the server restarting, a network cut) fails the calls in
flight with StoreUnavailable (the service answers 503); the pool checks each
connection before handing it out, so once the server is back later calls
succeed without a restart of mmembed.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ..backend import VectorBackend
from ..errors import (
    DuplicateId,
    InvalidItem,
    InvalidQuery,
    ItemNotFound,
    PreviewNotFound,
    StoreError,
    StoreUnavailable,
)
from ..items import Item, NewItem, Preview, SearchHit
from ..validation import (
    check_id,
    check_modality,
    check_preview,
    check_search,
    check_text,
    check_where,
    is_int,
    metadata_json,
    stack_vectors,
)
from ..vectors import EMBED_DIM, MATRYOSHKA_DIMS, as_unit_matrix
from . import search_sql
from .config import PostgresConfig
from .schema import ensure_schema, names

logger = logging.getLogger(__name__)

MAX_LIST_LIMIT = 10_000
MAX_OFFSET = 2**63 - 1  # PostgreSQL bigint
_ITEM_COLUMNS = (
    "i.id, i.modality, i.metadata, i.embedding,"
    " extract(epoch FROM i.created_at)::float8, extract(epoch FROM i.updated_at)::float8, d.text"
)
_ITEM_TABLES = "{items} AS i LEFT JOIN {documents} AS d ON d.id = i.id"


def describe_url(url: str) -> str:
    """`host:port/dbname` of a connection URL, never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"not a PostgreSQL connection URL: {exc}") from exc
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresStore(VectorBackend):
    """Open with `PostgresStore.open(url, PostgresConfig())`; thread-safe; many per database."""

    def __init__(self, url: str, config: PostgresConfig, pool: ConnectionPool) -> None:
        self.config = config
        self.location = f"{describe_url(url)} schema {config.schema}"
        self._pool = pool
        self._tables = names(config.schema)
        self._closed = False
        # the search settings each pooled connection has now, so they are sent only on change
        self._session: weakref.WeakKeyDictionary[psycopg.Connection, tuple[str, ...]] = (
            weakref.WeakKeyDictionary()
        )

    # ---- life cycle ----

    @classmethod
    def open(cls, url: str, config: PostgresConfig | None = None) -> PostgresStore:
        """Connect, create or check the schema, and open the pool.

        Raises StoreUnavailable if the server cannot be reached within
        `connect_timeout_s`, StoreError if its tables belong to another schema
        version or vector size.
        """
        config = config or PostgresConfig()
        where = describe_url(url)
        try:
            with psycopg.connect(url, connect_timeout=config.connect_timeout_s) as conn:
                ensure_schema(conn, config)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot set up the mmembed tables at {where}: {exc}") from exc
        pool = ConnectionPool(
            url,
            min_size=config.pool_min_size,
            max_size=config.pool_size,
            # autocommit: a read is one round trip; writes open a transaction explicitly
            kwargs={"connect_timeout": config.connect_timeout_s, "autocommit": True},
            configure=register_vector,
            check=ConnectionPool.check_connection,
            timeout=config.pool_timeout_s,
            name=f"mmembed-{config.schema}",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=config.pool_timeout_s + config.connect_timeout_s)
        except PoolTimeout as exc:
            pool.close()
            raise StoreUnavailable(f"cannot open connections to PostgreSQL at {where}") from exc
        return cls(url, config, pool)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _connection(self, *, transaction: bool = False) -> Iterator[psycopg.Connection]:
        """A pooled (autocommit) connection, inside one transaction if asked.

        Database failures become StoreErrors: StoreUnavailable for a lost or missing
        connection, so the service can answer 503.
        """
        if self._closed:
            raise StoreError(f"the store at {self.location} is closed")
        try:
            with self._pool.connection() as conn:
                if transaction:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"no connection to PostgreSQL at {self.location} within "
                f"{self.config.pool_timeout_s} s: {exc}"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"lost the connection to PostgreSQL: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    # ---- writes ----

    def add_many(self, items: list[NewItem]) -> list[str]:
        if not isinstance(items, list | tuple):
            raise InvalidItem(f"add_many takes a list of NewItem, got {type(items).__name__}")
        if not items:
            return []
        rows = _rows(items)
        ids = [row[0] for row in rows]
        seen: set[str] = set()
        for item_id in ids:
            if item_id in seen:
                raise DuplicateId(item_id)
            seen.add(item_id)
        copy_sql = sql.SQL(
            "COPY {} (id, modality, metadata, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ).format(self._tables["items"])
        try:
            with self._connection(transaction=True) as conn, conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.set_types(["text", "text", "jsonb", "vector"])
                    for item_id, modality, meta, vector, _, _ in rows:
                        copy.write_row((item_id, modality, meta, vector))
                previews = [(row[0], row[4].media_type, row[4].data) for row in rows if row[4]]
                if previews:
                    cur.executemany(
                        sql.SQL("INSERT INTO {} (id, media_type, data) VALUES (%s, %s, %s)").format(
                            self._tables["previews"]
                        ),
                        previews,
                    )
                documents = [(row[0], row[5]) for row in rows if row[5] is not None]
                if documents:
                    cur.executemany(
                        sql.SQL("INSERT INTO {} (id, text) VALUES (%s, %s)").format(
                            self._tables["documents"]
                        ),
                        documents,
                    )
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise DuplicateId(self._taken(ids, exc.__cause__)) from None
            raise
        return ids

    def _taken(self, ids: list[str], error: psycopg.errors.UniqueViolation) -> str:
        """Which id made an insert fail: from the error's detail, else by asking."""
        found = re.search(r"\(id\)=\((.*)\) already exists", error.diag.message_detail or "")
        if found and found.group(1) in ids:
            return found.group(1)
        with self._connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE id = ANY(%s) LIMIT 1").format(
                    self._tables["items"]
                ),
                (ids,),
            ).fetchone()
        return row[0] if row else ids[0]

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
        """Insert or replace (keeping created_at); the old preview and document are
        replaced or removed."""
        if id is None:
            raise InvalidItem("upsert needs an id")
        item_id, modality, meta, vector, preview, text = _rows(
            [NewItem(vector, modality, metadata, id, preview, text)]
        )[0]
        items, previews = self._tables["items"], self._tables["previews"]
        documents = self._tables["documents"]
        with self._connection(transaction=True) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, modality, metadata, embedding) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET modality = EXCLUDED.modality,"
                    " metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding,"
                    " updated_at = now()"
                ).format(items),
                (item_id, modality, meta, vector),
            )
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(previews), (item_id,))
            if preview is not None:
                conn.execute(
                    sql.SQL("INSERT INTO {} (id, media_type, data) VALUES (%s, %s, %s)").format(
                        previews
                    ),
                    (item_id, preview.media_type, preview.data),
                )
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(documents), (item_id,))
            if text is not None:
                conn.execute(
                    sql.SQL("INSERT INTO {} (id, text) VALUES (%s, %s)").format(documents),
                    (item_id, text),
                )
        return item_id

    def delete(self, id: str) -> None:
        """Remove the item, its preview and document (ON DELETE CASCADE); raises ItemNotFound."""
        item_id = check_id(id)
        with self._connection() as conn:
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE id = %s").format(self._tables["items"]), (item_id,)
            )
            if cur.rowcount == 0:
                raise ItemNotFound(item_id)

    # ---- reads ----

    def get(self, id: str) -> Item:
        item_id = check_id(id)
        with self._connection() as conn:
            row = conn.execute(
                sql.SQL(f"SELECT {_ITEM_COLUMNS} FROM {_ITEM_TABLES} WHERE i.id = %s").format(
                    **self._tables
                ),
                (item_id,),
            ).fetchone()
        if row is None:
            raise ItemNotFound(item_id)
        return _item(row)

    def get_preview(self, id: str) -> Preview:
        """The item's preview; ItemNotFound for an unknown id, PreviewNotFound if it has none."""
        item_id = check_id(id)
        with self._connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT p.media_type, p.data FROM {items} i"
                    " LEFT JOIN {previews} p ON p.id = i.id WHERE i.id = %s"
                ).format(**self._tables),
                (item_id,),
            ).fetchone()
        if row is None:
            raise ItemNotFound(item_id)
        if row[0] is None:
            raise PreviewNotFound(item_id)
        return Preview(data=bytes(row[1]), media_type=row[0])

    def count(self, modality: str | None = None) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(self._tables["items"])
        params: tuple[Any, ...] = ()
        if modality is not None:
            query += sql.SQL(" WHERE modality = %s")
            params = (check_modality(modality),)
        with self._connection() as conn:
            return int(conn.execute(query, params).fetchone()[0])

    def counts_by_modality(self) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT modality, count(*) FROM {} GROUP BY modality ORDER BY modality"
                ).format(self._tables["items"])
            ).fetchall()
        return {modality: int(n) for modality, n in rows}

    def list(self, modality: str | None = None, limit: int = 100, offset: int = 0) -> list[Item]:
        if modality is not None:
            check_modality(modality)
        if not is_int(limit) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidQuery(f"limit must be an int in [1, {MAX_LIST_LIMIT}], got {limit!r}")
        if not is_int(offset) or not 0 <= offset <= MAX_OFFSET:
            raise InvalidQuery(f"offset must be an int in [0, {MAX_OFFSET}], got {offset!r}")
        query = sql.SQL(f"SELECT {_ITEM_COLUMNS} FROM {_ITEM_TABLES}").format(**self._tables)
        params: list[Any] = []
        if modality is not None:
            query += sql.SQL(" WHERE i.modality = %s")
            params.append(modality)
        query += sql.SQL(" ORDER BY i.created_at, i.id LIMIT %s OFFSET %s")
        params += [int(limit), int(offset)]
        with self._connection() as conn:
            return [_item(row) for row in conn.execute(query, params)]

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
        """One statement per query, on one connection."""
        queries = as_unit_matrix(queries, what="query")
        dims = check_search(k, dims, mode, modality, self.config.max_k)
        equalities = dict(check_where(where))
        if len(queries) == 0:
            return []
        chosen = search_sql.plan(
            kind=self.config.kind,
            dims=dims,
            k=int(k),
            adaptive=mode == "adaptive",
            adaptive_factor=self.config.adaptive_factor,
            min_shortlist=self.config.adaptive_min_shortlist,
        )
        filtered = (modality is not None, bool(equalities))
        documents = self._tables["documents"] if text else None
        with self._connection() as conn:
            return [
                self._search_one(conn, query, chosen, modality, equalities, filtered, documents)
                for query in queries
            ]

    def _search_one(
        self,
        conn: psycopg.Connection,
        query: np.ndarray,
        chosen: search_sql.SearchPlan,
        modality: str | None,
        where: dict[str, Any],
        filtered: tuple[bool, bool],
        documents: sql.Identifier | None,
    ) -> list[SearchHit]:
        """Run a plan; an indexed search that comes back short of k is re-run exactly.

        HNSW can miss rows under a selective filter even with iterative scans (they
        stop at max_scan_tuples); the exact re-run returns fewer than k only when
        fewer than k items pass the filter.
        """
        rows = self._run(conn, query, chosen, modality, where, filtered, documents)
        if len(rows) < chosen.k and chosen.indexed:
            exact = search_sql.exact_plan(chosen.dims, chosen.k)
            rows = self._run(conn, query, exact, modality, where, filtered, documents)
        return [
            SearchHit(item_id, float(score), mod, meta, text)
            for item_id, mod, meta, score, text in rows
        ]

    def _run(
        self,
        conn: psycopg.Connection,
        query: np.ndarray,
        chosen: search_sql.SearchPlan,
        modality: str | None,
        where: dict[str, Any],
        filtered: tuple[bool, bool],
        documents: sql.Identifier | None,
    ) -> list[tuple[Any, ...]]:
        settings = search_sql.session_settings(
            chosen,
            ef_search=self.config.hnsw_ef_search,
            iterative_scan=self.config.iterative_scan,
            max_scan_tuples=self.config.max_scan_tuples,
        )
        if self._session.get(conn) != settings:
            conn.execute(search_sql.SET_SESSION, settings)
            self._session[conn] = settings
        statement = search_sql.statement(
            self._tables["items"], chosen, filtered=filtered, documents=documents
        )
        params = search_sql.parameters(query, chosen, modality, where or None)
        return conn.execute(statement, params).fetchall()

    # ---- facts ----

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    def connection_stats(self) -> dict[str, int]:
        """psycopg_pool's counters: pool_size, pool_available, pool_max, requests_waiting, ..."""
        return dict(self._pool.get_stats())

    def _read_meta(self, key: str) -> str | None:
        query = sql.SQL("SELECT value FROM {} WHERE key = %s").format(self._tables["meta"])
        with self._connection() as conn:
            row = conn.execute(query, (key,)).fetchone()
        return None if row is None else str(row[0])

    def _write_meta(self, key: str, value: str) -> None:
        query = sql.SQL(
            "INSERT INTO {} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).format(self._tables["meta"])
        with self._connection() as conn:
            conn.execute(query, (key, value))

    def info(self) -> dict[str, Any]:
        counts = self.counts_by_modality()
        with self._connection() as conn:
            server, pgvector, preview_bytes, text_bytes = conn.execute(
                sql.SQL(
                    "SELECT current_setting('server_version'),"
                    " (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
                    " (SELECT coalesce(sum(octet_length(data)), 0) FROM {previews}),"
                    " (SELECT coalesce(sum(octet_length(text)), 0) FROM {documents})"
                ).format(**self._tables)
            ).fetchone()
        return {
            "backend": "postgres",
            "kind": self.config.kind,
            "count": sum(counts.values()),
            "counts": counts,
            "indexed": sum(counts.values()),
            "preview_bytes": int(preview_bytes),
            "text_bytes": int(text_bytes),
            "dims": list(MATRYOSHKA_DIMS),
            "embed_dim": EMBED_DIM,
            "max_k": self.config.max_k,
            "database": self.location,
            "server_version": server,
            "pgvector_version": pgvector,
            "pool": self.connection_stats(),
        }


def _rows(
    items: list[NewItem] | tuple[NewItem, ...],
) -> list[tuple[str, str, Jsonb, np.ndarray, Preview | None, str | None]]:
    """Validated (id, modality, metadata, unit vector, preview, text) tuples, in order."""
    for n, item in enumerate(items):
        if not isinstance(item, NewItem):
            raise InvalidItem(f"item {n} is a {type(item).__name__}, not a NewItem")
    vectors = as_unit_matrix(
        stack_vectors([item.vector for item in items]),
        what="vector" if len(items) == 1 else "vectors",
    )
    return [
        (
            os.urandom(16).hex() if item.id is None else check_id(item.id),
            check_modality(item.modality),
            Jsonb(metadata_json(item.metadata), dumps=str),  # already JSON text
            vectors[n],
            check_preview(item.preview),
            check_text(item.text),
        )
        for n, item in enumerate(items)
    ]


def _item(row: tuple[Any, ...]) -> Item:
    item_id, modality, metadata, vector, created_at, updated_at, text = row
    return Item(
        id=item_id,
        modality=modality,
        metadata=metadata,
        vector=np.asarray(vector.to_numpy(), dtype=np.float32),
        created_at=float(created_at),
        updated_at=float(updated_at),
        text=text,
    )

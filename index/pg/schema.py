"""The tables, created or checked at start, under an advisory lock so replicas may start together.

    {schema}.mmembed_meta      key/value: schema_version, embed_dim, model (its ModelStamp)
    {schema}.mmembed_items     id, modality, metadata jsonb, created_at, updated_at, embedding,
                               embedding64 (generated: the 64-d prefix)
    {schema}.mmembed_previews  id -> media_type, data (ON DELETE CASCADE)
    {schema}.mmembed_documents id -> text, the item's document (ON DELETE CASCADE)

Indexes on items: the primary key (id), modality, (created_at, id) for listing,
GIN (jsonb_path_ops) on metadata for `where` containment, and, once a store
with kind="hnsw" opens the collection, HNSW on the full vector and HNSW on the
64-d Matryoshka prefix.

The prefix is a generated column, `embedding64 halfvec(64) GENERATED ALWAYS AS
(l2_normalize(subvector(embedding, 1, 64))::halfvec(64)) STORED`: the database
derives it from the vector (nobody writes it by hand), and the HNSW index is on
the column. An expression index on the same expression was the alternative;
measured at 20k items (`python -m index.pg.prefix_benchmark`, two runs on the loaded
2-core box), the column answered HNSW-64 searches at p50 1.1 / 3.2 ms against 2.5 / 3.8 ms
for the expression, inserts ran at the same rate, and the heap was the same size
(three ~2.7 kB rows per 8 kB page either way; in general the column adds 132 B a
row). Why: an index-ordered scan still evaluates its ORDER BY expression for every
row it returns (EXPLAIN VERBOSE lists it in the scan's Output), so the expression
re-read each 2 kB vector to slice and normalise it; the column is 132 bytes,
computed once at write time.

The vector column has PLAIN storage: a vector(512) is 2,056 bytes, just over
the TOAST threshold, so by default PostgreSQL moves it out of line and every
exact scan pays a TOAST fetch per row (a 512-d exact search over 20k rows took
250 ms that way on the 2-core test machine). Previews and documents live in
side tables so that sequential scans of the items never read their bytes either;
a search joins the documents of its k answers only.

Versions: 1 the items, meta and previews; 2 adds mmembed_documents. An older
version is migrated in place when a store opens it (under the same lock): the
new table is created empty, so its items answer `text=None`, and nothing is
re-indexed. A database of a newer version than this code, or of another vector
dimension, is refused with a StoreError naming both.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from ..errors import StoreError
from ..vectors import EMBED_DIM, SHORTLIST_DIM
from .config import PostgresConfig

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MIGRATABLE = ("1",)  # versions ensure_schema brings up to SCHEMA_VERSION
ITEMS = "mmembed_items"
META = "mmembed_meta"
PREVIEWS = "mmembed_previews"
DOCUMENTS = "mmembed_documents"
# pg_advisory_xact_lock key: "mmembed" in ASCII, so concurrent starts migrate one at a time
_LOCK_KEY = 0x6D6D656D626564

PREFIX_EXPR = f"l2_normalize(subvector(embedding, 1, {SHORTLIST_DIM}))::halfvec({SHORTLIST_DIM})"
PREFIX_COLUMN = "embedding64"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {{meta}} (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {{items}} (
    id text PRIMARY KEY,
    modality text NOT NULL,
    metadata jsonb NOT NULL DEFAULT jsonb_build_object(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    embedding vector({EMBED_DIM}) NOT NULL,
    embedding64 halfvec({SHORTLIST_DIM}) GENERATED ALWAYS AS ({PREFIX_EXPR}) STORED
);
CREATE TABLE IF NOT EXISTS {{previews}} (
    id text PRIMARY KEY REFERENCES {{items}} (id) ON DELETE CASCADE,
    media_type text NOT NULL,
    data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS {{documents}} (
    id text PRIMARY KEY REFERENCES {{items}} (id) ON DELETE CASCADE,
    text text NOT NULL
);
ALTER TABLE {{items}} ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX IF NOT EXISTS mmembed_items_modality ON {{items}} (modality);
CREATE INDEX IF NOT EXISTS mmembed_items_created ON {{items}} (created_at, id);
CREATE INDEX IF NOT EXISTS mmembed_items_metadata ON {{items}} USING gin (metadata jsonb_path_ops);
"""

# Only for kind="hnsw": the graphs cost every write (a flat store scans exactly and
# never reads them), so a collection pays for them once a replica asks for them.
_HNSW_DDL = f"""
CREATE INDEX IF NOT EXISTS mmembed_items_hnsw64 ON {{items}}
    USING hnsw ({PREFIX_COLUMN} halfvec_ip_ops) WITH (m = {{m}}, ef_construction = {{ef}});
CREATE INDEX IF NOT EXISTS mmembed_items_hnsw512 ON {{items}}
    USING hnsw (embedding vector_ip_ops) WITH (m = {{m}}, ef_construction = {{ef}});
"""


def names(schema: str) -> dict[str, sql.Identifier]:
    """Qualified identifiers of the four tables."""
    return {
        "items": sql.Identifier(schema, ITEMS),
        "meta": sql.Identifier(schema, META),
        "previews": sql.Identifier(schema, PREVIEWS),
        "documents": sql.Identifier(schema, DOCUMENTS),
    }


def ensure_schema(conn: psycopg.Connection, config: PostgresConfig) -> None:
    """Create the extension, schema, tables and indexes if missing, migrate an older
    version, refuse a mismatch.

    Runs in one transaction under an advisory lock; `conn` must not be in autocommit.
    """
    tables = names(config.schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(config.schema))
        )
        found = _check_existing(conn, config.schema)
        ddl = _DDL + (_HNSW_DDL if config.kind == "hnsw" else "")
        ddl = ddl.format(
            meta="{meta}", items="{items}", previews="{previews}", documents="{documents}",
            m=config.hnsw_m, ef=config.hnsw_ef_construction,
        )  # fmt: skip
        for statement in ddl.split(";"):
            if statement.strip():
                conn.execute(sql.SQL(statement).format(**tables))
        conn.execute(
            sql.SQL(
                "INSERT INTO {meta} (key, value) VALUES ('schema_version', %s), ('embed_dim', %s)"
                " ON CONFLICT (key) DO NOTHING"
            ).format(**tables),
            (str(SCHEMA_VERSION), str(EMBED_DIM)),
        )
        if found in MIGRATABLE:
            # the DDL above created what the older version lacked
            conn.execute(
                sql.SQL("UPDATE {meta} SET value = %s WHERE key = 'schema_version'").format(
                    **tables
                ),
                (str(SCHEMA_VERSION),),
            )
            logger.info(
                "migrated the mmembed tables in schema %s from version %s to %s",
                config.schema, found, SCHEMA_VERSION,
            )  # fmt: skip


def _check_existing(conn: psycopg.Connection, schema: str) -> str | None:
    """Refuse tables written by a newer schema version or for another vector size;
    returns the version found (None: no tables yet)."""
    where = f"{schema}.{ITEMS}"
    version = None
    meta = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{META}",)).fetchone()[0]
    if meta is not None:
        found = dict(
            conn.execute(sql.SQL("SELECT key, value FROM {}").format(sql.Identifier(schema, META)))
        )
        version = found.get("schema_version")
        if version is not None and version != str(SCHEMA_VERSION) and version not in MIGRATABLE:
            raise StoreError(
                f"{where} has mmembed schema version {version}; this mmembed reads version "
                f"{SCHEMA_VERSION}. Upgrade mmembed, or use another schema or database."
            )
        dim = found.get("embed_dim")
        if dim is not None and dim != str(EMBED_DIM):
            raise StoreError(
                f"{where} holds {dim}-d vectors; this mmembed stores {EMBED_DIM}-d ones. "
                "Use another schema or database."
            )
    column = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped",
        (where,),
    ).fetchone()
    if column is not None and column[0] != f"vector({EMBED_DIM})":
        raise StoreError(
            f"{where}.embedding is {column[0]}; this mmembed stores vector({EMBED_DIM}). "
            "Use another schema or database."
        )
    return version

"""The SQL of one search: a shortlist ordered by one distance, re-ranked by the exact one.

Every search is one statement of the same shape:

    WITH shortlist AS MATERIALIZED (
        SELECT ... FROM items WHERE <filters> ORDER BY <shortlist distance> LIMIT n),
    ranked AS (SELECT id, modality, metadata, -(<exact distance at dims>) AS score
               FROM shortlist ORDER BY score DESC LIMIT k)
    SELECT id, modality, metadata, score, text FROM ranked LEFT JOIN documents
    ORDER BY score DESC

(the documents are joined to the k answers only, by primary key, and only when
asked for; without them the last step is `SELECT ..., NULL::text FROM shortlist`),

and the modes differ only in the shortlist distance and n:

    exact at d            the exact distance at d, n = k (a sequential scan)
    HNSW 512              embedding <#> q, n = k (the HNSW index; re-sorted, since an
                          iterative scan in relaxed order may return rows out of order)
    HNSW 64               the 64-d prefix column (half precision), n = k + max(k, 16): the
                          index ranks, the outer query re-scores in float32 (exact scores)
    adaptive at d > 64    the 64-d prefix, n = max(k * adaptive_factor, min_shortlist),
                          re-ranked at d in SQL:
                          the MRL funnel in one statement, not in Python

Distances are pgvector's `<#>` (negative inner product) on unit vectors, so a
score is the cosine similarity at the dims that ranked it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pgvector import HalfVector
from psycopg import sql
from psycopg.types.json import Jsonb

from ..vectors import EMBED_DIM, SHORTLIST_DIM, truncate
from .schema import PREFIX_COLUMN

SHORTLIST_PREFIX = "prefix64"
SHORTLIST_FULL = "full512"
SHORTLIST_EXACT = "exact"
MAX_EF_SEARCH = 1000  # pgvector's upper bound on hnsw.ef_search


@dataclass(frozen=True)
class SearchPlan:
    """shortlist: which distance orders it; size: its rows; dims: re-rank dims; indexed: HNSW on."""

    shortlist: str
    size: int
    dims: int
    k: int
    indexed: bool


def plan(
    *, kind: str, dims: int, k: int, adaptive: bool, adaptive_factor: int, min_shortlist: int = 1
) -> SearchPlan:
    """The plan for a search: what the docstring of this module lays out."""
    hnsw = kind == "hnsw"
    if adaptive and dims > SHORTLIST_DIM:
        shortlist = max(k * adaptive_factor, min_shortlist)
        return SearchPlan(SHORTLIST_PREFIX, shortlist, dims, k, hnsw)
    if hnsw and dims == SHORTLIST_DIM:
        return SearchPlan(SHORTLIST_PREFIX, k + max(k, 16), dims, k, True)
    if hnsw and dims == EMBED_DIM:
        return SearchPlan(SHORTLIST_FULL, k, dims, k, True)
    return exact_plan(dims, k)


def exact_plan(dims: int, k: int) -> SearchPlan:
    """Exact at `dims` by a sequential scan (what a short approximate answer falls back to)."""
    return SearchPlan(SHORTLIST_EXACT, k, dims, k, False)


def _at_dims(dims: int) -> str:
    return "embedding" if dims == EMBED_DIM else f"l2_normalize(subvector(embedding, 1, {dims}))"


def statement(
    items: sql.Identifier,
    search: SearchPlan,
    *,
    filtered: tuple[bool, bool],
    documents: sql.Identifier | None = None,
) -> sql.Composed:
    """The search statement, rows (id, modality, metadata, score, text); `filtered` says
    whether (modality, where) filters are present, `documents` names the table of texts
    to join (None: text is NULL)."""
    order = {
        SHORTLIST_PREFIX: f"{PREFIX_COLUMN} <#> %(q_short)s",
        SHORTLIST_FULL: "embedding <#> %(q_full)s",
        SHORTLIST_EXACT: f"{_at_dims(search.dims)} <#> %(q_dims)s",
    }[search.shortlist]
    clauses = []
    if filtered[0]:
        clauses.append("modality = %(modality)s")
    if filtered[1]:
        clauses.append("metadata @> %(where)s")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    shortlist = (
        "WITH shortlist AS MATERIALIZED ("
        f" SELECT id, modality, metadata, embedding FROM {{items}} {where}"
        f" ORDER BY {order} LIMIT %(n)s)"
    )
    score = f"-({_at_dims(search.dims)} <#> %(q_dims)s) AS score"
    if documents is None:
        return sql.SQL(
            f"{shortlist} SELECT id, modality, metadata, {score}, NULL::text"
            " FROM shortlist ORDER BY score DESC, id LIMIT %(k)s"
        ).format(items=items)
    return sql.SQL(
        f"{shortlist}, ranked AS (SELECT id, modality, metadata, {score}"
        " FROM shortlist ORDER BY score DESC, id LIMIT %(k)s)"
        " SELECT r.id, r.modality, r.metadata, r.score, d.text"
        " FROM ranked AS r LEFT JOIN {documents} AS d ON d.id = r.id"
        " ORDER BY r.score DESC, r.id"
    ).format(items=items, documents=documents)


def parameters(
    query: np.ndarray, search: SearchPlan, modality: str | None, where: dict[str, Any] | None
) -> dict[str, Any]:
    """Bind values for `statement`: query (512,) float32 unit, sliced and renormalised here."""
    row = query[None, :]
    params: dict[str, Any] = {
        "q_dims": truncate(row, search.dims)[0],
        "n": search.size,
        "k": search.k,
    }
    if search.shortlist == SHORTLIST_PREFIX:
        params["q_short"] = HalfVector(truncate(row, SHORTLIST_DIM)[0])
    if search.shortlist == SHORTLIST_FULL:
        params["q_full"] = query
    if modality is not None:
        params["modality"] = modality
    if where:
        params["where"] = Jsonb(where)
    return params


def session_settings(
    search: SearchPlan, *, ef_search: int, iterative_scan: str, max_scan_tuples: int
) -> tuple[str, ...]:
    """Values for SET_SESSION: enable_indexscan, enable_seqscan, hnsw.ef_search,
    iterative_scan, max tuples.

    Exact: index scans off, so the planner scans the table (the B-tree and GIN indexes
    still serve filters through bitmap scans). Indexed: sequential scans off, so the
    HNSW graph is used even where the planner would guess a small table is cheaper to
    scan (what kind="hnsw" asks for); a selective filter may still pick a bitmap scan
    of the GIN index, which is exact.
    """
    return (
        "on" if search.indexed else "off",
        "off" if search.indexed else "on",
        str(min(MAX_EF_SEARCH, max(search.size, ef_search))),
        iterative_scan,
        str(max_scan_tuples),
    )


# Session-wide on the pooled connection (which only this store uses); the store sends it
# only when a search needs other values than the connection has.
SET_SESSION = (
    "SELECT set_config('enable_indexscan', %s, false), set_config('enable_seqscan', %s, false),"
    " set_config('hnsw.ef_search', %s, false),"
    " set_config('hnsw.iterative_scan', %s, false),"
    " set_config('hnsw.max_scan_tuples', %s, false)"
)

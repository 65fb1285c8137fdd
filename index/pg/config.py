"""Settings of the PostgreSQL backend, passed whole to `PostgresStore.open`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import INDEX_KINDS
from ..errors import StoreError

ITERATIVE_SCANS = ("off", "relaxed_order", "strict_order")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class PostgresConfig:
    """How the store uses the database.

    kind: "flat" (exact search by sequential scans) or "hnsw" (the 64-d and 512-d
        HNSW indexes, created when such a store first opens the collection, answer
        searches at 64 and 512 dims and adaptive's shortlist; 128 and 256 dims are
        always exact). The same tables serve both: a flat store never reads the
        graphs (but its writes keep them up to date once they exist).
    schema: the PostgreSQL schema holding the tables (created if missing); one
        collection per schema.
    adaptive_factor: adaptive search re-ranks the top `k * adaptive_factor` of the
        64-d shortlist with the vectors at the requested dims, and never fewer than
        `adaptive_min_shortlist` (as IndexConfig's).
    max_k: largest k a search may ask for.
    hnsw_m, hnsw_ef_construction: graph parameters, used when the indexes are created
        (an existing index keeps the ones it was built with).
    hnsw_ef_search: candidate list of an HNSW search (raised per query to the number
        of rows asked for, up to pgvector's limit of 1000).
    iterative_scan: pgvector's `hnsw.iterative_scan`: with a filter, keep walking the
        graph until enough rows pass it ("relaxed_order" re-sorted in SQL), so a
        selective filter still returns k rows. A search that still comes back short
        is re-run exactly.
    max_scan_tuples: pgvector's `hnsw.max_scan_tuples`, the bound on that walk.
    pool_min_size, pool_size: connections kept open / at most, per process.
    pool_timeout_s: longest wait for a free (or new) connection before the call fails
        with StoreUnavailable (the service answers 503).
    connect_timeout_s: TCP connect timeout of each new connection.
    """

    kind: str = "flat"
    schema: str = "public"
    adaptive_factor: int = 10
    adaptive_min_shortlist: int = 100
    max_k: int = 1000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 100
    iterative_scan: str = "relaxed_order"
    max_scan_tuples: int = 20_000
    pool_min_size: int = 1
    pool_size: int = 10
    pool_timeout_s: float = 5.0
    connect_timeout_s: int = 5

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise StoreError(f"PostgresConfig.kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.iterative_scan not in ITERATIVE_SCANS:
            raise StoreError(
                f"PostgresConfig.iterative_scan must be one of {ITERATIVE_SCANS}, "
                f"got {self.iterative_scan!r}"
            )
        if not isinstance(self.schema, str) or not _IDENTIFIER.match(self.schema):
            raise StoreError(
                "PostgresConfig.schema must be a lower-case SQL identifier "
                f"([a-z_][a-z0-9_]*, at most 63 characters), got {self.schema!r}"
            )
        for name in (
            "adaptive_factor",
            "adaptive_min_shortlist",
            "max_k",
            "hnsw_m",
            "hnsw_ef_construction",
            "hnsw_ef_search",
            "max_scan_tuples",
            "pool_min_size",
            "pool_size",
            "connect_timeout_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise StoreError(f"PostgresConfig.{name} must be a positive int, got {value!r}")
        if self.pool_min_size > self.pool_size:
            raise StoreError(
                f"PostgresConfig.pool_min_size ({self.pool_min_size}) must not exceed "
                f"pool_size ({self.pool_size})"
            )
        if not self.pool_timeout_s > 0:
            raise StoreError(
                f"PostgresConfig.pool_timeout_s must be positive, got {self.pool_timeout_s!r}"
            )

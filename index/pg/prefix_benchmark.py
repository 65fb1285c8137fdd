"""How to index the 64-d prefix: an expression index, or a generated column with an index.

    python -m index.pg.prefix_benchmark --n 20000

Two tables on a throwaway local server, the same synthetic data as
index.benchmark: one with an HNSW index on the expression
`l2_normalize(subvector(embedding, 1, 64))::halfvec(64)`, one with that
expression as a stored generated column and the HNSW index on the column.
Prints, for each: insert rate with the graph live, HNSW-64 search p50/p99
(top 20, ef_search 40) and heap bytes per item. index/pg/schema.py uses the
column; its docstring has the numbers and the reason.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from ..synthetic import matryoshka_like, queries_like
from ..vectors import SHORTLIST_DIM, truncate
from .local_server import LocalPostgres
from .schema import PREFIX_EXPR

VARIANTS = {
    "expression index": ("", PREFIX_EXPR),
    "generated column": (
        f", p64 halfvec({SHORTLIST_DIM}) GENERATED ALWAYS AS ({PREFIX_EXPR}) STORED",
        "p64",
    ),
}


def measure(
    conn: psycopg.Connection, name: str, extra: str, key: str, x: np.ndarray, q: np.ndarray
) -> str:
    table = name.replace(" ", "_")
    conn.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, embedding vector(512) NOT NULL{extra})"
    )
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE PLAIN")
    conn.execute(f"CREATE INDEX ON {table} USING hnsw (({key}) halfvec_ip_ops)")
    start = time.perf_counter()
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["int4", "vector"])
        for i, v in enumerate(x):
            copy.write_row((i, v))
    rate = len(x) / (time.perf_counter() - start)
    conn.execute(f"VACUUM ANALYZE {table}")
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET hnsw.ef_search = 40")
    ms = []
    for v in q:
        prefix = HalfVector(truncate(v[None, :], SHORTLIST_DIM)[0])
        start = time.perf_counter()
        conn.execute(f"SELECT id FROM {table} ORDER BY {key} <#> %s LIMIT 20", (prefix,)).fetchall()
        ms.append((time.perf_counter() - start) * 1000)
    heap = conn.execute("SELECT pg_relation_size(%s)", (table,)).fetchone()[0]
    return (
        f"| {name} | {rate:,.0f} | {np.percentile(ms, 50):.2f} / {np.percentile(ms, 99):.2f} "
        f"| {heap / len(x):,.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    clusters = max(100, args.n // 100)
    x = matryoshka_like(args.n, clusters=clusters, seed=0)
    q = queries_like(args.queries, clusters=clusters, seed=0)
    with LocalPostgres(settings={"maintenance_work_mem": "1GB"}) as server:
        with psycopg.connect(server.create_database("prefix"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            register_vector(conn)
            print(
                "| prefix as | inserts/s (graph live) | HNSW-64 p50 / p99 (ms) | heap bytes/item |"
            )
            print("|---|---|---|---|")
            for name, (extra, key) in VARIANTS.items():
                print(measure(conn, name, extra, key, x, q), flush=True)


if __name__ == "__main__":
    main()

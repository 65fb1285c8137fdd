"""Benchmark the vector store: add throughput, search latency, recall, memory, start-up.

    python -m index.benchmark --n 1000000

Data: `index.synthetic.matryoshka_like` (clustered unit vectors whose first 64
dims carry most of the signal, `n / 100` clusters), queries from the same
clusters. Ground truth for recall@k is the store's own exact 512-d search.
Prints one table; timings are wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import IndexConfig
from .faiss_index import MANIFEST_NAME
from .items import NewItem
from .store import VectorStore
from .synthetic import matryoshka_like, queries_like


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def latencies(call: Callable[[int], object], repeats: int) -> np.ndarray:
    """Milliseconds of `call(i)` for i in range(repeats)."""
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        out[i] = time.perf_counter() - start
    return out * 1000.0  # ms


def interleaved(calls: dict[str, Callable[[int], object]], repeats: int) -> dict[str, np.ndarray]:
    """Milliseconds of each `call(i)`, the calls taking turns; one untimed warm-up each."""
    for call in calls.values():
        call(0)
    out = {name: np.empty(repeats) for name in calls}
    for i in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call(i)
            out[name][i] = (time.perf_counter() - start) * 1000.0
    return out


def _search_call(
    store: VectorStore, queries: np.ndarray, batch: int, k: int, dims: int, mode: str
) -> Callable[[int], object]:
    """call(i): search query i alone (batch 1), or the first `batch` queries at once."""
    if batch == 1:
        return lambda i: store.search(queries[i], k=k, dims=dims, mode=mode)
    return lambda i: store.search_batch(queries[:batch], k=k, dims=dims, mode=mode)


def recall_at_k(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def _dir_bytes(directory: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(pattern))


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every measurement, in the order of the printed report: fill, search, disk, start-up.

    Long on purpose: one store goes through its whole life here, and the report's
    rows follow the code line by line.
    """
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name:<52} {value}", flush=True)

    clusters = max(100, args.n // 100)
    config = IndexConfig(
        kind=args.kind,
        adaptive_factor=args.factor,
        snapshot_every=args.n + 1,
        synchronous=args.synchronous,
        faiss_threads=args.threads,
    )
    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="mmembed-bench-"))
    data_dir = root / "store"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    row(
        "items / clusters / kind / synchronous / FAISS threads",
        f"{args.n} / {clusters} / {args.kind} / {args.synchronous} / {args.threads}",
    )

    start = time.perf_counter()
    vectors = matryoshka_like(args.n, clusters=clusters, seed=args.seed)
    queries = queries_like(max(args.queries, args.batch), clusters=clusters, seed=args.seed)
    row("generate synthetic vectors (s)", f"{time.perf_counter() - start:.1f}")

    gc.collect()
    rss_before = _rss_bytes()
    store = VectorStore.open(data_dir, config)
    start = time.perf_counter()
    for first in range(0, args.n, args.add_batch):
        chunk = vectors[first : first + args.add_batch]
        store.add_many(
            [NewItem(v, "text" if (first + i) % 2 else "image") for i, v in enumerate(chunk)]
        )
    add_seconds = time.perf_counter() - start
    row(f"add_many, batches of {args.add_batch} (items/s)", f"{args.n / add_seconds:,.0f}")
    single = queries[: args.single_adds]
    add_ms = latencies(lambda i: store.add(single[i], modality="text"), len(single))
    row(
        f"add one item, p50 / p99 (ms, {len(single)} adds)",
        f"{np.percentile(add_ms, 50):.2f} / {np.percentile(add_ms, 99):.2f}",
    )
    gc.collect()
    rss_delta = _rss_bytes() - rss_before
    del vectors
    gc.collect()

    cases = [
        ("dims=64", 64, "exact"),
        ("dims=512", 512, "exact"),
        ("adaptive (512)", 512, "adaptive"),
        ("dims=256", 256, "exact"),
    ]
    q1 = queries[: args.queries]
    qb = queries[: args.batch]
    p50: dict[tuple[str, int], float] = {}
    # cases interleaved query by query, so load from other processes hits them alike
    for batch, repeats in ((1, args.queries), (args.batch, args.batches)):
        calls = {
            label: _search_call(store, q1 if batch == 1 else qb, batch, args.k, dims, mode)
            for label, dims, mode in cases
        }
        timings = interleaved(calls, repeats)
        unit = "ms" if batch == 1 else "ms/batch"
        for label, ms in timings.items():
            p50[(label, batch)] = float(np.percentile(ms, 50))
            row(
                f"search {label}, batch {batch}: p50 / p99 ({unit})",
                f"{p50[(label, batch)]:.2f} / {np.percentile(ms, 99):.2f}",
            )

    truth = [[h.id for h in hits] for hits in store.search_batch(q1, k=args.k, dims=512)]
    for label, dims, mode in cases[:1] + cases[2:3]:
        found = [
            [h.id for h in hits] for hits in store.search_batch(q1, k=args.k, dims=dims, mode=mode)
        ]
        row(f"recall@{args.k} of {label} vs exact 512", f"{recall_at_k(found, truth):.4f}")
    for batch in (1, args.batch):
        base = p50[("dims=512", batch)]
        row(
            f"speed-up vs 512 flat, batch {batch}: 64 / adaptive (x)",
            f"{base / p50[('dims=64', batch)]:.1f} / {base / p50[('adaptive (512)', batch)]:.1f}",
        )

    filtered = latencies(
        lambda i: store.search(q1[i], k=args.k, dims=512, mode="adaptive", modality="text"), 11
    )
    row(
        "adaptive + modality filter (half match): first / then p50 (ms)",
        f"{filtered[0]:.1f} / {np.percentile(filtered[1:], 50):.1f}",
    )

    start = time.perf_counter()
    store.close()
    row("close = FAISS snapshot write (s)", f"{time.perf_counter() - start:.1f}")
    faiss_bytes = _dir_bytes(data_dir, "*.faiss")
    sqlite_bytes = _dir_bytes(data_dir, "items.sqlite3*")
    total = args.n + len(single)
    row("memory per item: RSS delta after adds (bytes)", f"{rss_delta / total:,.0f}")
    row(
        "disk per item: FAISS files / SQLite (bytes)",
        f"{faiss_bytes / total:,.0f} / {sqlite_bytes / total:,.0f}",
    )

    start = time.perf_counter()
    store = VectorStore.open(data_dir, config)
    row("start-up from snapshot (s)", f"{time.perf_counter() - start:.1f}")
    report = store.info()["open"]
    row(
        "  of which load+checksum / reconcile (s)",
        f"{report['load_seconds']} / {report['reconcile_seconds']}",
    )
    store.close()
    (data_dir / MANIFEST_NAME).unlink()
    start = time.perf_counter()
    store = VectorStore.open(data_dir, config)
    rebuilt = time.perf_counter() - start
    report = store.info()["open"]
    assert report["rebuilt"], report
    row("start-up with rebuild from SQLite (s)", f"{rebuilt:.1f}")
    row(
        "  of which rebuild / snapshot save (s)",
        f"{report['reconcile_seconds']} / {rebuilt - report['load_seconds'] - report['reconcile_seconds']:.1f}",
    )
    store.close()
    if not args.keep:
        shutil.rmtree(data_dir)
        if not args.data_dir:
            shutil.rmtree(root)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="items to add")
    parser.add_argument("--kind", choices=("flat", "hnsw"), default="flat")
    parser.add_argument("--factor", type=int, default=10, help="adaptive shortlist factor")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="batch-1 searches per case")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=10, help="batched searches per case")
    parser.add_argument("--add-batch", type=int, default=10_000)
    parser.add_argument("--single-adds", type=int, default=200)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="folder for the store (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args(argv)
    print_table(run(args))


def print_table(rows: list[tuple[str, Any]]) -> None:
    """A benchmark's (measure, value) rows as a Markdown table."""
    width = max(len(name) for name, _ in rows)
    print("\n| " + "measure".ljust(width) + " | value |")
    print("|" + "-" * (width + 2) + "|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()

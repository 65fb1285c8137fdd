"""Single adds while a FAISS snapshot is written, and the first add after a restart.

    python -m index.snapshot_benchmark --n 400000

Fills a store (flat, or `--kind hnsw`) with `n` synthetic items (`index.synthetic`),
closes it, reopens it (timing the first add), then adds items one at a time, each its
own committed write (as `POST /items`), with `snapshot_every` set so that a background
snapshot starts after `--before` adds. Prints the latency of each add while the
snapshot was being written (p50 / p99 / max), the snapshot's duration, and what an
inline save under the lock (the old path of both kinds) takes at this size. A flat
store's snapshot is written by a process of its own; an HNSW store's indexes are copied
under the lock (the add that starts the snapshot waits for that: the max) and written
by a thread. Everything stays in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .config import IndexConfig
from .items import NewItem
from .store import VectorStore
from .synthetic import matryoshka_like

FILL_BATCH = 2000


def run(args: argparse.Namespace) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="mmembed-snapshot-bench-", dir=args.tmp))
    results: dict[str, float] = {}
    try:
        data_dir = root / "store"
        vectors = matryoshka_like(args.n + args.max_adds + 1, clusters=max(100, args.n // 100))
        fill = IndexConfig(kind=args.kind, snapshot_every=args.n + 1, synchronous=args.synchronous)
        started = time.perf_counter()
        with VectorStore.open(data_dir, fill) as store:
            for first in range(0, args.n, FILL_BATCH):
                chunk = vectors[first : min(first + FILL_BATCH, args.n)]
                store.add_many([NewItem(v, "text") for v in chunk])
        print(f"filled {args.n} items and saved in {time.perf_counter() - started:.1f} s")

        config = IndexConfig(
            kind=args.kind, snapshot_every=args.before, synchronous=args.synchronous
        )
        store = VectorStore.open(data_dir, config)
        try:
            new = iter(vectors[args.n :])
            started = time.perf_counter()
            store.add(next(new), modality="text")
            results["first_add_after_restart_ms"] = (time.perf_counter() - started) * 1e3
            during: list[float] = []
            outside: list[float] = []
            snapshot_started = snapshot_ended = None
            for _ in range(args.max_adds):
                started = time.perf_counter()
                store.add(next(new), modality="text")
                ms = (time.perf_counter() - started) * 1e3
                thread = store._snapshotter
                running = thread is not None and thread.is_alive()
                if running and snapshot_started is None:
                    snapshot_started = time.perf_counter()
                if running:
                    during.append(ms)
                else:
                    outside.append(ms)
                    if snapshot_started is not None:
                        snapshot_ended = time.perf_counter()
                        if len(outside) >= 2 * args.before:
                            break
            store.wait_for_snapshot()
            if not during:
                raise SystemExit("no add ran while the snapshot was written: raise --max-adds")
            d = np.array(during)
            results |= {
                "adds_during_snapshot": len(d),
                "during_p50_ms": float(np.percentile(d, 50)),
                "during_p99_ms": float(np.percentile(d, 99)),
                "during_max_ms": float(d.max()),
                "outside_p50_ms": float(np.percentile(outside, 50)),
                "snapshot_s": (snapshot_ended or time.perf_counter()) - snapshot_started,
            }
            started = time.perf_counter()
            store.snapshot()  # inline, under the shared lock: writes wait this long
            results["inline_save_s"] = time.perf_counter() - started
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400_000, help="items in the store")
    parser.add_argument("--before", type=int, default=200, help="adds before the snapshot")
    parser.add_argument("--max-adds", type=int, default=20_000, help="most single adds timed")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--kind", choices=("flat", "hnsw"), default="flat", help="index kind")
    parser.add_argument("--tmp", default=None, help="folder for the temporary store")
    args = parser.parse_args(argv)
    results = run(args)
    print(f"items: {args.n}, kind={args.kind}, synchronous={args.synchronous}")
    print(f"  first add after a restart:        {results['first_add_after_restart_ms']:.1f} ms")
    print(
        f"  single adds during the snapshot:  {results['adds_during_snapshot']:.0f} adds, "
        f"p50 {results['during_p50_ms']:.1f} ms, p99 {results['during_p99_ms']:.1f} ms, "
        f"max {results['during_max_ms']:.1f} ms"
    )
    print(f"  single adds otherwise:            p50 {results['outside_p50_ms']:.1f} ms")
    print(f"  background snapshot:              {results['snapshot_s']:.2f} s")
    print(f"  inline save (writes wait):        {results['inline_save_s']:.2f} s")


if __name__ == "__main__":
    main()

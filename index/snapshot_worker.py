"""A flat store's FAISS snapshot, built and written in a process of its own.

    python -m index.snapshot_worker DATA_DIR --config '{"kind": "flat", ...}' --parent PID

The store (`index/store.py`) starts it every `snapshot_every` changes and goes on serving.
It reads every vector in one SQLite read transaction (one committed generation; writes go
on and are not seen), builds fresh indexes from them and writes them with the usual
crash-safe protocol, then prints one JSON line: its pid, the generation, the item count,
and the seconds spent reading and writing.

Why a process and not a thread: the copy is about 0.9 GB at 400k items, and freeing it
ran inside FAISS's destructor with the GIL held, stalling every request of the server for
50 to 80 ms. Here that memory, and the CPU spent filling it, belong to another process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import faiss

from .config import IndexConfig
from .errors import StoreError
from .faiss_index import RESERVE_MIN_ROWS, MatryoshkaIndexes
from .sqlite_store import DB_NAME, consistent_vectors

READ_BATCH = 10_000


class SnapshotFailed(StoreError):
    """The snapshot process failed; its standard error says why."""


def write_snapshot(
    data_dir: Path, config: IndexConfig, parent: int | None = None
) -> dict[str, Any]:
    """Build the flat indexes from one committed state of SQLite and save them."""
    started = time.perf_counter()
    copy = MatryoshkaIndexes(config)
    with consistent_vectors(data_dir / DB_NAME, READ_BATCH) as (generation, count, batches):
        # Room for every row up front: grown add by add, the arrays would be copied whole
        # at each doubling.
        copy.reserve(count + RESERVE_MIN_ROWS)
        for labels, vectors in batches:
            copy.add(labels, vectors)
    read = time.perf_counter()
    if parent is not None and os.getppid() != parent:
        raise SnapshotFailed("the store's process has gone; nothing written")
    copy.save(data_dir, generation)
    return {
        "pid": os.getpid(),
        "generation": generation,
        "items": copy.live_count,
        "read_s": round(read - started, 3),
        "write_s": round(time.perf_counter() - read, 3),
    }


def run_snapshot_process(data_dir: Path, config: IndexConfig) -> dict[str, Any]:
    """Run `write_snapshot` in a child process and return what it printed."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "index.snapshot_worker",
            str(data_dir),
            "--config",
            json.dumps(dataclasses.asdict(config)),
            "--parent",
            str(os.getpid()),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SnapshotFailed(
            f"snapshot process exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--config", required=True, help="the IndexConfig as JSON")
    parser.add_argument("--parent", type=int, default=None, help="write nothing once it exits")
    args = parser.parse_args(argv)
    config = IndexConfig(**json.loads(args.config))
    if config.kind != "flat":
        parser.error("only flat stores are snapshotted in a process of their own")
    faiss.omp_set_num_threads(1)
    print(json.dumps(write_snapshot(args.data_dir, config, args.parent)), flush=True)


if __name__ == "__main__":
    main()

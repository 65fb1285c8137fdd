"""Scale-out over HTTP: one `mmembed serve` replica vs two sharing one PostgreSQL index.

    python -m service.scaleout_benchmark --cores 0,1 --seconds 30 --concurrency 16

Each replica is pinned to one core with `taskset -c CORE` and runs one torch
thread. The database (a throwaway local PostgreSQL with pgvector, or --url) and
the load generator run unpinned. Two workloads, one after the other: `add`
(POST /items: embed a text and store it in the shared index) and `embed`
(POST /embed: embedding only). The client sends requests round-robin across the
replicas it is given, keeping `--concurrency` in flight for `--seconds`, first
against one replica, then against two. Reports requests/s, latency p50/p99 and
the two-replica speed-up per workload.

On a machine with only as many cores as replicas, the client and the database
compete with the replicas for them; say so when you quote the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from index.pg.local_server import LocalPostgres, free_port
from service.benchmark import make_texts

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def replica(core: int, index_url: str, args: argparse.Namespace, log_dir: Path) -> Iterator[str]:
    """A `mmembed serve` pinned to `core`; yields its base URL, stops it after."""
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing: apt-get install util-linux")
    port = free_port()
    command = ["taskset", "-c", str(core), sys.executable, "-m", "service.cli", "serve"]
    command += ["--port", str(port), "--preset", args.preset, "--log-level", "warning"]
    env = os.environ | {
        "MMEMBED_INDEX_URL": index_url,
        "MMEMBED_TORCH_THREADS": "1",
        "MMEMBED_INDEX_POOL_SIZE": "4",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log = (log_dir / f"replica-{core}.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"replica on core {core} did not start: see {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def load(urls: list[str], workload: str, concurrency: int, seconds: float) -> dict:
    """Keep `concurrency` requests in flight across `urls` for `seconds`; count and time them."""
    texts = make_texts(512)
    path = "/items" if workload == "add" else "/embed"
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency * len(urls))
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url in urls:  # warm-up: connections, the model's first batch
            (await client.post(f"{url}/embed", json={"text": "warm up"})).raise_for_status()
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                n = next(counter)
                started = time.perf_counter()
                answer = await client.post(
                    f"{urls[n % len(urls)]}{path}", json={"text": f"{texts[n % len(texts)]} {n}"}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                errors += answer.status_code >= 400

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": errors,
    }


def run(args: argparse.Namespace) -> None:
    cores = [int(c) for c in args.cores.split(",")]
    if len(cores) != 2:
        raise SystemExit("--cores takes two cores, one per replica: --cores 0,1")
    log_dir = Path(tempfile.mkdtemp(prefix="mmembed-scaleout-"))
    with contextlib.ExitStack() as stack:
        if args.url:
            index_url = args.url
        else:
            server = stack.enter_context(LocalPostgres())
            index_url = server.create_database("scaleout")
        first = stack.enter_context(replica(cores[0], index_url, args, log_dir))
        results: dict[tuple[str, int], dict] = {}
        for workload in args.workloads.split(","):
            results[(workload, 1)] = asyncio.run(
                load([first], workload, args.concurrency, args.seconds)
            )
        second = stack.enter_context(replica(cores[1], index_url, args, log_dir))
        for workload in args.workloads.split(","):
            results[(workload, 2)] = asyncio.run(
                load([first, second], workload, args.concurrency * 2, args.seconds)
            )
    print(
        f"\nreplicas pinned to cores {cores} (taskset), 1 torch thread each, preset {args.preset}"
    )
    print("| workload | replicas | requests/s | p50 ms | p99 ms | errors | vs 1 replica |")
    print("|---|---|---|---|---|---|---|")
    for (workload, n), r in results.items():
        ratio = r["rps"] / results[(workload, 1)]["rps"]
        print(
            f"| {workload} | {n} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['errors']} | {ratio:.2f}x |"
        )
    shutil.rmtree(log_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", default="0,1", help="two cores, one per replica")
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight per replica"
    )
    parser.add_argument("--workloads", default="add,embed", help="add (POST /items), embed")
    parser.add_argument("--preset", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--url", help="postgresql://... (default: a local throwaway server)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

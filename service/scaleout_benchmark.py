"""Scale-out over HTTP: one `mmembed serve` replica vs two sharing one PostgreSQL index.

    python -m service.scaleout_benchmark --cores 0,1 --seconds 30 --concurrency 16

Each replica is pinned to one core with `taskset -c CORE` and runs one torch
thread. The database (a throwaway local PostgreSQL with pgvector, or --url) and
the load generator run unpinned. Two workloads, one after the other: `add`
(POST /items: embed a text and store it in the shared index) and `embed`
(POST /embed: embedding only). The load is Debian's `wrk` (native, so the client
takes little of the replicas' CPU): one `wrk -t1 -c CONCURRENCY` per replica,
all running at once for `--seconds`, each cycling through 512 different
sentences; first against one replica, then against two. Reports requests/s (the
sum over replicas), the worst replica's latency p50/p99, and the two-replica
speed-up per workload.

`--model release` (the default) serves the shipped release, the model users
get, with its encoders from `--models-dir`; `tiny` is the random demo model,
whose embedding is so cheap that HTTP dominates.

On a machine with only as many cores as replicas, the load generator and the
database compete with the replicas for them; say so when you quote the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from index.pg.local_server import LocalPostgres, free_port
from service.benchmark import (
    SHARED_MODELS,
    encoder_env,
    make_texts,
    request_bodies,
    settle,
    wrk_run,
)

MODELS = ("release", "tiny", "base")

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def replica(core: int, index_url: str, args: argparse.Namespace, log_dir: Path) -> Iterator[str]:
    """A `mmembed serve` pinned to `core`; yields its base URL, stops it after."""
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is missing: apt-get install util-linux")
    port = free_port()
    command = ["taskset", "-c", str(core), sys.executable, "-m", "service.cli", "serve"]
    command += ["--port", str(port), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")} | {
        "MMEMBED_INDEX_URL": index_url,
        "MMEMBED_TORCH_THREADS": "1",
        "MMEMBED_INDEX_POOL_SIZE": "4",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    if args.model == "release":
        env |= encoder_env(args.models_dir)
    else:
        env |= {"MMEMBED_PRESET": args.model, "MMEMBED_MODALITIES": "text"}
        if args.model == "base":
            env |= encoder_env(args.models_dir, ("text",))
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


def load(urls: list[str], workload: str, concurrency: int, seconds: float) -> dict:
    """One `wrk` per replica, all at once, `concurrency` connections each, for `seconds`."""
    route = "/items" if workload == "add" else "/embed"
    bodies = request_bodies("/embed", make_texts(512), "mmembed")  # {"text": ...} for both
    for url in urls:  # warm-up: the model's first batch
        httpx.post(f"{url}/embed", json={"text": "warm up"}, timeout=120).raise_for_status()
    with ThreadPoolExecutor(len(urls)) as pool:
        runs = list(
            pool.map(
                lambda url: wrk_run(workload, url, route, bodies, concurrency, f"{seconds:g}s"),
                urls,
            )
        )
    for url in urls:  # answer what wrk left in flight before the next measurement
        settle(url)
    return {
        "rps": sum(r.rate for r in runs),
        "p50": max(r.p50_ms for r in runs),
        "p99": max(r.p99_ms for r in runs),
        "errors": sum(r.errors + r.non_2xx for r in runs),
    }


def run(args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """Measure, print the table, and return {(workload, replicas): result}."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu)")
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
            results[(workload, 1)] = load([first], workload, args.concurrency, args.seconds)
        second = stack.enter_context(replica(cores[1], index_url, args, log_dir))
        for workload in args.workloads.split(","):
            results[(workload, 2)] = load([first, second], workload, args.concurrency, args.seconds)
    print(
        f"\nreplicas pinned to cores {cores} (taskset), 1 torch thread each, model "
        f"{args.model}; wrk -t1 -c{args.concurrency} per replica, {args.seconds:g} s"
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
    return results


def main(argv: list[str] | None = None) -> dict[tuple[str, int], dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", default="0,1", help="two cores, one per replica")
    parser.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight per replica"
    )
    parser.add_argument("--workloads", default="add,embed", help="add (POST /items), embed")
    parser.add_argument(
        "--model", choices=MODELS, default="release", help="what the replicas serve"
    )
    parser.add_argument("--models-dir", type=Path, default=SHARED_MODELS)
    parser.add_argument("--url", help="postgresql://... (default: a local throwaway server)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

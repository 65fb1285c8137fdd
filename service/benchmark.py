"""Text embedding over HTTP under load, driven by `wrk`, beside the in-process batched rate.

    python -m service.benchmark                          # tiny demo model (seconds)
    python -m service.benchmark --real --duration 30s    # the shipped release (else the
                                                         # base preset), MiniLM from
                                                         # ../shared/models
    python -m service.benchmark --real --peer            # and infinity-emb on the same MiniLM
    python -m service.benchmark --real --runtime onnx-int8   # another encoder runtime

It starts `mmembed serve` as a real process on 127.0.0.1 and loads `wrk` (Debian's
C load generator: one thread, so the client takes little of the server's CPU)
with a Lua script that POSTs one short sentence per request, to `/embed` and to
`/v1/embeddings`, at each `--connections` count. It reports requests/s, p50 and
p99 latency, and any connection errors or non-2xx answers. Before that, with the
server idle, the same model embeds the same sentences in-process in batches of
`--batch-size`, from one thread and from as many threads as the server runs
batches at once (`--batch-workers`): the higher is the rate HTTP is compared with. `--peer` also starts infinity-emb
(`service/peer/infinity.sh`) on the same MiniLM and measures its `/embeddings`
the same way, one server at a time. `--runtime` sets the encoder runtime
(`MMEMBED_ENCODER_RUNTIME`) of the served model and of the in-process one alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from model.release import shipped_release
from model.runtime import ENCODER_RUNTIMES

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
PEER_SCRIPT = REPO / "service" / "peer" / "infinity.sh"

LUA = """
local bodies = {%(bodies)s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Result:
    target: str
    route: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    non_2xx: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def make_texts(n: int) -> list[str]:
    subjects = ["a dog", "the old man", "two children", "a red car", "the orchestra", "a storm"]
    verbs = ["walks along", "waits beside", "rushes past", "sings about", "looks at", "rolls over"]
    places = ["the river", "a quiet street", "the crowded market", "an empty beach", "the hills"]
    rng = np.random.default_rng(0)
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(places)} ({i})" for i in range(n)
    ]


def request_bodies(route: str, texts: list[str], model: str) -> list[str]:
    if route == "/embed":
        return [json.dumps({"text": t}) for t in texts]
    return [json.dumps({"model": model, "input": t}) for t in texts]


# Servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on 127.0.0.1, stopped on exit; `ready` is a URL that answers 200."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, ready: str):
        self.name, self.command, self.env, self.log_path, self.ready = (
            name,
            command,
            env,
            log,
            ready,
        )

    def __enter__(self) -> Server:
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 900  # the peer installs itself on first use
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.log_path}")
            try:
                if httpx.get(self.ready, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.proc.kill()
        raise SystemExit(f"{self.name} did not become ready: see {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def mmembed_server(env: dict[str, str], data_dir: Path) -> tuple[Server, str]:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-level", "warning"]
    env = env | {"PYTHONPATH": str(REPO)}
    url = f"http://127.0.0.1:{port}"
    return Server("mmembed", command, env, data_dir / "server.log", f"{url}/readyz"), url


def peer_server(args: argparse.Namespace, data_dir: Path) -> tuple[Server, str]:
    port = free_port()
    model = str(args.models_dir / "all-MiniLM-L6-v2")
    env = dict(os.environ)
    if args.torch_threads is not None:
        env |= {"OMP_NUM_THREADS": str(args.torch_threads)}
    url = f"http://127.0.0.1:{port}"
    server = Server(
        "infinity-emb",
        ["bash", str(PEER_SCRIPT), str(port), model],
        env,
        data_dir / "peer.log",
        f"{url}/health",
    )
    return server, url


# Load -------------------------------------------------------------------------------------


def wrk_run(
    target: str, url: str, route: str, bodies: list[str], connections: int, duration: str
) -> Result:
    """One `wrk` run: `connections` connections, closed loop, for `duration`."""
    script = LUA % {"bodies": ", ".join(json.dumps(b) for b in bodies)}
    out = run_wrk(script, url + route, connections, duration)
    return parse_wrk_result(out, target, route, connections)


def run_wrk(script: str, url: str, connections: int, duration: str) -> str:
    """`wrk -t1` with the Lua `script` against `url`; its stdout."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "30s"]
        command += ["-s", file.name, url]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(file.name)


def parse_wrk_result(out: str, target: str, route: str, connections: int) -> Result:
    """The `RESULT requests duration_us p50_us p99_us errors non_2xx` line a script's
    `done` printed."""
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result for {target} {route}:\n{out}")
    requests, duration_us, p50_us, p99_us, errors, non_2xx = (int(v) for v in line.split()[1:])
    return Result(
        target, route, connections, requests, duration_us / 1e6, p50_us / 1e3, p99_us / 1e3,
        errors, non_2xx,
    )  # fmt: skip


def settle(url: str, timeout: float = 300) -> None:
    """Wait until the requests wrk left in flight have been answered (one run never
    measures the tail of the last); `/metrics` itself is the one in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
            if line.startswith("mmembed_http_requests_in_flight ") and float(line.split()[1]) <= 1:
                return
        time.sleep(0.2)


def inprocess_rates(
    settings, texts: list[str], batch_size: int, seconds: float
) -> tuple[dict[int, float], dict[str, str]]:
    """Texts/s of `Embedder.embed_texts` in batches of `batch_size`, for about `seconds`,
    from one caller thread and from `settings.batch_workers` threads at once (as many
    batches as the server runs at a time), and how each encoder ran ({modality: "torch",
    "onnx" or "onnx-int8"}). HTTP is compared with the higher rate: a server that
    overlaps batches must not beat an in-process figure that could not."""
    from service.app import load_embedder

    embedder = load_embedder(settings)
    embedder.embed_texts(texts[:batch_size])  # warm-up
    rates = {}
    for threads in sorted({1, settings.batch_workers}):
        rates[threads] = _embed_for(embedder, texts, batch_size, seconds, threads)
    return rates, embedder.info["encoder_runtime"]


def _embed_for(embedder, texts: list[str], batch_size: int, seconds: float, threads: int) -> float:
    def caller(offset: int) -> int:
        done = 0
        while time.perf_counter() - started < seconds:
            embedder.embed_texts(
                [texts[(offset + done + j) % len(texts)] for j in range(batch_size)]
            )
            done += batch_size
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = sum(pool.map(caller, range(0, threads * batch_size, batch_size)))
    return done / (time.perf_counter() - started)


# Main -------------------------------------------------------------------------------------


def served_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--real, --checkpoint and --models-dir: what model a benchmark's server runs."""
    parser.add_argument(
        "--real",
        action="store_true",
        help="the shipped release (else the base preset) with encoders from --models-dir",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="serve this checkpoint")
    parser.add_argument("--models-dir", type=Path, default=SHARED_MODELS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.benchmark", description=__doc__.split("\n\n")[0]
    )
    served_model_arguments(parser)
    parser.add_argument("--peer", action="store_true", help="also measure infinity-emb")
    parser.add_argument("--connections", default="1,64", help="comma-separated wrk -c values")
    parser.add_argument("--duration", default="30s", help="wrk -d per measurement")
    parser.add_argument("--routes", default="/embed,/v1/embeddings")
    parser.add_argument("--batch-size", type=int, default=32, help="server and in-process batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--batch-workers",
        type=int,
        default=None,
        help="batches the server runs at once (default: the service's, 2)",
    )
    parser.add_argument(
        "--runtime",
        choices=ENCODER_RUNTIMES,
        default=None,
        metavar="NAME",
        help=f"encoder runtime of the server and in-process alike: {', '.join(ENCODER_RUNTIMES)} "
        "(default: the service's, auto)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="for the servers and in-process alike"
    )
    return parser.parse_args(argv)


def encoder_env(
    models_dir: Path, modalities: tuple[str, ...] = ("text", "audio")
) -> dict[str, str]:
    """MMEMBED_*_ENCODER settings pointing at the real encoders in ``models_dir``."""
    folders = {"text": "all-MiniLM-L6-v2", "audio": "whisper-base-encoder"}
    return {f"MMEMBED_{m.upper()}_ENCODER": str(models_dir / folders[m]) for m in modalities}


def settings_env(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "MMEMBED_MAX_BATCH_SIZE": str(args.batch_size),
        "MMEMBED_MAX_WAIT_MS": str(args.max_wait_ms),
    }
    if args.batch_workers is not None:
        env["MMEMBED_BATCH_WORKERS"] = str(args.batch_workers)
    if args.torch_threads is not None:
        env["MMEMBED_TORCH_THREADS"] = str(args.torch_threads)
    if args.runtime is not None:
        env["MMEMBED_ENCODER_RUNTIME"] = args.runtime
    if args.checkpoint is not None:
        env["MMEMBED_CHECKPOINT"] = str(args.checkpoint)
    elif not args.real:
        env |= {"MMEMBED_PRESET": "tiny", "MMEMBED_MODALITIES": "text"}
    elif shipped_release() is None:  # no release here: real encoders, untrained heads
        env |= {"MMEMBED_PRESET": "base", "MMEMBED_MODALITIES": "text"}
    if args.real or args.checkpoint is not None:
        env |= encoder_env(args.models_dir)
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu)")
    if args.peer and not args.real:
        raise SystemExit("--peer serves the real MiniLM: add --real")
    env = settings_env(args)
    from service.settings import Settings

    # The threads the server will give each batch (`Settings.for_serving`), in-process too.
    settings = Settings(
        **{k[len("MMEMBED_") :].lower(): v for k, v in env.items() if k.startswith("MMEMBED_")}
    ).for_serving()
    texts = make_texts(256)
    connections = [int(c) for c in args.connections.split(",")]
    routes = args.routes.split(",")
    seconds = float(args.duration.rstrip("s"))
    local, runtimes = inprocess_rates(settings, texts, args.batch_size, seconds)
    for threads, rate in local.items():
        print(
            f"  in-process, batches of {args.batch_size}, {threads} thread(s): {rate:.1f} texts/s",
            file=sys.stderr,
        )

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        server, url = mmembed_server(env, Path(tmp))
        with server:
            served = httpx.get(f"{url}/readyz", timeout=30).json()["encoder_runtime"]
            if served != runtimes:
                raise SystemExit(
                    f"the server runs its encoders as {served}, in-process as {runtimes}: "
                    "the two rates would not compare"
                )
            for route in routes:
                bodies = request_bodies(route, texts, "mmembed")
                for c in connections:
                    settle(url)
                    results.append(wrk_run("mmembed", url, route, bodies, c, args.duration))
                    _progress(results[-1])
        if args.peer:
            server, url = peer_server(args, Path(tmp))
            with server:
                bodies = request_bodies("/embeddings", texts, "all-MiniLM-L6-v2")
                for c in connections:
                    time.sleep(2)  # no in-flight gauge there: let the last run's tail finish
                    results.append(
                        wrk_run("infinity-emb", url, "/embeddings", bodies, c, args.duration)
                    )
                    _progress(results[-1])
    print_table(results, local, runtimes, args, settings)
    return 0


def _progress(r: Result) -> None:
    print(f"  {r.target} {r.route} c={r.connections}: {r.rate:.1f}/s", file=sys.stderr)


def print_table(
    results: list[Result], local: dict[int, float], runtimes: dict[str, str], args, settings
) -> None:
    model = settings.checkpoint or (
        f"preset {settings.preset}" if "preset" in settings.model_fields_set else shipped_release()
    )
    if args.real or args.checkpoint:
        model = f"{model}, MiniLM-L6 text encoder from {args.models_dir}"
    print(
        f"\nmodel: {model}; encoder runtime {settings.encoder_runtime} "
        f"({', '.join(f'{m}: {r}' for m, r in runtimes.items())}); "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
        f"max_batch_size={args.batch_size}, max_wait_ms={args.max_wait_ms:g}, "
        f"batch_workers={settings.batch_workers}; "
        f"wrk -t1 -d{args.duration}; one short sentence per request\n"
    )
    print("| server | route | connections | requests/s | p50 ms | p99 ms | errors | non-2xx |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.target} | {r.route} | {r.connections} | {r.rate:.1f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.errors} | {r.non_2xx} |"
        )
    for threads, rate in local.items():
        print(
            f"| mmembed in-process | embed_texts x{args.batch_size}, {threads} thread"
            f"{'s' if threads > 1 else ''} | - | {rate:.1f} texts/s | | | | |"
        )
    best = max(local.values())
    top = max(r.connections for r in results)
    peer = next((r for r in results if r.target != "mmembed" and r.connections == top), None)
    print()
    for r in results:
        if r.target == "mmembed" and r.connections == top:
            line = f"{r.route} at {top} connections: {r.rate / best:.2f} of the in-process rate"
            if peer is not None:
                line += f", {r.rate / peer.rate:.2f}x infinity-emb"
            print(line)


if __name__ == "__main__":
    sys.exit(main())

"""Embedding throughput and latency over HTTP against the same `Embedder` in-process.

    python -m service.benchmark                       # tiny demo model, all modalities
    python -m service.benchmark --real                # MiniLM + Whisper-base from ../shared/models

It starts `mmembed serve` as a real process on 127.0.0.1, sends text, image and
audio embed requests at concurrency 1, 16 and 64, then loads the same model in
this process and embeds the same (already decoded) inputs in batches of
`--batch-size`. The last column compares HTTP throughput at the highest
concurrency with that in-process batched throughput. Client and server share
the machine's cores, so the HTTP numbers include the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
from PIL import Image, ImageDraw

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


@dataclass
class Result:
    modality: str
    mode: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float = float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


# Inputs ---------------------------------------------------------------------------------


def make_texts(n: int) -> list[str]:
    subjects = ["a dog", "the old man", "two children", "a red car", "the orchestra", "a storm"]
    verbs = ["walks along", "waits beside", "rushes past", "sings about", "looks at", "rolls over"]
    places = ["the river", "a quiet street", "the crowded market", "an empty beach", "the hills"]
    rng = np.random.default_rng(0)
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(places)} ({i})" for i in range(n)
    ]


def make_images(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (224, 224), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(0, 180, 2))
            box = (x, y, x + int(rng.integers(10, 60)), y + int(rng.integers(10, 60)))
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def make_audio(n: int, texts: list[str]) -> list[bytes]:
    """Speech from espeak-ng when installed (about 2 s each), else 2 s chirps; 16 kHz WAV."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = Path(tmp) / f"{i}.wav"
            try:
                subprocess.run(
                    ["espeak-ng", "-w", str(path), texts[i % len(texts)]],
                    check=True,
                    capture_output=True,
                )
                out.append(path.read_bytes())
                continue
            except (OSError, subprocess.CalledProcessError):
                pass
            t = np.linspace(0, 2, 32_000, dtype=np.float32)
            buf = io.BytesIO()
            sf.write(
                buf, 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t * (1 + t)), 16_000, format="WAV"
            )
            out.append(buf.getvalue())
    return out


# HTTP -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, env: dict[str, str], data_dir: str) -> tuple:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    command += ["--data-dir", data_dir, "--log-level", "warning"]
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 - closed with the server
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become ready")


def request_kwargs(modality: str, payload: str | bytes) -> dict:
    if modality == "text":
        return {"json": {"text": payload}}
    return {"files": {"file": ("input", payload)}}


def batch_totals(metrics: str, modality: str) -> tuple[float, float]:
    """(batches, items) so far for a modality, from the server's batch-size histogram."""
    values = {}
    for line in metrics.splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f'mmembed_batch_size_{kind}{{modality="{modality}"}}'):
                values[kind] = float(line.rsplit(" ", 1)[1])
    return values.get("count", 0.0), values.get("sum", 0.0)


async def http_run(
    url: str, modality: str, payloads: list, concurrency: int, requests: int
) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        for payload in payloads[: min(concurrency, 8)]:  # warm up connections and the model
            (await client.post("/embed", **request_kwargs(modality, payload))).raise_for_status()
        latencies: list[float] = []
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                kwargs = request_kwargs(modality, payloads[i % len(payloads)])
                started = time.perf_counter()
                response = await client.post("/embed", **kwargs)
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()

        before = batch_totals((await client.get("/metrics")).text, modality)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        after = batch_totals((await client.get("/metrics")).text, modality)
    batches, items = after[0] - before[0], after[1] - before[1]
    return Result(
        modality, "http", concurrency, requests, seconds, latencies, items / max(batches, 1)
    )


# In-process -----------------------------------------------------------------------------


def inprocess_run(embedder, modality: str, items: list, batch_size: int, requests: int) -> Result:
    from model.constants import SAMPLE_RATE

    def embed(batch: list) -> None:
        if modality == "text":
            embedder.embed_texts(batch)
        elif modality == "image":
            embedder.embed_images(batch)
        else:
            embedder.embed_audio([c.samples for c in batch], sampling_rate=SAMPLE_RATE)

    embed(items[:batch_size])  # warm-up
    latencies = []
    started = time.perf_counter()
    done = 0
    while done < requests:
        size = min(batch_size, requests - done)
        batch = [items[(done + j) % len(items)] for j in range(size)]
        t0 = time.perf_counter()
        embed(batch)
        latencies.extend([(time.perf_counter() - t0) * 1000] * size)
        done += size
    return Result(
        modality,
        "in-process",
        batch_size,
        requests,
        time.perf_counter() - started,
        latencies,
    )


# Main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--real", action="store_true", help="MiniLM and Whisper-base (text, audio)")
    parser.add_argument("--models-dir", type=Path, default=SHARED_MODELS)
    parser.add_argument("--modalities", default=None, help="default: all the model has")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=256, help="requests per measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="server and in-process batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="for the server and in-process alike"
    )
    return parser.parse_args(argv)


def settings_env(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "MMEMBED_MAX_BATCH_SIZE": str(args.batch_size),
        "MMEMBED_MAX_WAIT_MS": str(args.max_wait_ms),
    }
    if args.torch_threads is not None:
        env["MMEMBED_TORCH_THREADS"] = str(args.torch_threads)
    if args.real:
        env |= {
            "MMEMBED_PRESET": "base",
            "MMEMBED_MODALITIES": "text,audio",
            "MMEMBED_TEXT_ENCODER": str(args.models_dir / "all-MiniLM-L6-v2"),
            "MMEMBED_AUDIO_ENCODER": str(args.models_dir / "whisper-base-encoder"),
        }
    else:
        env["MMEMBED_PRESET"] = "tiny"
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = settings_env(args)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    texts = make_texts(64)
    raw = {"text": texts, "image": make_images(16), "audio": make_audio(16, texts)}

    # The in-process model is built from the same settings as the server's.
    from service.app import load_embedder
    from service.media import decode_media
    from service.settings import Settings

    settings = Settings(
        **{k[len("MMEMBED_") :].lower(): v for k, v in env.items() if k.startswith("MMEMBED_")}
    )
    modalities = args.modalities.split(",") if args.modalities else list(settings.modalities)

    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    embedder = load_embedder(settings)

    # Per modality: in-process first (the server idles), then HTTP, so that both see
    # the same load from anything else running on the machine.
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url, log = start_server(args, env, data_dir)
        try:
            for modality in modalities:
                items = raw[modality]
                if modality != "text":
                    max_pixels = settings.max_image_pixels
                    items = [decode_media(b, max_pixels=max_pixels).value for b in items]
                local = inprocess_run(embedder, modality, items, args.batch_size, args.requests)
                results.append(local)
                print(f"  in-process {modality:5s} {local.throughput:8.1f}/s", file=sys.stderr)
                for c in concurrencies:
                    result = asyncio.run(http_run(url, modality, raw[modality], c, args.requests))
                    results.append(result)
                    print(
                        f"  http {modality:5s} c={c:<3d} {result.throughput:8.1f}/s",
                        file=sys.stderr,
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()

    print_table(results, args, settings, concurrencies, modalities)
    return 0


def print_table(results, args, settings, concurrencies, modalities) -> None:
    model = (
        "MiniLM-L6 text + Whisper-base audio (untrained heads)" if args.real else "tiny demo preset"
    )
    print(
        f"\nmodel: {model}; device {settings.device}; {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}; "
        f"server max_batch_size={args.batch_size}, max_wait_ms={args.max_wait_ms:g}; "
        f"{args.requests} requests per row\n"
    )
    columns = ["modality", "mode", "concurrency", "batch", "items/s", "p50 ms", "p99 ms"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in results:
        http = r.mode == "http"
        concurrency = str(r.concurrency) if http else "-"
        batch = f"{r.mean_batch:.1f} (mean)" if http else f"{r.concurrency}"
        print(
            f"| {r.modality} | {r.mode} | {concurrency} | {batch} | {r.throughput:.1f} | "
            f"{r.percentile(50):.1f} | {r.percentile(99):.1f} |"
        )
    top = max(concurrencies)
    print()
    for modality in modalities:
        http = next(
            r
            for r in results
            if r.modality == modality and r.mode == "http" and r.concurrency == top
        )
        local = next(r for r in results if r.modality == modality and r.mode != "http")
        print(
            f"{modality}: HTTP at concurrency {top} / in-process batched = "
            f"{http.throughput:.1f} / {local.throughput:.1f} = {http.throughput / local.throughput:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())

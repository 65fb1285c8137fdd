"""What a `/describe` costs: latency of one clip and the memory the language model takes.

    python -m service.describe_benchmark --seconds 4 --runs 10 \\
        --audio-encoder ../shared/models/whisper-base-encoder \\
        --text-encoder ../shared/models/all-MiniLM-L6-v2 --projector DIR

Speaks a sentence with espeak-ng, pads or cuts it to ``--seconds``, and times the
server's own path for it (latents from the release, then greedy decoding) ``--runs``
times after a warm-up, on this process's threads. Memory is the process's resident
size (VmRSS) after loading the release, after ``load_describer`` with the language
model turned off, and after loading it: the first two must be equal (the default
server without the ``[llm]`` extra loads nothing for /describe).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCE = "The small boat drifted slowly across the quiet lake at dawn."


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spoken_clip(seconds: float, rate: int = 16000) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True, capture_output=True)
        audio, sr = sf.read(path, dtype="float32")
    if sr != rate:
        from model.audio import prepare_clip

        audio = prepare_clip(audio, sr)
    n = int(seconds * rate)
    return np.pad(audio, (0, max(0, n - audio.size)))[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint folder (default: the release)"
    )
    parser.add_argument("--audio-encoder")
    parser.add_argument("--text-encoder")
    parser.add_argument("--llm", default=None)
    parser.add_argument(
        "--projector",
        type=Path,
        help="a describer/ folder to attach (the shipped release has none)",
    )
    args = parser.parse_args(argv)

    import torch

    from service.describe import DescribeJob, load_describer
    from service.engine import output_rows
    from service.media import AudioClip
    from service.settings import Settings

    settings = Settings(
        checkpoint=args.checkpoint,
        audio_encoder=args.audio_encoder,
        text_encoder=args.text_encoder,
        llm=args.llm,
    )
    start = rss_mib()
    from service.app import load_embedder

    embedder = load_embedder(settings)
    if args.projector is not None:
        from model.describer import load_projector

        found = load_projector(args.projector)
        if found is None:
            raise SystemExit(f"no projector in {args.projector}")
        embedder.attach_projector(*found)
    loaded = rss_mib()
    off, why = load_describer(embedder, settings.model_copy(update={"llm": "none"}))
    assert off is None, "the language model was meant to be off"
    after_off = rss_mib()
    service, why = load_describer(embedder, settings)
    if service is None:
        raise SystemExit(f"cannot describe: {why}")
    with_llm = rss_mib()
    clip = AudioClip(samples=spoken_clip(args.seconds))
    times, tokens, text = [], [], ""
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        (row,) = output_rows(embedder, "audio", [clip])
        (generation,) = service.run([DescribeJob(row[1], "audio", None, args.max_tokens)])
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
            tokens.append(generation.tokens)
        text = generation.text
    print(f"threads: {torch.get_num_threads()}, clip: {args.seconds:g} s, runs: {args.runs}")
    print(f"text: {text!r}")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| describe p50 | {statistics.median(times):.2f} s |")
    print(f"| describe p90 | {sorted(times)[int(0.9 * (len(times) - 1))]:.2f} s |")
    print(f"| tokens written | {statistics.median(tokens):.0f} |")
    print(f"| resident memory, release loaded | {loaded - start:.0f} MiB more than at start |")
    print(f"| with /describe off | {after_off - loaded:+.0f} MiB |")
    print(f"| with the language model | {with_llm - loaded:+.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

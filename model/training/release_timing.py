"""What the release's speed scripts share: loading the shipped release as users do,
from the same flags, and timing runs by their median.

Used by model/training/image_speed.py, model/training/transcript_speed.py and
model/training/text_speed.py.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from model import Embedder


def load_release(
    description: str,
    argv: Sequence[str] | None,
    *,
    repeats: int,
    more: Callable[[argparse.ArgumentParser], object] | None = None,
) -> tuple[argparse.Namespace, Embedder]:
    """Parse ``--text-encoder``, ``--audio-encoder``, ``--threads`` (2) and ``--repeats``
    (``repeats``), and whatever ``more`` adds to the parser; set torch's threads, and
    load the shipped release with those encoders."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--text-encoder")
    parser.add_argument("--audio-encoder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args, Embedder.from_pretrained(encoders=encoders_of(args))


def encoders_of(args: argparse.Namespace) -> dict[str, str]:
    """The encoder folders the flags name."""
    return {m: s for m, s in (("text", args.text_encoder), ("audio", args.audio_encoder)) if s}


def median_seconds(runs: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each run over ``repeats`` timed rounds after one warm-up round;
    with several runs, each round times them in turn, so a busy machine slows all alike."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, timed in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            timed.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]

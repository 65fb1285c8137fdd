"""CPU benchmark of the embedding model: throughput per modality, the resampler's share, memory.

Run from the repository root:

    HF_HUB_OFFLINE=1 nice -n 10 python -m model.benchmark [--models-dir ../shared/models]

Uses the real all-MiniLM-L6-v2 (text) and Whisper-base (audio) weights with the
``base`` architecture (untrained heads: speed does not depend on training). It
prints one table:

- embeddings per second at batch 1, 8 and 32 for text (short sentences), audio
  in "trimmed" windows (only the clip's frames) and in "full" windows (Whisper's
  padded 30 s; batch 1 and 8 by default, see --full-batch-sizes), with 3 s clips;
  the encoder's time (preprocessing included) and the resampler's time and share
  (resampler = adapter + Perceiver Resampler + alignment head, what the Embedder runs);
- the resampler alone on prepared tokens;
- cross-attention cost for a 3 s against a 30 s clip (150 against 1500 frames);
- peak resident memory of the process after each section (ru_maxrss).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.config import preset
from model.constants import SAMPLE_RATE
from model.multimodal import MultimodalModel

SENTENCES = [
    "A man is eating food.",
    "The weather will be cold and windy tomorrow morning.",
    "Two dogs are playing with a red ball in the park.",
    "She plays the violin in the city orchestra every weekend.",
    "Stock markets fell sharply after the announcement.",
    "A child is riding a bicycle down a quiet street.",
    "Please turn off the lights when you leave the room.",
    "The train to Edinburgh departs from platform four.",
]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _time(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median wall time of ``fn`` over up to ``repeats`` runs (at least one; no more once
    ``budget_s`` has passed). Warm up separately."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _clip(seconds: float, seed: int) -> np.ndarray:
    """A speech-like test signal: noise bursts modulated at syllable rate (content does not
    change the cost; only the length does)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * envelope * rng.normal(size=t.shape)).astype(np.float32)


def _row(name: str, batch: int, enc_s: float, res_s: float) -> str:
    total = enc_s + res_s
    return (
        f"| {name:<22} | {batch:>5} | {batch / total:>9.1f} | {1000 * enc_s:>10.1f} | "
        f"{1000 * res_s:>12.1f} | {100 * res_s / total:>5.1f}% | {_peak_rss_mib():>8.0f} |"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=here.parent / "shared" / "models")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument(
        "--full-batch-sizes",
        default="1,8",
        help="batch sizes for full-window audio (each clip costs a whole 30 s Whisper pass, "
        "so batch 32 adds minutes on a small CPU; pass 1,8,32 to include it)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per cell, at most")
    parser.add_argument("--torch-threads", type=int, help="torch threads (default: torch's)")
    return parser.parse_args(argv)


def _load_models(models_dir: Path) -> tuple[MultimodalModel, MultimodalModel, float]:
    """The real-weights model with the full Whisper window, the same with the trimmed one,
    and the seconds loading took."""
    config = preset(
        "base",
        encoders={
            "text": str(models_dir / "all-MiniLM-L6-v2"),
            "audio": str(models_dir / "whisper-base-encoder"),
        },
        modalities=("audio", "text"),
    )
    load_start = time.perf_counter()
    model = MultimodalModel(config).eval()
    trimmed = MultimodalModel(config.with_audio_window("trimmed")).eval()
    trimmed.load_state_dict(model.state_dict())
    return model, trimmed, time.perf_counter() - load_start


def _measure(
    args: argparse.Namespace,
    name: str,
    m: MultimodalModel,
    modality: str,
    items: list,
    sizes: list[int],
    **kw: object,
) -> None:
    """One table row per batch size: the encoder's time and the resampler's, and its share."""
    with torch.inference_mode():  # warm-up
        m(modality, m.preprocess(modality, items[:1], **kw))
    for b in sizes:
        chunk = (items * (b // len(items) + 1))[:b]
        with torch.inference_mode():
            enc_s = _time(
                lambda chunk=chunk: m.encode(modality, m.preprocess(modality, chunk, **kw)),
                args.repeats,
                args.budget,
            )
            out = m.encode(modality, m.preprocess(modality, chunk, **kw))
            res_s = _time(
                lambda out=out: m.forward_features(
                    modality, out.tokens, out.mask, with_llm_tokens=False
                ),
                args.repeats,
                args.budget,
            )
        print(_row(name, b, enc_s, res_s), flush=True)


def _paths_table(
    args: argparse.Namespace, model: MultimodalModel, trimmed: MultimodalModel
) -> None:
    batches = [int(b) for b in args.batch_sizes.split(",")]
    full_batches = [int(b) for b in args.full_batch_sizes.split(",")]
    print(
        "| path                   | batch | emb/s     | encoder ms | resampler ms | share  | RSS MiB  |"
    )
    print(
        "|------------------------|-------|-----------|------------|--------------|--------|----------|"
    )
    _measure(args, "text (MiniLM)", model, "text", SENTENCES, batches)
    clips = [_clip(3.0, s) for s in range(8)]
    rate = {"sampling_rate": SAMPLE_RATE}
    _measure(args, "audio 3 s, trimmed", trimmed, "audio", clips, batches, **rate)
    _measure(args, "audio 3 s, full 30 s", model, "audio", clips, full_batches, **rate)


def _resampler_table(args: argparse.Namespace, model: MultimodalModel) -> None:
    batches = [int(b) for b in args.batch_sizes.split(",")]
    print("Resampler alone (adapter + Perceiver Resampler + heads) on prepared encoder tokens:")
    print()
    print("| tokens                    | batch | emb/s     | ms/batch   |")
    print("|---------------------------|-------|-----------|------------|")
    for label, modality, length in (
        ("text, 16 tokens", "text", 16),
        ("audio 3 s, 150 frames", "audio", 150),
        ("audio 30 s, 1500 frames", "audio", 1500),
    ):
        width = model.config.encoders[modality].hidden_size
        # 30 s tokens at batch 32 add half a minute to the run and nothing new: cost is linear.
        for b in batches if length < 1500 else [b for b in batches if b <= 8]:
            tokens = torch.randn(b, length, width)
            mask = torch.ones(b, length, dtype=torch.bool)
            with torch.inference_mode():
                model.forward_features(modality, tokens[:1], mask[:1])  # warm-up
                sec = _time(
                    lambda t=tokens, k=mask, mod=modality: model.forward_features(
                        mod, t, k, with_llm_tokens=False
                    ),
                    args.repeats,
                    args.budget,
                )
            print(f"| {label:<25} | {b:>5} | {b / sec:>9.1f} | {1000 * sec:>10.1f} |", flush=True)


def _length_table(
    args: argparse.Namespace, model: MultimodalModel, trimmed: MultimodalModel
) -> None:
    print("Cost against clip length: one layer's cross-attention and the resampler at batch 8,")
    print("the whole audio path (preprocess, Whisper, resampler, heads) for one clip:")
    print()
    print(
        "| clip  | valid frames | cross-attn ms | resampler ms | trimmed total ms | full total ms |"
    )
    print(
        "|-------|--------------|---------------|--------------|------------------|---------------|"
    )
    config = model.config
    cross = model.resampler.layers[0].cross_attn
    latents = model.resampler.latents.expand(8, -1, -1)
    for seconds in (3.0, 30.0):
        frames = int(seconds * 50)
        one_clip = [_clip(seconds, 0)]
        with torch.inference_mode():
            cross(
                latents, torch.randn(8, 4, config.perceiver.dim), torch.ones(8, 4, dtype=torch.bool)
            )
            x = torch.randn(8, frames, config.perceiver.dim)
            valid = torch.ones(8, frames, dtype=torch.bool)
            cross_s = _time(lambda x=x, v=valid: cross(latents, x, v), args.repeats, args.budget)
            tok = torch.randn(8, frames, config.encoders["audio"].hidden_size)
            res_s = _time(
                lambda t=tok, v=valid: model.forward_features("audio", t, v, with_llm_tokens=False),
                args.repeats,
                args.budget,
            )
            totals = [
                _time(
                    lambda m=m, c=one_clip: m(
                        "audio", m.preprocess("audio", c), with_llm_tokens=False
                    ),
                    1,
                    args.budget,
                )
                for m in (trimmed, model)
            ]
        print(
            f"| {seconds:>3.0f} s | {frames:>12} | {1000 * cross_s:>13.2f} | {1000 * res_s:>12.1f} | "
            f"{1000 * totals[0]:>16.0f} | {1000 * totals[1]:>13.0f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, trimmed, load_s = _load_models(args.models_dir)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    print(
        f"mmembed model benchmark: CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"real MiniLM + Whisper-base, base heads ({trainable / 1e6:.1f}M trainable params); "
        f"models loaded in {load_s:.1f} s; peak RSS {_peak_rss_mib():.0f} MiB after loading"
    )
    print()
    _paths_table(args, model, trimmed)
    print()
    _resampler_table(args, model)
    print()
    _length_table(args, model, trimmed)
    print()
    print(f"Peak resident memory of the whole run: {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()

"""One training step of the trainable path on CPU, in float32 and with bfloat16 autocast.

    python -m model.training.step_speed --threads 2

Issue 32 asks whether bfloat16 autocast pays on CPUs with AVX512-BF16 or AMX,
and whether it makes the design-size resampler (64 latents x 512, 4 layers)
affordable beside the cut-down one the releases use (16 x 256, 2 layers). This
times the step the release's two-sided training takes: a batch of speech
tokens (3 s clips, Whisper frames pooled 4 to 1) and of text tokens through
their adapters, the shared resampler and the head, the contrastive loss,
backward and an AdamW step. Encoders are left out (their features are cached
in training). Random tokens: speed does not depend on the values. Prints the
median seconds per step of ``--steps`` after one warm-up, and the bfloat16 /
float32 ratio, for each resampler size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.config import preset
from model.multimodal import MultimodalModel
from model.training.losses import clip_loss

SIZES = {
    "cut-down (16 x 256, 2 layers; the releases')": {
        "perceiver": {"dim": 256, "num_latents": 16, "depth": 2, "ff_mult": 2},
        "adapter": {"hidden_mult": 1, "audio_frame_pool": 4},
    },
    "design (64 x 512, 4 layers)": {"adapter": {"audio_frame_pool": 4}},
}


def time_steps(model: MultimodalModel, batch: int, steps: int, bf16: bool) -> float:
    audio = torch.randn(batch, 150, 512)
    text = torch.randn(batch, 24, 384)
    audio_mask = torch.ones(batch, 150, dtype=torch.bool)
    text_mask = torch.ones(batch, 24, dtype=torch.bool)
    optim = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            a = model.forward_features("audio", audio, audio_mask, with_llm_tokens=False)
            t = model.forward_features("text", text, text_mask, with_llm_tokens=False)
            loss = clip_loss(a.embedding.float(), t.embedding.float(), 14.0)
        optim.zero_grad()
        loss.backward()
        optim.step()

    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, batch {args.batch} clips + {args.batch} texts")
    print("| resampler | float32 s/step | bfloat16 autocast s/step | bf16 / fp32 |")
    print("| --- | ---: | ---: | ---: |")
    for name, overrides in SIZES.items():
        config = preset("base", modalities=("audio", "text")).with_overrides(overrides)
        model = MultimodalModel(_without_encoders(config))
        fp32 = time_steps(model, args.batch, args.steps, bf16=False)
        bf16 = time_steps(model, args.batch, args.steps, bf16=True)
        print(f"| {name} | {fp32:.3f} | {bf16:.3f} | {bf16 / fp32:.2f} |")
    return 0


def _without_encoders(config):
    """The config with tiny random encoders of the real widths: the step never runs them,
    and building Whisper and MiniLM would only cost memory and time."""
    import dataclasses

    tiny = preset("tiny", modalities=("audio", "text"))
    encoders = {
        m: dataclasses.replace(
            tiny.encoders[m],
            hidden_size=config.encoders[m].hidden_size,
            random_init={
                **(tiny.encoders[m].random_init or {}),
                ("d_model" if m == "audio" else "hidden_size"): config.encoders[m].hidden_size,
            },
        )
        for m in config.encoders
    }
    return dataclasses.replace(config, encoders=encoders)


if __name__ == "__main__":
    raise SystemExit(main())

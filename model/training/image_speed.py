"""Images embedded per second in one process, beside the image encoder alone.

    python -m model.training.image_speed --text-encoder ../shared/models/all-MiniLM-L6-v2 \\
        --audio-encoder ../shared/models/whisper-base-encoder --threads 2

Loads the shipped release as users do and embeds drawn 512x512 pictures
(decoded PIL images: file decoding is the service's, not measured here) at
batch 1, 8 and 32. "encoder alone" is EfficientNet-lite0's preprocessing and
forward pass; "release" is ``Embedder.embed_images``: the same plus both
branches' image paths. Prints a Markdown table; numbers are medians of
``--repeats`` timed runs after one warm-up.
"""

from __future__ import annotations

import random

import torch

from model.training.pictures import COLOURS, SHAPES, draw_shape
from model.training.release_timing import load_release, median_seconds


def main(argv: list[str] | None = None) -> int:
    args, embedder = load_release(__doc__.splitlines()[0], argv, repeats=5)
    model = embedder.model
    rng = random.Random(0)
    pictures = [
        draw_shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng, size=512) for _ in range(32)
    ]

    def encoder_alone(batch):
        with torch.inference_mode():
            model.encode("image", model.preprocess("image", batch))

    print(f"threads {args.threads}; {embedder.info['model']} {embedder.info['version']}")
    print("| batch | encoder alone, images/s | release, images/s | release / encoder |")
    print("| ---: | ---: | ---: | ---: |")
    for size in (1, 8, 32):
        batch = pictures[:size]
        alone = size / median_seconds([lambda b=batch: encoder_alone(b)], args.repeats)[0]
        full = size / median_seconds([lambda b=batch: embedder.embed_images(b)], args.repeats)[0]
        print(f"| {size} | {alone:.1f} | {full:.1f} | {full / alone:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

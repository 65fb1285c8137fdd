"""Spoken clips embedded per second with and without the transcript, in one process.

    python -m model.training.transcript_speed --text-encoder ../shared/models/all-MiniLM-L6-v2 \\
        --audio-encoder ../shared/models/whisper-base-encoder --threads 2

Loads the shipped release as users do, and beside it the same release without its
transcript decoder (the speech path alone, which is what image-audio-text-v2 embeds
audio with), and embeds clips of held-out voices reading plain sentences of 3 to 13
words (1 to 5 s) at batch 1, 8 and 32 with ``Embedder.embed_audio``. The two are
timed in alternation, so a busy machine slows both alike; the ratio is the figure to
quote. Prints a Markdown table of medians of ``--repeats`` timed runs after a warm-up.
"""

from __future__ import annotations

import random

from model import Embedder
from model.constants import SAMPLE_RATE
from model.training.release_timing import load_release, median_seconds
from model.training.spoken import HELD_OUT_VOICES, sample_params, synthesize

SENTENCES = (
    "A dog barks.",
    "The weather will be cold and windy tomorrow.",
    "Two children are playing with a red ball in the park after school.",
    "Please close the door.",
    "The train to the coast leaves from the second platform every hour.",
    "She reads the paper.",
    "Stock markets fell sharply after the announcement this morning.",
    "A small bird sings on the fence.",
)


def speech_path_alone(embedder: Embedder, clips: list, rate: int) -> object:
    """``embed_audio`` with the decoder set aside: the speech path alone (same weights)."""
    model = embedder.model
    decoder, model.transcriber = model.transcriber, None
    try:
        return embedder.embed_audio(clips, rate)
    finally:
        model.transcriber = decoder


def main(argv: list[str] | None = None) -> int:
    args, embedder = load_release(__doc__.splitlines()[0], argv, repeats=3)
    if embedder.model.config.transcript is None:
        raise SystemExit(f"{embedder.info['model']} mixes in no transcripts")
    rng = random.Random(0)
    clips = [
        synthesize(s, sample_params(rng, HELD_OUT_VOICES, 0.0), seed=i)
        for i, s in enumerate(SENTENCES)
    ]
    seconds = sum(len(c) for c in clips) / SAMPLE_RATE / len(clips)
    print(
        f"threads {args.threads}; {embedder.info['model']} {embedder.info['version']}; "
        f"clips of {seconds:.1f} s on average"
    )
    print("| batch | speech path alone, clips/s | with the transcript, clips/s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for size in (1, 8, 32):
        batch = (clips * (size // len(clips) + 1))[:size]
        speech_s, release_s = median_seconds(
            [
                lambda b=batch: speech_path_alone(embedder, b, SAMPLE_RATE),
                lambda b=batch: embedder.embed_audio(b, SAMPLE_RATE),
            ],
            args.repeats,
        )
        alone, release = size / speech_s, size / release_s
        print(f"| {size} | {alone:.1f} | {release:.1f} | {release / alone:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

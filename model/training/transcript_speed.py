"""Spoken clips embedded per second with and without the transcript, in one process.

    python -m model.training.transcript_speed --text-encoder ../shared/models/all-MiniLM-L6-v2 \\
        --audio-encoder ../shared/models/whisper-base-encoder --threads 2

Loads the shipped release as users do, and beside it the same release without its
transcript decoder (the speech path alone, which is what image-audio-text-v2 embeds
audio with), and embeds clips of held-out voices reading plain sentences of 3 to 13
words (1 to 5 s) at batch 1, 8 and 32 with ``Embedder.embed_audio``. A release that
decodes short clips from more audio (``min_decode_seconds``, 7.0.0 on) is also timed
decoding them from their own frames, as 6.0.0 does, and one with a transcript prefix
(8.0.0 on) without it, as 7.0.0 embeds. All are timed in alternation, so a
busy machine slows them alike; the ratios are the figures to quote. Prints a Markdown
table of medians of ``--repeats`` timed runs after a warm-up.
"""

from __future__ import annotations

import dataclasses
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


def mixed_otherwise(embedder: Embedder, clips: list, rate: int, **changes: float) -> object:
    """``embed_audio`` with the release's transcript settings changed: ``min_decode_seconds``
    0 decodes every clip from its own frames (as releases up to 6.0.0 do),
    ``prefix_weight`` 0 leaves out the transcript prefix (as up to 7.0.0)."""
    model = embedder.model
    config = model.config
    model.config = dataclasses.replace(
        config, transcript=dataclasses.replace(config.transcript, **changes)
    )
    try:
        return embedder.embed_audio(clips, rate)
    finally:
        model.config = config


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
    transcript = embedder.model.config.transcript
    padded = transcript.min_decode_seconds
    short = sum(len(c) < padded * SAMPLE_RATE for c in clips)
    head = "| batch | speech path alone, clips/s | with the transcript, clips/s | ratio |"
    variants = []
    if padded:
        print(f"{short} of the {len(clips)} clips are shorter than {padded:g} s")
        head += " short clips from their own frames, clips/s | ratio to it |"
        variants.append({"min_decode_seconds": 0.0})
    if transcript.prefix_weight:
        head += " without the transcript prefix, clips/s | ratio to it |"
        variants.append({"prefix_weight": 0.0, "prefix_dims": 0})
    print(head)
    print("|" + " ---: |" * (head.count("|") - 1))
    for size in (1, 8, 32):
        batch = (clips * (size // len(clips) + 1))[:size]
        runs = [
            lambda b=batch: speech_path_alone(embedder, b, SAMPLE_RATE),
            lambda b=batch: embedder.embed_audio(b, SAMPLE_RATE),
            *[
                lambda b=batch, c=changes: mixed_otherwise(embedder, b, SAMPLE_RATE, **c)
                for changes in variants
            ],
        ]
        alone, release, *others = (size / s for s in median_seconds(runs, args.repeats))
        row = f"| {size} | {alone:.1f} | {release:.1f} | {release / alone:.2f} |"
        for other in others:
            row += f" {other:.1f} | {release / other:.2f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Spoken clips embedded per second with and without the transcript, in one process.

    python -m model.training.transcript_speed --text-encoder ../shared/models/all-MiniLM-L6-v2 \\
        --audio-encoder ../shared/models/whisper-base-encoder --threads 2

Loads the shipped release as users do, and beside it the same release without its
transcript decoder (the speech path alone, which is what image-audio-text-v2 embeds
audio with), and embeds clips of held-out voices reading plain sentences of 3 to 13
words (1 to 5 s) at batch 1, 8 and 32 with ``Embedder.embed_audio``. A release that
decodes short clips from more audio (``min_decode_seconds``, 7.0.0 on) is also timed
decoding them from their own frames, as 6.0.0 does. All are timed in alternation, so a
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


def own_frames_only(embedder: Embedder, clips: list, rate: int) -> object:
    """``embed_audio`` with every clip decoded from its own frames (``min_decode_seconds``
    0, as releases up to 6.0.0 decode)."""
    model = embedder.model
    config = model.config
    model.config = dataclasses.replace(
        config, transcript=dataclasses.replace(config.transcript, min_decode_seconds=0.0)
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
    padded = embedder.model.config.transcript.min_decode_seconds
    short = sum(len(c) < padded * SAMPLE_RATE for c in clips)
    head = "| batch | speech path alone, clips/s | with the transcript, clips/s | ratio |"
    if padded:
        print(f"{short} of the {len(clips)} clips are shorter than {padded:g} s")
        head += " short clips from their own frames, clips/s | ratio to it |"
    print(head)
    print("|" + " ---: |" * (head.count("|") - 1))
    for size in (1, 8, 32):
        batch = (clips * (size // len(clips) + 1))[:size]
        runs = [
            lambda b=batch: speech_path_alone(embedder, b, SAMPLE_RATE),
            lambda b=batch: embedder.embed_audio(b, SAMPLE_RATE),
        ]
        if padded:
            runs.append(lambda b=batch: own_frames_only(embedder, b, SAMPLE_RATE))
        alone, release, *own = (size / s for s in median_seconds(runs, args.repeats))
        row = f"| {size} | {alone:.1f} | {release:.1f} | {release / alone:.2f} |"
        if own:
            row += f" {own[0]:.1f} | {release / own[0]:.2f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

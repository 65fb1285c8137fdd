"""Texts embedded per second in one process by the shipped release, beside another
release (by default audio-text-v1 1.3.0, issue 32's reference).

    python -m model.training.text_speed --text-encoder ../shared/models/all-MiniLM-L6-v2 \\
        --audio-encoder ../shared/models/whisper-base-encoder --threads 2

Both embedders take turns on the same sentences at batch 1, 8 and 32, with the
same encoder runtime, so load that comes and goes hits both alike. Prints a
Markdown table; numbers are medians of ``--repeats`` timed runs after one warm-up.
"""

from __future__ import annotations

from model import Embedder
from model.benchmark import SENTENCES
from model.training.release_timing import encoders_of, load_release, median_seconds

REFERENCE = "audio-text-v1"


def main(argv: list[str] | None = None) -> int:
    args, embedder = load_release(
        __doc__.splitlines()[0],
        argv,
        repeats=7,
        more=lambda p: p.add_argument("--reference", default=REFERENCE),
    )
    other = Embedder.from_pretrained(args.reference, encoders=encoders_of(args))
    sentences = (SENTENCES * 8)[:32]
    ours, theirs = embedder.info, other.info
    print(
        f"threads {args.threads}; {ours['model']} {ours['version']} against {theirs['model']} {theirs['version']}"
    )
    print("| batch | shipped, texts/s | reference, texts/s | shipped / reference |")
    print("| ---: | ---: | ---: | ---: |")
    for size in (1, 8, 32):
        batch = sentences[:size]
        mine, ref = median_seconds(
            [lambda b=batch: embedder.embed_texts(b), lambda b=batch: other.embed_texts(b)],
            args.repeats,
        )
        print(f"| {size} | {size / mine:.1f} | {size / ref:.1f} | {ref / mine:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""People's recorded speech with its text, from Debian: Asterisk's English prompts.

Every spoken set the releases were trained on is espeak-ng's synthetic voices, and
until 7.0.0 they were chosen on such voices too. Tux Paint's 62 recorded words
(:mod:`model.training.stamps`) showed what that misses: a person's sub-second word
was heard as nothing. Debian's ``asterisk-core-sounds-en-wav`` holds 568 telephone
prompts ("Please enter your password followed by the pound key.", "ninety",
"Call forwarding.") read by one voice actor, Allison Smith (CC-BY-SA-3.0, 8 kHz);
``asterisk-core-sounds-en`` lists what each one says. The prompts whose text is a
sound ("[beep]") are left out, and a symbol's note is dropped ("dash [-]" says
"dash"), leaving 563.

They are split in two halves by a hash of the prompt's name, so the split never
depends on what else the package holds: ``people-selection`` may choose a
release's settings, ``people-test`` is read to report them.

A second voice, for testing only: KTuberling's English sound theme (Debian
``ktuberling-data``, GPL-2+), 71 single words a person says when a child places a
stamp ("camel", "pyramid", "sunglasses"). Its names are identifiers
(``egypt_palmtree``): the text is the part after the playground's prefix, as
written there, so a few compounds read as one word.

To measure a release on both (the served vectors, beside Whisper + MiniLM)::

    python -m model.training.recordings --release image-audio-text-v8 \
        --audio-encoder ../shared/models/whisper-base-encoder \
        --text-encoder ../shared/models/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from model.training.data import DataError

SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
TEXTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-wav"
SELECTION = "people-selection"
TEST = "people-test"
SPLITS = (SELECTION, TEST)
KTUBERLING = "usr/share/ktuberling/sounds/en.soundtheme"
KTUBERLING_PACKAGE = "ktuberling-data"
WORDS = "people-words"
# What the listing writes for a sound or beside a symbol's name ("[beep]", "dash [-]").
NOTE = re.compile(r"\s*\[[^\]]*\]")


def split_of(name: str) -> str:
    """The half a prompt belongs to, from its name alone (CRC-32, even: selection)."""
    return SELECTION if zlib.crc32(name.encode()) % 2 == 0 else TEST


def read_prompts(root: str | Path = "/") -> list[dict[str, Any]]:
    """Every spoken prompt under ``root`` (where the two packages are installed): its
    name, text, absolute WAV path and split, in the list's order.

    Raises:
        DataError: the packages are not installed there, naming them.
    """
    root = Path(root)
    listing, sounds = root / TEXTS, root / SOUNDS
    if not listing.is_file() or not sounds.is_dir():
        raise DataError(
            f"people's recordings: no {listing} or {sounds}; install them with "
            f"`apt-get install {PACKAGES}`"
        )
    rows = []
    with gzip.open(listing, "rt", encoding="utf-8") as lines:
        for line in lines:
            name, sep, text = line.partition(":")
            name, text = name.strip(), NOTE.sub("", text).strip()
            if not sep or line.startswith(";") or not text:
                continue
            wav = sounds / f"{name}.wav"
            if wav.is_file():
                rows.append(
                    {"name": name, "text": text, "audio": str(wav), "split": split_of(name)}
                )
    if not rows:
        raise DataError(f"people's recordings: {listing} names no prompt found in {sounds}")
    return rows


def write_manifests(root: str | Path, out: str | Path) -> dict[str, Path]:
    """``out/SPLIT.jsonl`` for each half (absolute audio paths, as :func:`read_clips`
    of the transcript release reads them): {split: manifest}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(root)
    manifests = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        rows = [{"audio": p["audio"], "text": p["text"]} for p in prompts if p["split"] == split]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        manifests[split] = path
    return manifests


def read_ktuberling(root: str | Path = "/") -> list[dict[str, Any]]:
    """KTuberling's English words under ``root``: name, text, absolute audio path, and
    the split :data:`WORDS` (a test set: nothing is chosen with it).

    Raises:
        DataError: the package is not installed there, naming it.
    """
    import xml.etree.ElementTree as ET

    theme = Path(root) / KTUBERLING
    if not theme.is_file():
        raise DataError(
            f"people's recorded words: no {theme}; install them with "
            f"`apt-get install {KTUBERLING_PACKAGE}`"
        )
    rows = []
    for sound in ET.parse(theme).getroot().iter("sound"):
        name, audio = sound.get("name", ""), theme.parent / sound.get("file", "")
        if name and audio.is_file():
            text = name.rpartition("_")[2]
            rows.append({"name": name, "text": text, "audio": str(audio), "split": WORDS})
    if not rows:
        raise DataError(f"people's recorded words: {theme} names no sound found beside it")
    return rows


def evaluate_people(model: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each recording finding its text among the distinct texts of ``rows``, as a server
    embeds both (audio->text R@k at 512 and 64 dims), and Whisper + MiniLM on the
    transcripts the model heard (a clip heard as nothing is a miss)."""
    from model.matryoshka import truncate
    from model.training.stamps import cascade_metrics, minilm, served_audio, text_ranks
    from model.training.transcript_release import groups_of, sentence_vectors

    groups, distinct = groups_of([r["text"] for r in rows])
    served = served_audio(model, [SimpleNamespace(path=r["audio"]) for r in rows])
    texts = sentence_vectors(model, distinct)
    out: dict[str, Any] = {"clips": len(rows), "texts": len(distinct)}
    for d in (512, 64):
        out[str(d)] = text_ranks(truncate(served["vectors"], d) @ truncate(texts, d).T, groups)
    if model.transcriber is not None:
        out["cascade"] = cascade_metrics(
            model, served["transcripts"], minilm(model, distinct), groups
        )
        out["heard"] = sum(bool(t.strip()) for t in served["transcripts"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A release on people's recorded speech.")
    parser.add_argument("--release", help="a release name or folder (default: the default)")
    parser.add_argument("--root", default="/", help="where the packages are installed")
    parser.add_argument("--audio-encoder", help="folder (default: the release's source)")
    parser.add_argument("--text-encoder", help="folder (default: the release's source)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from model.embedder import Embedder
    from model.release import DEFAULT_RELEASE

    sources = {m: s for m, s in (("audio", args.audio_encoder), ("text", args.text_encoder)) if s}
    model = Embedder.from_pretrained(args.release or DEFAULT_RELEASE, encoders=sources).model
    sets = {
        f"Asterisk's prompts, {TEST}": [p for p in read_prompts(args.root) if p["split"] == TEST],
        "KTuberling's words": read_ktuberling(args.root),
    }
    found = {name: evaluate_people(model, rows) for name, rows in sets.items()}
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n")
    print(
        "| recordings | clips | heard | ->text R@1 / R@5, 512 | ->text R@1, 64 | Whisper + MiniLM |"
    )
    print("| --- | ---: | ---: | --- | --- | --- |")
    for name, f in found.items():
        cascade = f.get("cascade")
        print(
            f"| {name} | {f['clips']} | {f.get('heard', '-')} | {f['512']['R@1']:.3f} / "
            f"{f['512']['R@5']:.3f} | {f['64']['R@1']:.3f} | "
            + (f"{cascade['R@1']:.3f} / {cascade['R@5']:.3f} |" if cascade else "- |")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

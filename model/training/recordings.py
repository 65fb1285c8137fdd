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
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any

from model.training.data import DataError

SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
TEXTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-wav"
SELECTION = "people-selection"
TEST = "people-test"
SPLITS = (SELECTION, TEST)
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

"""People's recordings (model/training/recordings.py): which of Asterisk's prompts are
kept, what each says, and the two halves, from a package tree written here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.training.data import DataError
from model.training.recordings import (
    SELECTION,
    SOUNDS,
    TEST,
    TEXTS,
    read_prompts,
    split_of,
    write_manifests,
)
from model.training.transcript_release import read_clips

LISTING = """; Core Asterisk Sounds in English

activated: Activated.
beep: [this is a simple beep tone]
letters/dash: dash [-]
digits/9: nine
vm-intro: Please leave your message after the tone.  When done, hang up.
missing-file: There is no recording of this one.
not a prompt line
"""


def _package(root: Path, listing: str = LISTING) -> Path:
    """The two packages' files under ``root``: the listing and a 0.2 s WAV (8 kHz, as
    shipped) for every name in it but ``missing-file``."""
    texts = root / TEXTS
    texts.parent.mkdir(parents=True)
    with gzip.open(texts, "wt", encoding="utf-8") as f:
        f.write(listing)
    for name in ("activated", "beep", "letters/dash", "digits/9", "vm-intro"):
        wav = root / SOUNDS / f"{name}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.zeros(1600, np.float32), 8000)
    return root


def test_prompts_are_the_spoken_ones_with_what_they_say(tmp_path: Path) -> None:
    prompts = read_prompts(_package(tmp_path))
    assert [(p["name"], p["text"]) for p in prompts] == [
        ("activated", "Activated."),
        ("letters/dash", "dash"),  # the symbol's note is not said
        ("digits/9", "nine"),
        ("vm-intro", "Please leave your message after the tone.  When done, hang up."),
    ]  # a beep is not speech; a name without a recording is left out
    assert all(Path(p["audio"]).is_absolute() and Path(p["audio"]).is_file() for p in prompts)
    assert [p["split"] for p in prompts] == [split_of(p["name"]) for p in prompts]


def test_the_halves_depend_on_the_name_alone() -> None:
    names = [f"prompt-{i}" for i in range(400)]
    halves = [split_of(n) for n in names]
    assert set(halves) == {SELECTION, TEST}
    assert 150 < halves.count(SELECTION) < 250  # about half
    assert halves == [split_of(n) for n in reversed(names)][::-1]  # order plays no part


def test_manifests_hold_each_half_with_absolute_paths(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    manifests = write_manifests(root, tmp_path / "out")
    assert set(manifests) == {SELECTION, TEST}
    rows = {split: read_clips(path) for split, path in manifests.items()}
    assert sorted(r["text"] for half in rows.values() for r in half) == sorted(
        p["text"] for p in read_prompts(root)
    )
    for split, half in rows.items():
        for row in half:
            assert Path(row["audio"]).is_file()
            assert (
                split_of(Path(row["audio"]).relative_to(root / SOUNDS).with_suffix("").as_posix())
                == split
            )
        lines = manifests[split].read_text().splitlines()
        assert all(set(json.loads(line)) == {"audio", "text"} for line in lines)


def test_missing_packages_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match="apt-get install asterisk-core-sounds-en asterisk-core-sounds-en-wav"
    ):
        read_prompts(tmp_path)
    _package(tmp_path / "empty", listing="; nothing\nbeep: [a beep]\n")
    with pytest.raises(DataError, match="names no prompt"):
        read_prompts(tmp_path / "empty")

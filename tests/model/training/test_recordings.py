"""People's recordings (model/training/recordings.py): which of Asterisk's prompts are
kept, what each says, and the two halves, from a package tree written here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

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


THEME = """<language code="en">
    <sound name="ball" file="en/ball.ogg" />
    <sound name="egypt_palmtree" file="en/egypt_palmtree.ogg" />
    <sound name="moon_ufo" file="en/moon_ufo.ogg" />
</language>
"""


def test_ktuberling_words_are_the_names_after_their_playground(tmp_path: Path) -> None:
    from model.training.recordings import KTUBERLING, WORDS, read_ktuberling

    with pytest.raises(DataError, match="apt-get install ktuberling-data"):
        read_ktuberling(tmp_path)
    theme = tmp_path / KTUBERLING
    (theme.parent / "en").mkdir(parents=True)
    theme.write_text(THEME)
    for name in ("ball", "egypt_palmtree"):  # moon_ufo has no recording
        sf.write(theme.parent / "en" / f"{name}.ogg", np.zeros(1600, np.float32), 16000)
    words = read_ktuberling(tmp_path)
    assert [(w["name"], w["text"], w["split"]) for w in words] == [
        ("ball", "ball", WORDS),
        ("egypt_palmtree", "palmtree", WORDS),
    ]
    assert all(Path(w["audio"]).is_file() for w in words)


def test_people_are_measured_as_a_server_embeds_them(tmp_path: Path) -> None:
    """A tiny model with a random decoder: recordings find their texts among the distinct
    ones, and the cascade is scored on the transcripts the model served."""
    from model.multimodal import MultimodalModel
    from model.training.recordings import evaluate_people
    from model.training.stamps import cascade_metrics, minilm, served_audio
    from tests.conftest import tiny_with_transcripts

    model = MultimodalModel(tiny_with_transcripts(("audio", "text"))).eval()
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["a red ball", "a red ball", "the cat sings"]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal(8000 * (i + 1)).astype(np.float32), 16000)
        rows.append({"audio": str(path), "text": text})
    found = evaluate_people(model, rows)
    assert found["clips"] == 3 and found["texts"] == 2
    assert found["512"]["R@5"] == found["64"]["R@5"] == 1.0  # two texts: always in the top 5
    assert all(0.0 <= found[d]["R@1"] <= 1.0 for d in ("512", "64"))
    heard = served_audio(model, [SimpleNamespace(path=r["audio"]) for r in rows])["transcripts"]
    texts = ["a red ball", "the cat sings"]
    expected = cascade_metrics(model, heard, minilm(model, texts), np.array([0, 0, 1]))
    assert found["cascade"] == expected
    assert found["heard"] == sum(bool(t.strip()) for t in heard)

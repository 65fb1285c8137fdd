"""Spoken-sentence builder: sentence extraction, disjoint splits, real espeak-ng WAVs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from model.training.spoken import (
    SAMPLE_RATE,
    SpeechParams,
    build_spoken_dataset,
    extract_sentences,
    normalise,
    read_source,
    sample_params,
    split_sentences,
)


def test_extract_sentences_keeps_clean_single_sentences() -> None:
    text = (
        "The cat sat on the mat. It was happy!\n"
        "Short one.  Is this a question we can keep?\n\n"
        "A line with a <tag> and non-ascii caf\u00e9 is dropped.\n"
        "lowercase start is not a sentence here.\n\n"
        "A very " + "long " * 30 + "sentence.\n"
    )
    assert extract_sentences(text) == [
        "The cat sat on the mat.",
        "Is this a question we can keep?",
    ]


def test_fortune_file_and_plain_text_sources(tmp_path: Path) -> None:
    fortunes = tmp_path / "wisdom"
    fortunes.write_text(
        "Never trust a computer you cannot lift.\n\t\t-- Stan Mazor\n%\n"
        "Never trust a computer you cannot lift.\n%\nThe best way out is always through.\n%\n"
    )
    (tmp_path / "wisdom.dat").write_bytes(b"\0")
    assert read_source(fortunes) == [
        "Never trust a computer you cannot lift.",
        "The best way out is always through.",
    ]
    assert read_source(tmp_path) == read_source(fortunes)
    plain = tmp_path / "book.txt"
    plain.write_text("Call me Ishmael some years ago. Never mind how long precisely.\n")
    assert read_source(plain) == [
        "Call me Ishmael some years ago.",
        "Never mind how long precisely.",
    ]
    with pytest.raises(FileNotFoundError):
        read_source(tmp_path / "absent")


def test_splits_are_disjoint_and_test_comes_from_its_own_source() -> None:
    train_pool = [f"Training sentence number {i} is here." for i in range(20)]
    train_pool.append("Shared sentence in both sources.")
    test_pool = ["Shared sentence in both sources!", "A test sentence from elsewhere."]
    splits = split_sentences(train_pool, test_pool, n_train=None, n_val=3, n_test=2, seed=1)
    keys = {k: {normalise(s) for s in v} for k, v in splits.items()}
    assert len(splits["val"]) == 3 and len(splits["train"]) == 17
    assert not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert not keys["train"] & keys["val"]
    assert set(splits["test"]) == set(test_pool)
    with pytest.raises(ValueError, match="asked for 5 test sentences"):
        split_sentences(train_pool, test_pool, n_train=None, n_val=1, n_test=5, seed=0)


def test_sample_params_vary() -> None:
    rng = random.Random(0)
    params = [sample_params(rng) for _ in range(50)]
    assert len({p.voice for p in params}) > 10
    assert len({p.speed for p in params}) > 10
    assert any(p.noise_snr_db is not None for p in params)
    assert SpeechParams("en-us+f3", 150, 40).espeak_args() == [
        "-v",
        "en-us+f3",
        "-s",
        "150",
        "-p",
        "40",
    ]


def test_build_writes_16k_wavs_and_manifests(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    train_src = tmp_path / "train.txt"
    train_src.write_text(
        "The quick brown fox jumps over the dog. A stitch in time saves nine. "
        "Every cloud has a silver lining today."
    )
    test_src = tmp_path / "test.txt"
    test_src.write_text("Speech synthesis makes a test set here.")
    out = tmp_path / "spoken"
    summary = build_spoken_dataset(
        out,
        train_sources=[train_src],
        test_sources=[test_src],
        n_val=1,
        n_test=1,
        train_variants=2,
        seed=0,
        workers=1,
        progress=False,
    )
    assert summary["sentences"] == {"train": 2, "val": 1, "test": 1}
    assert summary["clips"] == {"train": 4, "val": 1, "test": 1} and summary["failed"] == 0
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in train] == [0, 0, 1, 1]
    assert (
        train[0]["text"] == train[2]["text"] and train[0]["sentence_id"] == train[2]["sentence_id"]
    )
    test = json.loads((out / "test.jsonl").read_text())
    assert test["text"] == "Speech synthesis makes a test set here."
    for record in [*train, test]:
        info = sf.info(out / record["audio"])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert 0.5 < info.duration < 10 and info.duration == pytest.approx(
            record["duration_s"], abs=1e-3
        )
        assert set(record) >= {"voice", "speed", "pitch", "noise_snr_db"}

"""Spoken-sentence builder: sentence extraction, disjoint splits, real espeak-ng WAVs."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from model.training.spoken import (
    HELD_OUT_VOICES,
    SAMPLE_RATE,
    TRAIN_VOICES,
    SourceSpec,
    SpeechParams,
    SpokenSpec,
    build_spoken_dataset,
    extract_sentences,
    normalise,
    read_pool,
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
    splits = split_sentences(
        train_pool, {"other": test_pool}, n_train=None, n_val=3, n_test=2, seed=1
    )
    keys = {k: {normalise(s) for s in v} for k, v in splits.items()}
    assert len(splits["val"]) == 3 and len(splits["train"]) == 17
    assert not keys["train"] & keys["test-other"] and not keys["val"] & keys["test-other"]
    assert not keys["train"] & keys["val"]
    assert set(splits["test-other"]) == set(test_pool)
    with pytest.raises(ValueError, match="asked for 5 test sentences, test set 'other'"):
        split_sentences(train_pool, {"other": test_pool}, n_train=None, n_val=1, n_test=5, seed=0)


def test_a_test_sentence_inside_a_longer_training_sentence_is_dropped() -> None:
    test = ["She choked with emotion when she spoke."]
    train = [
        "Then she choked with emotion when she spoke about it, and left.",
        "An unrelated sentence about the weather today.",
        "Another sentence that shares only choked with emotion.",
    ]
    splits = split_sentences(train, {"wn": test}, n_train=None, n_val=0, n_test=1, seed=0)
    assert sorted(splits["train"]) == sorted(train[1:])


def test_two_test_sets_are_drawn_from_their_own_pools() -> None:
    pools = {
        "a": [f"Alpha source sentence {i} here." for i in range(5)],
        "b": [f"Beta source sentence {i} here." for i in range(5)],
    }
    train = [f"Training text line {i} is fine." for i in range(10)]
    splits = split_sentences(train, pools, n_train=4, n_val=2, n_test=3, seed=0)
    assert set(splits) == {"test-a", "test-b", "val", "train"}
    assert all(s.startswith("Alpha") for s in splits["test-a"])
    assert all(s.startswith("Beta") for s in splits["test-b"])
    assert len(splits["train"]) == 4 and len(splits["val"]) == 2


def test_held_out_voices_share_nothing_with_training_voices() -> None:
    assert not set(TRAIN_VOICES.languages) & set(HELD_OUT_VOICES.languages)
    assert not set(TRAIN_VOICES.variants) & set(HELD_OUT_VOICES.variants)
    for train, held in (
        (TRAIN_VOICES.speeds, HELD_OUT_VOICES.speeds),
        (TRAIN_VOICES.pitches, HELD_OUT_VOICES.pitches),
    ):
        assert all(v < min(train) or v > max(train) for v in held)
        assert any(v < min(train) for v in held) and any(v > max(train) for v in held)
    rng = random.Random(0)
    held = [sample_params(rng, HELD_OUT_VOICES) for _ in range(50)]
    assert all(p.voice.split("+")[0] in HELD_OUT_VOICES.languages for p in held)
    assert all(p.speed in HELD_OUT_VOICES.speeds for p in held)


def test_every_voice_and_variant_is_installed() -> None:
    """espeak-ng falls back to its default voice, silently, on an unknown name."""
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")

    def names(kind: str, column: int) -> set[str]:
        out = subprocess.run(
            ["espeak-ng", f"--voices={kind}"], capture_output=True, text=True, check=True
        ).stdout
        return {line.split()[column].split("/")[-1] for line in out.splitlines()[1:]}

    languages = names("en", 1)
    variants = names("variant", 4)
    for pool in (TRAIN_VOICES, HELD_OUT_VOICES):
        assert set(pool.languages) <= languages, set(pool.languages) - languages
        assert set(pool.variants) - {""} <= variants, set(pool.variants) - {""} - variants


def test_wordnet_examples_and_sampled_sources(tmp_path: Path) -> None:
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    (wordnet / "data.verb").write_text(
        "  1 This is a licence header line\n"
        "00002724 29 v 01 choke 0 002 @ 00001740 v 0000 | breathe with great difficulty; "
        '"she choked with emotion when she spoke"; "he choked"  \n'
        "00002942 29 v 01 hyperventilate 0 003 | breathe hard; "
        '"The mountain climber started to hyperventilate"  \n'
    )
    assert read_source(wordnet) == [
        "She choked with emotion when she spoke.",
        "The mountain climber started to hyperventilate.",
    ]
    text = tmp_path / "many.txt"
    text.write_text(" ".join(f"Sentence number {i} is plain." for i in range(30)))
    sampled = read_pool([f"{text}@7"], seed=3)
    assert len(sampled) == 7 and set(sampled) <= set(read_source(text))
    assert read_pool([f"{text}@7"], seed=3) == sampled


def test_a_word_range_shifts_a_sources_length_mix(tmp_path: Path) -> None:
    text = tmp_path / "mixed.txt"
    names = ["red", "blue", "green", "black", "white", "grey", "brown", "pink", "gold", "tan"]
    short = [f"The {name} cat sat." for name in names]
    long = [f"The long sentence about the {name} cat goes on." for name in names]
    text.write_text(" ".join(short + long))
    assert read_pool([f"{text}@:4-5"], seed=0) == short
    picked = read_pool([f"{text}@4:4-5"], seed=1)
    assert len(picked) == 4 and set(picked) <= set(short)
    assert read_pool([f"{text}@:9-9"], seed=0) == long
    assert SourceSpec.parse("a/b.dict.dz@20000:4-6") == SourceSpec("a/b.dict.dz", 20000, (4, 6))
    # A name that merely contains @ stays a path.
    assert SourceSpec.parse("me@host/notes.txt") == SourceSpec("me@host/notes.txt")


def test_a_bad_word_range_says_what_is_wrong(tmp_path: Path) -> None:
    text = tmp_path / "plain.txt"
    text.write_text("The cat one sat. The dog two sat down.")
    with pytest.raises(ValueError, match="must be A-B with 1 <= A <= B"):
        SourceSpec.parse(f"{text}@:6-4")
    with pytest.raises(ValueError, match="no sentence of 20 to 30 words"):
        read_pool([f"{text}@:20-30"], seed=0)


def test_gcide_source_drops_wordnet_entries_and_markup(tmp_path: Path) -> None:
    import gzip

    gcide = tmp_path / "gcide.dict.dz"
    with gzip.open(gcide, "wt") as fh:
        fh.write(
            'Coagulate \\Co*ag"u*late\\, v. t.\n'
            "   To cause a liquid to change into a curdlike state; as, rennet\n"
            "   coagulates milk. --Boyle.\n"
            "   [1913 Webster]\n\n"
            "Choke \\Choke\\, v.\n"
            "   Breathe with great difficulty as when experiencing emotion.\n"
            "   [WordNet 1.5]\n\n"
        )
    assert read_source(gcide) == [
        "To cause a liquid to change into a curdlike state; as, rennet coagulates milk."
    ]


def test_sample_params_vary() -> None:
    rng = random.Random(0)
    params = [sample_params(rng, TRAIN_VOICES) for _ in range(50)]
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
    spec = SpokenSpec(
        train_sources=(str(train_src),),
        test_sets={"held": (str(test_src),)},
        n_val=1,
        n_test=1,
        train_variants=2,
    )
    summary = build_spoken_dataset(out, spec, workers=1, progress=False)
    assert summary["sentences"] == {"train": 2, "val": 1, "test-held": 1}
    assert summary["clips"] == {"train": 4, "val": 1, "test-held": 1} and summary["failed"] == 0
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in train] == [0, 0, 1, 1]
    assert (
        train[0]["text"] == train[2]["text"] and train[0]["sentence_id"] == train[2]["sentence_id"]
    )
    test = json.loads((out / "test-held.jsonl").read_text())
    assert test["voice"].split("+")[0] in HELD_OUT_VOICES.languages
    val = json.loads((out / "val.jsonl").read_text())
    assert val["voice"].split("+")[0] in TRAIN_VOICES.languages
    assert test["text"] == "Speech synthesis makes a test set here."
    for record in [*train, test]:
        info = sf.info(out / record["audio"])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert 0.5 < info.duration < 10 and info.duration == pytest.approx(
            record["duration_s"], abs=1e-3
        )
        assert set(record) >= {"voice", "speed", "pitch", "noise_snr_db"}


def test_a_build_of_the_test_sets_alone_gives_the_same_clips(tmp_path: Path) -> None:
    """What checking a release rests on: its test clips without its training clips."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    (tmp_path / "train.txt").write_text(
        "The quick brown fox jumps over the dog. A stitch in time saves nine today. "
        "Every cloud has a silver lining somewhere."
    )
    (tmp_path / "a.txt").write_text("Speech synthesis makes a test set here. Rain falls.")
    (tmp_path / "b.txt").write_text("Bright lights fill the city at night.")
    spec = SpokenSpec(
        train_sources=(str(tmp_path / "train.txt"),),
        test_sets={"a": (str(tmp_path / "a.txt"),), "b": (str(tmp_path / "b.txt"),)},
        n_val=1,
        n_test=1,
        noise_prob=1.0,  # noise drawn per clip: the same only if each job keeps its seed
    )
    whole, part = tmp_path / "whole", tmp_path / "part"
    build_spoken_dataset(whole, spec, workers=1, progress=False)
    summary = build_spoken_dataset(
        part, spec, workers=1, progress=False, only=lambda split: split.startswith("test-")
    )
    assert summary["clips"] == {"test-a": 1, "test-b": 1}
    assert summary["sentences"] == {"test-a": 1, "test-b": 1}
    assert sorted(p.name for p in part.iterdir()) == ["audio", "test-a.jsonl", "test-b.jsonl"]
    assert sorted(p.name for p in (part / "audio").iterdir()) == ["test-a", "test-b"]
    for name in ("test-a.jsonl", "test-b.jsonl"):
        assert (part / name).read_text() == (whole / name).read_text()
        (record,) = map(json.loads, (part / name).read_text().splitlines())
        assert (part / record["audio"]).read_bytes() == (whole / record["audio"]).read_bytes()
    assert (whole / "summary.json").is_file()


def test_a_changed_plan_speaks_stale_clips_again(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    (tmp_path / "train.txt").write_text(
        "The quick brown fox jumps over the dog. A stitch in time saves nine today."
    )
    (tmp_path / "test.txt").write_text("Speech synthesis makes a test set here.")
    spec = SpokenSpec(
        train_sources=(str(tmp_path / "train.txt"),),
        test_sets={"held": (str(tmp_path / "test.txt"),)},
        n_val=0,
        n_test=1,
        train_variants=1,
    )
    out = tmp_path / "spoken"
    build_spoken_dataset(out, spec, workers=1, progress=False)
    first = {r["audio"]: r for r in map(json.loads, (out / "train.jsonl").read_text().splitlines())}
    stamps = {a: (out / a).stat().st_mtime_ns for a in first}
    build_spoken_dataset(out, spec, workers=1, progress=False)
    assert {a: (out / a).stat().st_mtime_ns for a in first} == stamps  # same plan: reused
    build_spoken_dataset(out, dataclasses.replace(spec, seed=1), workers=1, progress=False)
    second = {
        r["audio"]: r for r in map(json.loads, (out / "train.jsonl").read_text().splitlines())
    }
    for audio, record in second.items():
        if record["voice"] != first[audio]["voice"] or record["text"] != first[audio]["text"]:
            assert (out / audio).stat().st_mtime_ns != stamps[audio]


def test_test_sets_share_no_sentence_and_training_cannot_end_up_empty() -> None:
    both = "The same sentence is in both pools."
    pools = {"a": [both], "b": [both, "Only in the second pool, this one."]}
    train = [f"Training text line {i} is fine." for i in range(5)]
    splits = split_sentences(train, pools, n_train=None, n_val=1, n_test=1, seed=0)
    assert splits["test-a"] == [both] and splits["test-b"] == ["Only in the second pool, this one."]
    with pytest.raises(ValueError, match="asked for 1 test sentences, test set 'b' has 0"):
        split_sentences(train, {"a": [both], "b": [both]}, n_train=None, n_val=1, n_test=1, seed=0)
    with pytest.raises(ValueError, match="no training sentences left"):
        split_sentences(train, {"a": [both]}, n_train=None, n_val=5, n_test=1, seed=0)

"""Frozen-feature cache: only valid frames stored, cache hits, invalidation on key change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model.config import preset
from model.multimodal import MultimodalModel
from model.training.data import read_jsonl
from model.training.features import (
    FeatureCache,
    build_features,
    cache_key,
    cache_key_parts,
    cache_pairs,
    collate,
    text_feature_items,
)


@pytest.fixture(scope="module")
def tiny_audio_text() -> MultimodalModel:
    config = preset("tiny", modalities=("audio", "text"))
    audio = dataclasses.replace(config.encoders["audio"], audio_window="trimmed")
    return MultimodalModel(
        dataclasses.replace(config, encoders={**config.encoders, "audio": audio})
    )


def _manifest(tmp_path: Path) -> Path:
    rows = []
    for i, seconds in enumerate((0.5, 1.0)):
        t = np.arange(int(seconds * 16_000)) / 16_000
        sf.write(
            tmp_path / f"{i}.wav",
            (0.3 * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32),
            16_000,
        )
        rows.append({"audio": f"{i}.wav", "text": f"clip number {i}"})
    rows.append({"audio": "bad.wav", "text": "unreadable"})
    (tmp_path / "bad.wav").write_bytes(b"garbage")
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_caches_only_valid_frames_and_reports_unreadable_media(tmp_path, tiny_audio_text) -> None:
    data = read_jsonl(_manifest(tmp_path))
    skipped, timing = cache_pairs(tiny_audio_text, tmp_path / "cache", data.pairs, progress=False)
    assert timing["audio"]["items"] == 2 and timing["text"]["items"] == 3
    assert skipped.count == 1 and "m.jsonl:3: unreadable audio" in skipped.reasons[0]
    audio = FeatureCache.for_model(tmp_path / "cache", tiny_audio_text, "audio")
    lengths = sorted(audio.get(i).shape[0] for i in audio._index)
    assert lengths == [25, 50]  # one frame per 320 samples: 0.5 s and 1 s, not 1500
    feats = next(audio.get(i) for i in audio._index)
    assert feats.dtype == np.float16 and feats.shape[1] == 64

    # The cached tokens are what the encoder gives for that clip alone.
    clip, _ = sf.read(tmp_path / "0.wav", dtype="float32")
    direct = tiny_audio_text.encode("audio", tiny_audio_text.preprocess("audio", [clip]))
    cached = next(audio.get(i) for i in audio._index if audio.length(i) == 25)
    np.testing.assert_allclose(cached.astype(np.float32), direct.tokens[0].numpy(), atol=2e-2)


def test_second_build_is_a_cache_hit(tmp_path, tiny_audio_text) -> None:
    cache = FeatureCache.for_model(tmp_path, tiny_audio_text, "text")
    items = text_feature_items(["a red circle", "a blue square", "a red circle"])
    _, first = build_features(tiny_audio_text, cache, items, progress=False)
    assert first["items"] == 2 and len(cache) == 2
    _, second = build_features(tiny_audio_text, cache, items, progress=False)
    assert second["items"] == 0
    reopened = FeatureCache.for_model(tmp_path, tiny_audio_text, "text")
    assert len(reopened) == 2 and "text|a blue square" in reopened


def test_key_changes_with_encoder_and_preprocessing(tmp_path, tiny_audio_text) -> None:
    enc = tiny_audio_text.config.encoders["audio"]
    base = cache_key(cache_key_parts(enc, {"sampling_rate": 16_000}))
    full = cache_key(
        cache_key_parts(dataclasses.replace(enc, audio_window="full"), {"sampling_rate": 16_000})
    )
    other_seed = cache_key(
        cache_key_parts(dataclasses.replace(enc, seed=1), {"sampling_rate": 16_000})
    )
    other_prep = cache_key(cache_key_parts(enc, {"sampling_rate": 8_000}))
    assert len({base, full, other_seed, other_prep}) == 4

    cache = FeatureCache(tmp_path, "text", {"k": 1})
    cache.write_shard(["x"], [np.ones((3, 4))])
    assert "x" in FeatureCache(tmp_path, "text", {"k": 1})
    assert "x" not in FeatureCache(tmp_path, "text", {"k": 2})


def test_local_weight_files_are_part_of_the_key(tmp_path, tiny_audio_text) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    enc = dataclasses.replace(tiny_audio_text.config.encoders["text"], source=str(folder))
    before = cache_key(cache_key_parts(enc))
    (folder / "config.json").write_text('{"a": 2}')
    assert cache_key(cache_key_parts(enc)) != before


def test_collate_pads_and_masks() -> None:
    tokens, mask = collate([np.ones((2, 3), np.float16), torch.zeros(4, 3)])
    assert tokens.shape == (2, 4, 3) and tokens.dtype == torch.float32
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert tokens[0, 2:].abs().sum() == 0


def test_one_folder_spelt_two_ways_is_one_key(tmp_path, tiny_audio_text, monkeypatch) -> None:
    folder = tmp_path / "models" / "weights"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    enc = tiny_audio_text.config.encoders["text"]
    absolute = cache_key(cache_key_parts(dataclasses.replace(enc, source=str(folder))))
    relative = cache_key(cache_key_parts(dataclasses.replace(enc, source="../models/weights")))
    assert absolute == relative
    other = tmp_path / "models" / "other"
    other.mkdir()
    (other / "config.json").write_text('{"a": 1}')
    assert cache_key(cache_key_parts(dataclasses.replace(enc, source=str(other)))) != absolute


def test_one_progress_bar_per_modality_and_none_when_all_cached(
    tmp_path, tiny_audio_text, capsys
) -> None:
    data = read_jsonl(_manifest(tmp_path))
    cache_pairs(tiny_audio_text, tmp_path / "cache", data.pairs, chunk=1, progress=True)
    first = capsys.readouterr().err
    # Three clips in chunks of one show a single bar that ends at 3/3 (the
    # unreadable third clip counts as done and is reported as skipped).
    audio_bars = {
        line.split("|")[-1].split()[0] for line in first.split("\r") if "audio features" in line
    }
    assert "3/3" in audio_bars and not any(b.endswith("/1") for b in audio_bars)
    assert "text features" in first

    # Everything readable is cached now: no text bar, and the audio bar counts
    # only the unreadable clip, which is tried again.
    cache_pairs(tiny_audio_text, tmp_path / "cache", data.pairs, chunk=1, progress=True)
    second = capsys.readouterr().err
    assert "text features" not in second and "audio features: 100%" in second
    assert "1/1" in second and "/3" not in second

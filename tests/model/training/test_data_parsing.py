"""Pair datasets: JSONL, COCO captions and AudioCaps CSV; errors name the file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from model.training.data import (
    DataError,
    load_audio,
    load_image,
    read_audiocaps_csv,
    read_coco_captions,
    read_dataset,
    read_jsonl,
)


def _wav(path: Path, seconds: float = 0.2, rate: int = 22_050) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def _png(path: Path) -> Path:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return path


def test_jsonl_reads_pairs_and_reports_each_bad_line(tmp_path: Path, caplog) -> None:
    _wav(tmp_path / "a.wav")
    _png(tmp_path / "b.png")
    lines = [
        json.dumps({"audio": "a.wav", "text": "a tone", "sentence_id": 3}),
        json.dumps({"image": "b.png", "text": " a red square "}),
        "{not json",
        json.dumps({"audio": "missing.wav", "text": "gone"}),
        json.dumps({"audio": "a.wav", "text": "   "}),
        json.dumps({"audio": "a.wav"}),
        json.dumps({"audio": "a.wav", "image": "b.png", "text": "both"}),
        "",
        json.dumps(["a list"]),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        data = read_jsonl(manifest)
    assert [(p.modality, p.text) for p in data] == [("audio", "a tone"), ("image", "a red square")]
    assert data[0].group == "3" and data[0].path == tmp_path / "a.wav"
    assert data[0].origin == f"{manifest}:1"
    reasons = data.skipped.reasons
    assert data.skipped.count == 6
    assert reasons[0].startswith(f"{manifest}:3: invalid JSON")
    assert reasons[1] == f"{manifest}:4: missing file {tmp_path / 'missing.wav'}"
    assert reasons[2] == f"{manifest}:5: empty caption"
    assert reasons[3] == f"{manifest}:6: no 'text' field"
    assert reasons[4].startswith(f"{manifest}:7: needs exactly one of 'image' or 'audio'")
    assert reasons[5].startswith(f"{manifest}:9: expected a JSON object")
    assert "6 samples skipped" in data.skipped.summary()
    assert f"{manifest}:4" in caplog.text


def test_missing_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_coco_captions(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    _png(tmp_path / "img" / "1.png")
    ann = tmp_path / "captions.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}],
                "annotations": [
                    {"id": 10, "image_id": 1, "caption": "a red square"},
                    {"id": 11, "image_id": 1, "caption": "red box"},
                    {"id": 12, "image_id": 1, "caption": ""},
                    {"id": 13, "image_id": 2, "caption": "no file"},
                    {"id": 14, "image_id": 9, "caption": "unknown image"},
                ],
            }
        )
    )
    data = read_coco_captions(ann, tmp_path / "img")
    assert [p.text for p in data] == ["a red square", "red box"]
    assert {p.group for p in data} == {"1"}
    assert data.skipped.reasons == [
        f"{ann}:annotations[2]: empty caption",
        f"{ann}:annotations[3]: missing file {tmp_path / 'img' / '2.png'}",
        f"{ann}:annotations[4]: unknown image_id 9",
    ]


def test_coco_not_coco(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"foo": 1}')
    with pytest.raises(DataError, match="not COCO captions"):
        read_coco_captions(bad, tmp_path)


def test_audiocaps_csv_finds_files_by_id_and_reports_rows(tmp_path: Path) -> None:
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    _wav(wavs / "101.wav")
    _wav(wavs / "yt2_30.wav")
    table = tmp_path / "train.csv"
    table.write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "101,yt1,0,A dog barks\n"
        "102,yt2,30,Rain falls\n"
        "103,yt3,0,Missing clip\n"
        "104,yt4,0,\n"
    )
    data = read_audiocaps_csv(table, wavs)
    assert [(p.path.name, p.text) for p in data] == [
        ("101.wav", "A dog barks"),
        ("yt2_30.wav", "Rain falls"),
    ]
    assert data.skipped.reasons == [
        f"{table}:4: missing file {wavs / '103.wav'}",
        f"{table}:5: empty caption",
    ]


def test_audiocaps_needs_caption_column(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"t.csv:1: header needs a 'caption' column"):
        read_audiocaps_csv(table, tmp_path)


def test_dataset_spec_mixture(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    _png(tmp_path / "b.png")
    (tmp_path / "a.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "t"}) + "\n")
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "b.png"}],
                "annotations": [{"image_id": 1, "caption": "c"}],
            }
        )
    )
    data = read_dataset(f"{tmp_path / 'a.jsonl'}+coco:{tmp_path / 'c.json'}:{tmp_path}")
    assert data.modalities() == ("audio", "image")
    with pytest.raises(DataError, match="expected coco:ANNOTATIONS.json:IMAGE_DIR"):
        read_dataset("coco:only.json")


def test_unreadable_media_name_their_origin(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(DataError, match=r"m.jsonl:4: unreadable audio"):
        load_audio(junk, "m.jsonl:4")
    with pytest.raises(DataError, match=r"m.jsonl:5: unreadable image"):
        load_image(junk, "m.jsonl:5")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(DataError, match="empty audio"):
        load_audio(empty, "x")


def test_audio_is_resampled_to_16k_mono(tmp_path: Path) -> None:
    audio = load_audio(_wav(tmp_path / "a.wav", seconds=0.5, rate=22_050))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == pytest.approx(8000, abs=2)

"""The encoder-runtime benchmark's R@1-on-a-checkpoint path, on a tiny checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.checkpoint import save_checkpoint
from model.config import PRESETS
from model.multimodal import MultimodalModel
from model.training.encoder_benchmark import checkpoint_r1, main


def _tiny_test_set(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny checkpoint and a manifest of six spoken-test rows (tones, 1 s each)."""
    folder = save_checkpoint(MultimodalModel(PRESETS["tiny"]), tmp_path / "ckpt")
    manifest = tmp_path / "test.jsonl"
    with manifest.open("w") as fh:
        for i, freq in enumerate((220.0, 330.0, 440.0, 550.0, 660.0, 770.0)):
            t = np.arange(16_000) / 16_000
            sf.write(tmp_path / f"{i}.wav", 0.3 * np.sin(2 * np.pi * freq * t), 16_000)
            fh.write(json.dumps({"audio": f"{i}.wav", "text": f"a tone number {i}"}) + "\n")
    return folder, manifest


def test_checkpoint_r1_reports_both_directions_per_option(tmp_path: Path) -> None:
    folder, manifest = _tiny_test_set(tmp_path)
    rows = checkpoint_r1(folder, manifest, options=(), threads=1, limit=6)
    assert len(rows) == 1
    match = re.fullmatch(r"\| torch +\| +([\d.]+) \| +([\d.]+) \| ([\d.]+) \|", rows[0])
    assert match and all(0.0 <= float(v) <= 100.0 for v in match.groups()[:2])
    assert 0.0 <= float(match.group(3)) < 1.0  # a random text tower moves neighbourhoods
    # A locked text tower keeps the text encoder's own (k = 2 of the 6 captions here).
    locked = MultimodalModel(PRESETS["tiny"].with_overrides({"text_tower": "locked"}))
    save_checkpoint(locked, tmp_path / "locked")
    (row,) = checkpoint_r1(tmp_path / "locked", manifest, options=(), threads=1, limit=6)
    assert row.endswith("| 1.000 |")


def test_r1_only_command_compares_the_onnx_runtimes(tmp_path: Path, capsys) -> None:
    # The command the lead runs on the release, on a tiny checkpoint: R@1 only, no
    # speed or fidelity tables (which would need the real encoders).
    folder, manifest = _tiny_test_set(tmp_path)
    argv = ["--r1-only", "--checkpoint", str(folder), "--test", str(manifest)]
    main([*argv, "--options", "onnx,onnx-int8", "--threads", "1", "--models-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Speed" not in out and "Fidelity" not in out
    rows = re.findall(
        r"^\| (torch|onnx|onnx-int8) +\| +([\d.]+) \| +([\d.]+) \| ([\d.]+) \|$", out, re.M
    )
    assert [r[0] for r in rows] == ["torch", "onnx", "onnx-int8"]
    # Three distinct tones and captions: float32 ONNX ranks exactly as PyTorch does.
    assert rows[1][1:] == rows[0][1:]


def test_an_option_for_the_text_encoder_only_leaves_the_audio_encoder_in_torch(
    tmp_path: Path, capsys
) -> None:
    folder, manifest = _tiny_test_set(tmp_path)
    argv = ["--r1-only", "--checkpoint", str(folder), "--test", str(manifest), "--threads", "1"]
    main([*argv, "--options", "text:onnx", "--models-dir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = re.findall(
        r"^\| (torch|text:onnx) +\| +([\d.]+) \| +([\d.]+) \| ([\d.]+) \|$", out, re.M
    )
    assert [r[0] for r in rows] == ["torch", "text:onnx"]
    assert rows[1][1:] == rows[0][1:]
    for bad in ("image:onnx", "text:fast"):
        with pytest.raises(SystemExit):
            main([*argv, "--options", bad])
        assert f"unknown option {bad!r}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--options", "text:onnx"])
    assert "needs --r1-only" in capsys.readouterr().err


def test_r1_only_needs_a_checkpoint(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--r1-only"])
    assert "--r1-only needs --checkpoint and --test" in capsys.readouterr().err

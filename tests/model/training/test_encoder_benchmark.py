"""The encoder-runtime benchmark's R@1-on-a-checkpoint path, on a tiny checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from model.checkpoint import save_checkpoint
from model.config import PRESETS
from model.multimodal import MultimodalModel
from model.training.encoder_benchmark import checkpoint_r1


def test_checkpoint_r1_reports_both_directions_per_option(tmp_path: Path) -> None:
    folder = save_checkpoint(MultimodalModel(PRESETS["tiny"]), tmp_path / "ckpt")
    manifest = tmp_path / "test.jsonl"
    with manifest.open("w") as fh:
        for i, freq in enumerate((220.0, 330.0, 440.0)):
            t = np.arange(16_000) / 16_000
            sf.write(tmp_path / f"{i}.wav", 0.3 * np.sin(2 * np.pi * freq * t), 16_000)
            fh.write(json.dumps({"audio": f"{i}.wav", "text": f"a tone number {i}"}) + "\n")
    rows = checkpoint_r1(folder, manifest, options=(), threads=1, limit=3)
    assert len(rows) == 1
    match = re.fullmatch(r"\| torch +\| +([\d.]+) \| +([\d.]+) \|", rows[0])
    assert match and all(0.0 <= float(v) <= 100.0 for v in match.groups())

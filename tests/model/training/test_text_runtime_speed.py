"""The int8-against-float32 text speed benchmark, on a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

from model.checkpoint import save_checkpoint
from model.config import PRESETS
from model.multimodal import MultimodalModel
from model.training.text_runtime_speed import text_rates


def test_text_rates_time_both_runtimes_of_one_checkpoint(tmp_path: Path) -> None:
    folder = save_checkpoint(MultimodalModel(PRESETS["tiny"]), tmp_path / "tiny")
    rates = text_rates(folder, ["a short sentence", "another one here"] * 4, threads=1, rounds=2)
    assert set(rates) == {"onnx", "onnx-int8"}
    assert all(rate > 0 for rate in rates.values())

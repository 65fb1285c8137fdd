"""The training-step benchmark runs each resampler size in both precisions."""

from __future__ import annotations

import re

import pytest

from model.config import preset
from model.multimodal import MultimodalModel
from model.training import step_speed
from model.training.step_speed import SIZES, _without_encoders, main

SMALL = {"perceiver": {"dim": 64, "num_latents": 4, "depth": 1, "ff_mult": 1}}


def test_each_size_is_timed_in_float32_and_bfloat16(capsys, monkeypatch) -> None:
    # Two small sizes stand in for the real ones: on a CPU without bfloat16 units (AVX2
    # only) the design size's emulated bfloat16 step takes about 13 s even at batch 2.
    sizes = {"small": SMALL, "two layers": {"perceiver": {**SMALL["perceiver"], "depth": 2}}}
    monkeypatch.setattr(step_speed, "SIZES", sizes)
    assert main(["--threads", "1", "--batch", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("threads 1, batch 2 clips + 2 texts")
    rows = [line for line in out.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == ["| small", "| two layers"]
    for row in rows:
        # seconds per step in each precision, then their ratio (rounded, so only > 0)
        numbers = [float(x) for x in re.findall(r"\d+\.\d+", row)[-3:]]
        assert len(numbers) == 3 and all(n > 0 for n in numbers), row


@pytest.mark.parametrize(
    ("name", "latents", "dim", "depth"),
    [
        ("cut-down (16 x 256, 2 layers; the releases')", 16, 256, 2),
        ("design (64 x 512, 4 layers)", 64, 512, 4),
    ],
)
def test_the_sizes_are_the_ones_they_are_named(name, latents, dim, depth) -> None:
    config = preset("base", modalities=("audio", "text")).with_overrides(SIZES[name])
    model = MultimodalModel(_without_encoders(config))
    assert tuple(model.resampler.latents.shape) == (latents, dim)
    assert len(model.resampler.layers) == depth

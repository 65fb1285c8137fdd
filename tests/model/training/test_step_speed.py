"""The training-step benchmark runs both resampler sizes in both precisions."""

from __future__ import annotations

import re

from model.training.step_speed import main


def test_both_sizes_are_timed_in_float32_and_bfloat16(capsys) -> None:
    assert main(["--threads", "1", "--batch", "2", "--steps", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| cut-down (16 x 256, 2 layers; the releases')",
        "| design (64 x 512, 4 layers)",
    ]
    for row in rows:
        # seconds per step in each precision, then their ratio (rounded, so only > 0)
        numbers = [float(x) for x in re.findall(r"\d+\.\d+", row)[-3:]]
        assert len(numbers) == 3 and all(n > 0 for n in numbers), row

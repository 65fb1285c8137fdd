"""service/describe_benchmark.py prints a describe's latency and memory (tiny model and
tiny language model here; the figures for the real ones are in docs/benchmarks.md)."""

from __future__ import annotations

import re

from service.describe_benchmark import main


def test_the_benchmark_prints_latency_and_memory(describing_checkpoint, tiny_llm_dir, capsys):
    assert (
        main(
            [
                "--checkpoint",
                str(describing_checkpoint),
                "--llm",
                str(tiny_llm_dir),
                "--seconds",
                "2",
                "--runs",
                "2",
                "--max-tokens",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"\| describe p50 \| \d+\.\d\d s \|", out)
    assert "| with /describe off | +0 MiB |" in out
    assert re.search(r"\| tokens written \| [0-4] \|", out)

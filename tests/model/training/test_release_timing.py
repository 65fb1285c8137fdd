"""The speed scripts' shared timing (model/training/release_timing.py)."""

from __future__ import annotations

import time

from model.training.release_timing import median_seconds


def test_runs_warm_up_then_are_timed_in_turn_by_their_median() -> None:
    order: list[str] = []

    def run(name: str, seconds: float):
        def timed() -> None:
            order.append(name)
            time.sleep(seconds)

        return timed

    fast, slow = median_seconds([run("fast", 0.0), run("slow", 0.02)], repeats=3)
    assert order == ["fast", "slow"] * 4  # one warm-up round, then three timed rounds
    assert fast < 0.01 <= 0.02 <= slow < 0.5

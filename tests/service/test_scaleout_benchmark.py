"""The scale-out benchmark runs end to end: two pinned replicas on one PostgreSQL, wrk load."""

from __future__ import annotations

import pytest

from service.scaleout_benchmark import main


@pytest.mark.slow
def test_two_replicas_on_one_database_are_measured_and_printed(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results = main(
        ["--model", "tiny", "--seconds", "2", "--concurrency", "2", "--url", postgres_url]
    )
    assert set(results) == {("add", 1), ("embed", 1), ("add", 2), ("embed", 2)}
    for result in results.values():
        assert result["rps"] > 1 and result["errors"] == 0
        assert 0 < result["p50"] <= result["p99"]
    table = capsys.readouterr().out
    assert "replicas pinned to cores [0, 1] (taskset), 1 torch thread each, model tiny" in table
    ratio = results[("embed", 2)]["rps"] / results[("embed", 1)]["rps"]
    assert f"| embed | 2 | {results[('embed', 2)]['rps']:.1f} |" in table
    assert f"| {ratio:.2f}x |" in table

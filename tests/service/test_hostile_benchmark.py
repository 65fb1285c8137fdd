"""Issue 29, "under `wrk` search load with a bad request every 100 ms: 0 failed good
requests": `service.hostile_benchmark` run for real (its own `mmembed serve --preset
tiny`, wrk, the bad-request sender) for a few seconds, and its Lua status counting
checked against answers known to fail."""

from __future__ import annotations

import json
import shutil

from service.benchmark import parse_wrk_result, run_wrk
from service.hostile_benchmark import LUA, bad_requests, main


def _wrk() -> None:
    assert shutil.which("wrk"), "wrk is missing: apt-get install wrk (in .ci/run's apt list)"


def test_searches_under_a_bad_request_every_100ms_all_succeed(tmp_path, capsys):
    _wrk()
    out = tmp_path / "report.json"
    argv = ["--duration", "3", "--connections", "2", "--torch-threads", "1", "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().out
    report = json.loads(out.read_text())
    good, bad = report["good"], report["bad"]
    assert good["requests"] > 0 and good["non_2xx"] == 0 and good["socket_errors"] == 0, good
    assert set(good["statuses"]) == {"200"} and good["statuses"]["200"] == good["requests"]
    assert 0 < good["p50_ms"] <= good["p99_ms"], good
    # one every 100 ms for 3 s (ticks a loaded machine made late are skipped, not bunched)
    assert 20 <= bad["sent"] <= 30 and bad["answered"] == bad["sent"], bad
    assert bad["no_answer"] == 0, bad
    assert bad["not_4xx"] == 0 and all(s.startswith("4") for s in bad["statuses"]), bad
    assert set(bad["by_kind"]) == {kind for kind, *_ in bad_requests()}
    assert all(row["sent"] >= 1 for row in bad["by_kind"].values()), bad["by_kind"]
    assert report["server_5xx"] == 0 and report["ok"] is True
    assert "PASS" in capsys.readouterr().out


def test_the_lua_script_counts_every_non_2xx_answer(live_server):
    """The pass above means something only if a failed answer would be counted: here two
    of every three requests get 404 or 400, and the counts must say exactly that."""
    _wrk()
    paths = ["/search?q=red", "/no-such-route", "/search?q=red&k=0"]
    script = LUA % {"paths": ", ".join(json.dumps(p) for p in paths)}
    out = run_wrk(script, live_server.url + "/search", 1, "1s")
    result = parse_wrk_result(out, "mmembed", "/search", 1)
    statuses = {
        line.split()[1]: int(line.split()[2])
        for line in out.splitlines()
        if line.startswith("STATUS ")
    }
    assert result.errors == 0 and result.requests >= 3, out
    assert sum(statuses.values()) == result.requests, out
    assert set(statuses) <= {"200", "400", "404", "422"} and statuses.get("404"), out
    assert result.non_2xx == result.requests - statuses.get("200", 0), out
    # one client, paths in turn: a third succeed, give or take the last round
    assert abs(statuses["200"] - result.requests / 3) <= 1, out

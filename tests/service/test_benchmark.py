"""`service.benchmark`'s load generator: wrk with the Lua body script, against a real server.

Checks the plumbing (bodies accepted, results parsed, errors counted, in-process callers
running at once), never speed.
"""

from __future__ import annotations

import shutil
import threading

from service.benchmark import _embed_for, make_texts, request_bodies, settle, wrk_run


def _wrk() -> None:
    assert shutil.which("wrk"), "wrk is missing: apt-get install wrk (in .ci/run's apt list)"


def test_wrk_posts_every_route_body_and_reports_no_errors(live_server):
    _wrk()
    texts = make_texts(4)
    for route in ("/embed", "/v1/embeddings"):
        settle(live_server.url)
        result = wrk_run(
            "mmembed", live_server.url, route, request_bodies(route, texts, "m"), 2, "2s"
        )
        assert result.requests > 0 and result.seconds > 1.5, result
        assert result.errors == 0 and result.non_2xx == 0, result
        assert 0 < result.p50_ms <= result.p99_ms, result


def test_wrk_counts_refused_requests_as_non_2xx(live_server):
    _wrk()
    bodies = request_bodies("/embed", [""], "m")  # empty text: 400 every time
    result = wrk_run("mmembed", live_server.url, "/embed", bodies, 1, "1s")
    assert result.requests > 0 and result.non_2xx == result.requests and result.errors == 0


def test_inprocess_rate_runs_its_threads_at_once_on_whole_batches():
    batches: list[list[str]] = []
    both_in = threading.Barrier(2, timeout=10)

    calls = iter(range(1_000_000))  # next() on it is atomic: each call gets its number

    class Embedder:
        def embed_texts(self, texts: list[str]) -> None:
            if next(calls) < 2:
                both_in.wait()  # raises BrokenBarrierError unless two callers overlap
            batches.append(texts)

    texts = make_texts(8)
    rate = _embed_for(Embedder(), texts, 3, 0.2, threads=2)
    assert rate > 0 and len(batches) >= 2
    assert all(len(b) == 3 and set(b) <= set(texts) for b in batches)
    # The two callers start at different offsets: their first batches differ.
    assert batches[0] != batches[1]

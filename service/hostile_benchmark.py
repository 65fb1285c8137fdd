"""Failure isolation under load: `wrk` searches while a bad request arrives every 100 ms.

    python -m service.hostile_benchmark                       # tiny demo model, 20 s, 16 conns
    python -m service.hostile_benchmark --duration 3 --connections 2
    python -m service.hostile_benchmark --real                # the shipped release (or base
                                                              # preset), encoders from
                                                              # ../shared/models
    python -m service.hostile_benchmark --checkpoint PATH     # a trained checkpoint

It starts `mmembed serve` (`--preset tiny` unless told otherwise) as a real process
on a free 127.0.0.1 port with a temporary data folder, stores a few items, and
loads it with `wrk -t1 -cCONNECTIONS` sending good `GET /search?q=...` requests
(some with a valid `where=`) for `--duration` seconds. A Lua `response` hook counts
every answer that is not 2xx, exactly (wrk's own count skips 1xx and 3xx). Meanwhile
a sender thread issues one bad request every `--interval-ms` (100), cycling through
the malformed inputs of issue 29 (a lone surrogate, an integer past 2^63 in `where=`,
JSON nested 3,000 deep, 1,000 keys, a 5,000-digit `dimensions`, a corrupt PNG, a
garbage WAV, a NUL in a metadata key, ...), and records each answer's status, or
the transport error if the connection was reset instead.

The report (text, and JSON with `--json PATH`) gives the good requests wrk
completed, how many were not 2xx and how many socket errors wrk saw, wrk's
latency p50/p99, and the bad requests sent with their statuses per kind, plus the
server's own count of 5xx answers from `/metrics`. Exit status 1 if any good
request failed (non-2xx or socket error), any bad request got a 5xx or no answer,
or the server counted any 5xx; 0 otherwise. Everything is bounded: wrk stops after
`--duration`, the sender after as many ticks, each request has a 30 s timeout,
and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from service.benchmark import (
    make_texts,
    mmembed_server,
    parse_wrk_result,
    run_wrk,
    served_model_arguments,
    settings_env,
)

# A Lua script for wrk: GETs each path in turn, counts answers by status in the
# thread (`response`), and sums them over threads in `done`. The RESULT line has the
# layout `service.benchmark.parse_wrk_result` reads, its last field the exact
# non-2xx count; a STATUS line per status code follows.
LUA = """
local paths = {%(paths)s}
local i = 0
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
init = function(args)
  non2xx = 0
  statuses = {}
end
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  local e = summary.errors
  local n = 0
  local all = {}
  for _, t in ipairs(threads) do
    n = n + t:get("non2xx")
    for k, v in pairs(t:get("statuses")) do all[k] = (all[k] or 0) + v end
  end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, n))
  io.write(string.format("ERRORS %%d %%d %%d %%d %%d\\n", e.connect, e.read, e.write,
    e.timeout, e.status))
  for k, v in pairs(all) do io.write(string.format("STATUS %%s %%d\\n", k, v)) end
end
"""

N_ITEMS = 24


# Bad requests ------------------------------------------------------------------------------


def _corrupt_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    whole = buf.getvalue()
    return whole[: len(whole) // 2]  # header intact, pixel data cut off


JSON = {"content-type": "application/json"}
DEEP = "[" * 3000 + "]" * 3000
MANY_KEYS = "{" + ",".join(f'"k{i}": 1' for i in range(1000)) + "}"
GARBAGE_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40


def bad_requests() -> list[tuple[str, str, str, dict]]:
    """(kind, method, path, httpx arguments): each malformed in one way issue 29 names."""
    png = _corrupt_png()
    return [
        ("lone surrogate /embed", "POST", "/embed",
         {"content": '{"text": "x \\ud800"}', "headers": JSON}),
        ("int over 2^63-1 in where=", "GET", "/search",
         {"params": {"q": "red", "where": '{"a": 18446744073709551616}'}}),
        ("nested 3000 deep /items metadata", "POST", "/items",
         {"content": '{"text": "x", "metadata": {"a": DEEP}}'.replace("DEEP", DEEP), "headers": JSON}),
        ("5000-digit dimensions /v1/embeddings", "POST", "/v1/embeddings",
         {"content": '{"model": "m", "input": "hi", "dimensions": N}'.replace("N", "1" * 5000),
          "headers": JSON}),
        ("corrupt PNG /embed", "POST", "/embed",
         {"files": {"file": ("bad.png", png, "image/png")}}),
        ("NUL key in form metadata /items", "POST", "/items",
         {"data": {"text": "x", "metadata": '{"a\\u0000b": 1}'}}),
        ("1000 keys in where=", "GET", "/search", {"params": {"q": "red", "where": MANY_KEYS}}),
        ("lone surrogate in /embed/batch", "POST", "/embed/batch",
         {"content": '{"texts": ["good text", "x \\ud800"]}', "headers": JSON}),
        ("garbage WAV /embed", "POST", "/embed",
         {"files": {"file": ("bad.wav", GARBAGE_WAV, "audio/wav")}}),
        ("int under -2^63 /search body", "POST", "/search",
         {"content": '{"text": "red", "where": {"a": -9223372036854775809}}',
          "headers": JSON}),
        ("corrupt PNG among good texts /embed/batch", "POST", "/embed/batch",
         {"files": [("file", ("bad.png", png, "image/png"))], "data": {"text": ["a", "b"]}}),
    ]  # fmt: skip


@dataclass
class BadOutcome:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)  # "400", or a transport error's class
    errors: Counter = field(default_factory=Counter)  # the answers' `error.type`

    def failures(self) -> int:
        """Answers that were not 4xx: 5xx, other codes, or no answer at all."""
        return sum(n for s, n in self.statuses.items() if not (s.isdigit() and s[0] == "4"))


def send_bad_requests(
    url: str, seconds: float, interval: float, stop: threading.Event
) -> dict[str, BadOutcome]:
    """One bad request every `interval` s for `seconds` (at most seconds / interval of
    them), each kind in turn. Each is started on its tick by a small pool, so a slow
    answer does not lower the rate; a tick more than one interval late is skipped
    rather than sent in a burst."""
    kinds = bad_requests()
    outcomes = {kind: BadOutcome() for kind, *_ in kinds}
    lock = threading.Lock()

    def send(http: httpx.Client, kind: str, method: str, path: str, kwargs: dict) -> None:
        error = None
        try:
            response = http.request(method, path, **kwargs)
            status = str(response.status_code)
            try:
                error = response.json()["error"]["type"]
            except (ValueError, KeyError, TypeError):
                error = "(no JSON error body)"
        except httpx.TransportError as e:  # reset, closed, timed out: no answer
            status = type(e).__name__
        with lock:
            outcomes[kind].statuses[status] += 1
            if error is not None:
                outcomes[kind].errors[error] += 1

    ticks = int(seconds / interval)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    with (
        httpx.Client(base_url=url, timeout=30, limits=limits) as http,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        start = time.monotonic()
        for tick in range(ticks):
            due = start + tick * interval
            now = time.monotonic()
            if now - due > interval:
                continue  # late: skip, keep the rate
            if stop.wait(max(0.0, due - now)):
                break
            kind, method, path, kwargs = kinds[tick % len(kinds)]
            outcomes[kind].sent += 1
            pool.submit(send, http, kind, method, path, kwargs)
    return outcomes


# Good load --------------------------------------------------------------------------------


def good_paths(texts: list[str]) -> list[str]:
    """`/search?q=...` paths; every third with a valid `where=` on the seeded metadata."""
    paths = []
    for i, text in enumerate(texts):
        params = {"q": text, "k": 5}
        if i % 3 == 0:
            params["where"] = json.dumps({"group": i % 4})
        paths.append("/search?" + urlencode(params))
    return paths


def seed(url: str, texts: list[str]) -> None:
    items = [
        {"id": f"seed-{i}", "text": t, "metadata": {"group": i % 4}} for i, t in enumerate(texts)
    ]
    response = httpx.post(f"{url}/items/batch", json={"items": items}, timeout=120)
    if response.status_code >= 300:
        raise SystemExit(f"could not store the seed items: {response.status_code} {response.text}")


def server_5xx(url: str) -> int:
    """5xx answers the server counted (`mmembed_http_requests_total{status="5.."}`)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = re.compile(r'^mmembed_http_requests_total\{.*status="5\d\d".*\}\s+(\S+)$')
    return sum(int(float(m.group(1))) for m in map(pattern.match, text.splitlines()) if m)


# Main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.hostile_benchmark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--interval-ms", type=float, default=100.0, help="between bad requests")
    served_model_arguments(parser)
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration: more than 0 and at most 600 seconds")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections: 1 to 1000")
    if args.interval_ms < 10:
        parser.error("--interval-ms: at least 10")
    # What service.benchmark.settings_env reads, at the service's defaults.
    args.batch_size, args.max_wait_ms, args.batch_workers, args.runtime = 32, 5.0, None, None
    return args


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = settings_env(args)
    if not args.real and args.checkpoint is None:
        env.pop("MMEMBED_MODALITIES", None)  # the tiny model takes images and audio too
    return env


def run(args: argparse.Namespace) -> dict:
    texts = make_texts(N_ITEMS)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = mmembed_server(server_env(args), Path(tmp))
        with server:
            seed(url, texts)
            stop = threading.Event()
            bad: dict[str, BadOutcome] = {}

            def sender() -> None:
                bad.update(send_bad_requests(url, args.duration, args.interval_ms / 1000, stop))

            thread = threading.Thread(target=sender, name="bad-requests", daemon=True)
            thread.start()
            try:
                script = LUA % {"paths": ", ".join(json.dumps(p) for p in good_paths(texts))}
                out = run_wrk(script, url + "/search", args.connections, f"{args.duration:g}s")
            finally:
                stop.set()
                thread.join(timeout=60)
            if thread.is_alive():
                raise SystemExit("the bad-request sender did not stop")
            good = parse_wrk_result(out, "mmembed", "/search", args.connections)
            fivexx = server_5xx(url)
    connect, read, write, timeout, wrk_status = _line_ints(out, "ERRORS")
    good_statuses = {
        line.split()[1]: int(line.split()[2])
        for line in out.splitlines()
        if line.startswith("STATUS ")
    }
    bad_total = Counter()
    for outcome in bad.values():
        bad_total.update(outcome.statuses)
    report = {
        "duration_s": args.duration,
        "connections": args.connections,
        "interval_ms": args.interval_ms,
        "good": {
            "requests": good.requests,
            "seconds": round(good.seconds, 2),
            "non_2xx": good.non_2xx,
            "socket_errors": good.errors,
            "socket_errors_by_kind": {
                "connect": connect, "read": read, "write": write, "timeout": timeout,
            },
            "statuses": good_statuses,
            "p50_ms": round(good.p50_ms, 2),
            "p99_ms": round(good.p99_ms, 2),
        },
        "bad": {
            "sent": sum(o.sent for o in bad.values()),
            "answered": sum(n for s, n in bad_total.items() if s.isdigit()),
            "no_answer": sum(n for s, n in bad_total.items() if not s.isdigit()),
            "statuses": dict(bad_total),
            "not_4xx": sum(o.failures() for o in bad.values()),
            "by_kind": {
                k: {"sent": o.sent, "statuses": dict(o.statuses), "errors": dict(o.errors)}
                for k, o in bad.items()
            },
        },
        "server_5xx": fivexx,
    }  # fmt: skip
    report["ok"] = (
        good.requests > 0
        and good.non_2xx == 0
        and good.errors == 0
        and report["bad"]["sent"] > 0
        and report["bad"]["answered"] == report["bad"]["sent"]
        and report["bad"]["not_4xx"] == 0
        and fivexx == 0
    )
    return report


def _line_ints(out: str, tag: str) -> list[int]:
    line = next(x for x in out.splitlines() if x.startswith(tag + " "))
    return [int(v) for v in line.split()[1:]]


def print_report(report: dict) -> None:
    g, b = report["good"], report["bad"]
    print(
        f"\nwrk -t1 -c{report['connections']} -d{report['duration_s']:g}s GET /search, "
        f"one bad request every {report['interval_ms']:g} ms\n"
    )
    print(
        f"good: {g['requests']} requests in {g['seconds']} s, non-2xx {g['non_2xx']}, "
        f"socket errors {g['socket_errors']} {g['socket_errors_by_kind']}, "
        f"p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms; statuses {g['statuses']}"
    )
    print(
        f"bad: {b['sent']} sent, {b['answered']} answered, {b['no_answer']} without an answer "
        f"(reset, closed, timed out), {b['not_4xx']} not 4xx; statuses {b['statuses']}"
    )
    print("\n| bad request | sent | statuses | error types |")
    print("|---|---|---|---|")
    for kind, row in b["by_kind"].items():
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(row["statuses"].items()))
        errors = ", ".join(sorted(row["errors"]))
        print(f"| {kind} | {row['sent']} | {statuses} | {errors} |")
    print(f"\nserver-counted 5xx: {report['server_5xx']}")
    print("PASS" if report["ok"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu)")
    report = run(args)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

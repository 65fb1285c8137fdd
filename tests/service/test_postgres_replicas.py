"""Several `mmembed serve` processes on one PostgreSQL: shared state, durability, restarts.

Real processes (tiny preset) on loopback ports, a real PostgreSQL with pgvector
(the session's server, this module's database), real HTTP.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def replica(server_factory, postgres_url, tmp_path):
    """replica(name) -> a started server whose index is this module's database."""

    def make(name: str):
        # PYTHONPATH: the processes run this checkout's code, whatever the venv's install points at
        env = {"MMEMBED_INDEX_URL": postgres_url, "PYTHONPATH": str(REPO_ROOT)}
        server = server_factory(env=env)
        server.data_dir = tmp_path / f"unused-{name}"  # the local store is not opened
        server.log_path = tmp_path / f"{name}.log"
        server.start()
        return server

    return make


def _all_ids(base: str) -> list[str]:
    ids, offset = [], 0
    while True:
        page = httpx.get(f"{base}/items", params={"limit": 1000, "offset": offset}, timeout=30)
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        ids += [item["id"] for item in items]
        if len(items) < 1000:
            return ids
        offset += 1000


def test_writes_through_one_replica_are_read_through_the_other_at_once(replica):
    a, b = replica("a"), replica("b")
    ready = httpx.get(f"{b.url}/readyz", timeout=10).json()
    assert ready["index"]["backend"] == "postgres" and ready["index"]["pool"]["pool_max"] == 10
    text = "the cat sat on the warm stone wall"
    created = httpx.post(f"{a.url}/items", json={"text": text, "id": "shared-1"}, timeout=30)
    assert created.status_code == 201, created.text
    got = httpx.get(f"{b.url}/items/shared-1", timeout=30)
    assert got.status_code == 200 and got.json()["modality"] == "text"
    hits = httpx.get(f"{b.url}/search", params={"q": text, "k": 1}, timeout=30).json()["results"]
    assert hits[0]["id"] == "shared-1" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert httpx.delete(f"{b.url}/items/shared-1", timeout=30).status_code in (200, 204)
    assert httpx.get(f"{a.url}/items/shared-1", timeout=30).status_code == 404
    hits = httpx.get(f"{a.url}/search", params={"q": text, "k": 5}, timeout=30).json()["results"]
    assert all(hit["id"] != "shared-1" for hit in hits)
    assert httpx.delete(f"{a.url}/items/shared-1", timeout=30).status_code == 404
    metrics = httpx.get(f"{a.url}/metrics", timeout=30).text
    assert 'mmembed_index_pool_connections{state="max"} 10.0' in metrics


def test_sigkill_during_batch_writes_keeps_every_acknowledged_batch_whole(replica):
    victim, survivor = replica("victim"), replica("survivor")
    acknowledged: list[int] = []
    attempted: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=victim.url, timeout=30) as client:
            batch = 0
            while not stop.is_set():
                items = [
                    {"text": f"kill test {batch} {i}", "id": f"k{batch}-{i}"} for i in range(10)
                ]
                attempted.append(batch)
                try:
                    answer = client.post("/items/batch", json={"items": items})
                except httpx.TransportError:
                    return  # the process died under this request
                assert answer.status_code == 201, answer.text
                acknowledged.append(batch)
                batch += 1

    writers = [threading.Thread(target=write)]
    writers[0].start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    stop.set()
    writers[0].join(30)
    assert len(acknowledged) >= 5
    stored = [
        item_id.split("-")[0] for item_id in _all_ids(survivor.url) if item_id.startswith("k")
    ]
    for batch in attempted:
        present = stored.count(f"k{batch}")
        assert present in (0, 10), f"batch {batch} is half-present: {present} of 10 items"
        if batch in acknowledged:
            assert present == 10, f"acknowledged batch {batch} is missing"


def test_database_restart_gives_503_then_requests_succeed(replica, postgres_server):
    server = replica("restart")
    statuses: list[int] = []
    stop = threading.Event()

    def add_items() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            n = 0
            while not stop.is_set():
                answer = client.post("/items", json={"text": f"restart {n}", "id": f"rs-{n}"})
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.json()["error"]["type"] == "index_unavailable"
                    assert answer.headers["retry-after"] == "1"
                n += 1

    writer = threading.Thread(target=add_items)
    writer.start()
    time.sleep(0.5)
    postgres_server.restart()
    time.sleep(0.5)
    stop.set()
    writer.join(60)
    assert set(statuses) <= {201, 503}, statuses
    # while the database is down: every index call and /readyz answer 503, never 500
    postgres_server.stop()
    try:
        down = httpx.post(f"{server.url}/items", json={"text": "down", "id": "down"}, timeout=60)
        assert down.status_code == 503 and down.json()["error"]["type"] == "index_unavailable"
        ready = httpx.get(f"{server.url}/readyz", timeout=60)
        assert ready.status_code == 503 and "cannot be reached" in ready.json()["error"]["message"]
    finally:
        postgres_server.start()
    # The pool reconnects in the background (with back-off): until it has, answers are
    # 503s that say so, never 500s; then the same request succeeds.
    deadline = time.monotonic() + 60
    while True:
        ok = httpx.post(f"{server.url}/items", json={"text": "back", "id": "back"}, timeout=60)
        if ok.status_code != 503 or time.monotonic() > deadline:
            break
        assert ok.json()["error"]["type"] == "index_unavailable"
        time.sleep(0.5)
    assert ok.status_code == 201, ok.text
    assert httpx.get(f"{server.url}/readyz", timeout=60).status_code == 200
    created = [n for n, status in enumerate(statuses) if status == 201]
    ids = set(_all_ids(server.url))
    assert {f"rs-{n}" for n in created} <= ids

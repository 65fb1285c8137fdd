"""What only the PostgreSQL backend has: schema checks, HNSW plans, pool, restarts, previews.

The backend contract (round trips, bad input, adaptive recall, concurrency) runs on
both backends through the parametrised `open_store` fixture; these tests cover the
database-specific behaviour.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from index import NewItem
from index.errors import (
    InvalidItem,
    ItemNotFound,
    PreviewNotFound,
    StoreError,
    StoreUnavailable,
)
from index.items import Preview
from index.pg import PostgresConfig, PostgresStore, search_sql
from index.pg.local_server import free_port
from index.pg.schema import names


@pytest.fixture
def open_pg(postgres_url, request):
    """open_pg(schema=<test name>, **config) -> PostgresStore; all closed at the end."""
    opened: list[PostgresStore] = []
    default = request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:60]

    def make(schema: str | None = None, **config) -> PostgresStore:
        store = PostgresStore.open(postgres_url, PostgresConfig(schema=schema or default, **config))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_reopen_and_a_second_process_see_the_same_items(open_pg, unit_vectors):
    x = unit_vectors(200)
    first = open_pg()
    ids = first.add_many([NewItem(v, "text", {"i": i}) for i, v in enumerate(x)])
    before = [[h.id for h in hits] for hits in first.search_batch(x[:5], k=5, dims=256)]
    listed = [(i.id, i.created_at) for i in first.list(limit=300)]
    # concurrent opens of one schema serialise on an advisory lock and both succeed
    others: list[PostgresStore] = []
    threads = [threading.Thread(target=lambda: others.append(open_pg())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(others) == 3
    second = others[0]
    assert [(i.id, i.created_at) for i in second.list(limit=300)] == listed
    assert [[h.id for h in hits] for hits in second.search_batch(x[:5], k=5, dims=256)] == before
    second.delete(ids[0])
    with pytest.raises(ItemNotFound):
        first.get(ids[0])  # a delete through one store is seen by the other at once
    first.close()
    assert second.count() == 199


def _sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def test_other_schema_version_or_dimension_is_refused(open_pg, postgres_url):
    open_pg(schema="versioned").close()
    _sql(postgres_url, "UPDATE versioned.mmembed_meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 3; this mmembed reads version 2"):
        open_pg(schema="versioned")
    _sql(postgres_url, "CREATE SCHEMA wide")
    _sql(
        postgres_url, "CREATE TABLE wide.mmembed_items (id text PRIMARY KEY, embedding vector(768))"
    )
    with pytest.raises(
        StoreError, match=r"embedding is vector\(768\); this mmembed stores vector\(512\)"
    ):
        open_pg(schema="wide")


def _plan(url: str, store: PostgresStore, chosen: search_sql.SearchPlan, query) -> str:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        settings = search_sql.session_settings(
            chosen, ef_search=100, iterative_scan="relaxed_order", max_scan_tuples=20_000
        )
        conn.execute(search_sql.SET_SESSION, settings)
        statement = search_sql.statement(
            names(store.config.schema)["items"], chosen, filtered=(False, False)
        )
        explained = conn.execute(
            b"EXPLAIN " + statement.as_bytes(conn), search_sql.parameters(query, chosen, None, None)
        ).fetchall()
    return "\n".join(row[0] for row in explained)


def test_hnsw_searches_use_the_indexes_and_flat_ones_scan(open_pg, postgres_url, unit_vectors):
    store = open_pg(kind="hnsw")
    store.add_many([NewItem(v, "text") for v in unit_vectors(2000)])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"ANALYZE {store.config.schema}.mmembed_items")
    query = unit_vectors(1, seed=5)[0]
    cases = [
        (dict(kind="hnsw", dims=64, adaptive=False), "mmembed_items_hnsw64"),
        (dict(kind="hnsw", dims=512, adaptive=False), "mmembed_items_hnsw512"),
        (dict(kind="hnsw", dims=512, adaptive=True), "mmembed_items_hnsw64"),  # the shortlist
        (dict(kind="flat", dims=512, adaptive=True), "Seq Scan"),
        (dict(kind="flat", dims=512, adaptive=False), "Seq Scan"),
        (dict(kind="hnsw", dims=128, adaptive=False), "Seq Scan"),  # no index at 128
    ]
    for kwargs, expected in cases:
        chosen = search_sql.plan(k=10, adaptive_factor=10, **kwargs)
        plan = _plan(postgres_url, store, chosen, query)
        assert expected in plan, (kwargs, plan)
        if expected == "Seq Scan":
            assert "hnsw" not in plan, (kwargs, plan)


@pytest.mark.parametrize("iterative_scan", ["relaxed_order", "off"])
def test_selective_filters_still_return_k_rows(open_pg, unit_vectors, brute_force, iterative_scan):
    store = open_pg(kind="hnsw", iterative_scan=iterative_scan, hnsw_ef_search=10)
    x = unit_vectors(1200)
    rare = set(range(0, 1200, 100))  # 12 items
    ids = store.add_many(
        [NewItem(v, "text", {"tag": "rare" if i in rare else "common"}) for i, v in enumerate(x)]
    )
    rows = np.array(sorted(rare))
    for query in unit_vectors(5, seed=3):
        for dims, mode in [(64, "exact"), (512, "exact"), (512, "adaptive")]:
            hits = store.search(query, k=10, dims=dims, mode=mode, where={"tag": "rare"})
            best, scores = brute_force(x[rows], query, 10, dims)
            assert [h.id for h in hits] == [ids[r] for r in rows[best]]
            np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)


def test_previews_are_stored_replaced_and_deleted_with_their_item(
    open_pg, postgres_url, unit_vectors
):
    store = open_pg()
    x = unit_vectors(4)
    png = Preview(data=b"\x89PNG fake bytes", media_type="image/png")
    store.add(x[0], modality="image", id="a", preview=png)
    store.add(x[1], modality="text", id="b")
    assert store.get_preview("a") == png
    with pytest.raises(PreviewNotFound, match="'b' has no preview"):
        store.get_preview("b")
    with pytest.raises(ItemNotFound):
        store.get_preview("nope")
    ogg = Preview(data=b"OggS audio", media_type="audio/ogg")
    store.upsert(x[2], id="a", modality="audio", preview=ogg)
    assert store.get_preview("a") == ogg
    store.upsert(x[2], id="a", modality="audio")  # no preview: the old one goes
    with pytest.raises(PreviewNotFound):
        store.get_preview("a")
    store.add_many([NewItem(x[3], "image", id="c", preview=png)])
    store.delete("c")
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute(
            f"SELECT count(*) FROM {store.config.schema}.mmembed_previews"
        ).fetchone()
    assert left[0] == 0
    for bad, message in [
        (b"png", "must be a Preview"),
        (Preview(b"", "image/png"), "non-empty bytes"),
        (Preview(b"x", ""), "media_type"),
    ]:
        with pytest.raises(InvalidItem, match=message):
            store.add(x[3], modality="image", id="d", preview=bad)
    with pytest.raises(ItemNotFound):
        store.get("d")


def test_unreachable_database_is_store_unavailable():
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL at 127.0.0.1"):
        PostgresStore.open(
            f"postgresql://postgres@127.0.0.1:{free_port()}/x", PostgresConfig(connect_timeout_s=2)
        )
    assert time.monotonic() - started < 30


def test_pool_size_is_the_setting_and_calls_wait_for_a_connection(open_pg, unit_vectors):
    store = open_pg(pool_min_size=1, pool_size=2)
    store.add_many([NewItem(v, "text") for v in unit_vectors(100)])
    results: list[int] = []

    def search() -> None:
        results.append(len(store.search(unit_vectors(1, seed=9)[0], k=7, dims=128)))

    threads = [threading.Thread(target=search) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [7] * 6
    stats = store.connection_stats()
    assert stats["pool_max"] == 2 and stats["pool_size"] <= 2


def test_config_is_checked():
    with pytest.raises(StoreError, match="schema must be a lower-case SQL identifier"):
        PostgresConfig(schema="Robert'); DROP TABLE students;--")
    with pytest.raises(StoreError, match="kind must be one of"):
        PostgresConfig(kind="ivf")
    with pytest.raises(StoreError, match="pool_min_size"):
        PostgresConfig(pool_min_size=5, pool_size=2)


def test_restart_fails_calls_in_flight_then_later_calls_succeed(
    open_pg, postgres_server, unit_vectors
):
    """pg_ctl restart (fast): the call in flight gets StoreUnavailable, no batch is half-written."""
    store = open_pg(pool_min_size=2, pool_size=4)
    x = unit_vectors(40)
    in_flight: list[BaseException] = []
    acknowledged: list[int] = []
    failed: list[int] = []
    sleeping = threading.Event()

    def long_call() -> None:
        try:
            with store._connection() as conn:  # a query that is running when the server stops
                sleeping.set()
                conn.execute("SELECT pg_sleep(60)")
        except BaseException as exc:
            in_flight.append(exc)

    def writer() -> None:
        for batch in range(40):
            items = [NewItem(x[i], "text", id=f"b{batch}-{i}") for i in range(20)]
            try:
                store.add_many(items)
                acknowledged.append(batch)
            except StoreUnavailable:
                failed.append(batch)
            time.sleep(0.02)

    sleeper = threading.Thread(target=long_call)
    sleeper.start()
    assert sleeping.wait(10)
    writing = threading.Thread(target=writer)
    writing.start()
    time.sleep(0.2)
    postgres_server.restart()
    sleeper.join(30)
    writing.join(120)
    assert len(in_flight) == 1 and isinstance(in_flight[0], StoreUnavailable), in_flight
    assert store.count() >= 0  # the next call reconnects
    stored = [item.id.split("-")[0] for item in store.list(limit=10_000)]
    for batch in range(40):
        present = stored.count(f"b{batch}")
        assert present in (0, 20), f"batch {batch} is half-written: {present} of 20"
        if batch in acknowledged:
            assert present == 20, f"acknowledged batch {batch} is missing"
    store.add(x[0], modality="text", id="after")
    assert store.get("after").id == "after"

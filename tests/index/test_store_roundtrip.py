"""Add, get, search, delete and upsert round trips against brute-force ground truth."""

from __future__ import annotations

import time

import numpy as np
import pytest

from index import IndexConfig, NewItem
from index.errors import DuplicateId, ItemNotFound

DIMS = (64, 128, 256, 512)


def test_add_get_round_trip(open_store, unit_vectors):
    store = open_store()
    raw = unit_vectors(1)[0] * 3.0  # not unit: the store normalises
    before = time.time()
    item_id = store.add(raw, modality="text", metadata={"title": "ciao", "n": 2})
    item = store.get(item_id)
    assert len(item_id) == 32 and all(c in "0123456789abcdef" for c in item_id)
    assert item.id == item_id and item.modality == "text"
    assert item.metadata == {"title": "ciao", "n": 2}
    assert item.vector.dtype == np.float32 and item.vector.shape == (512,)
    np.testing.assert_allclose(item.vector, raw / 3.0, atol=1e-6)
    assert before <= item.created_at == item.updated_at <= time.time()
    assert store.add(raw, modality="audio", id="given") == "given"
    assert store.get("given").metadata == {}


@pytest.mark.parametrize("codec", ["fp16", "float32"])
@pytest.mark.parametrize("dims", DIMS)
def test_exact_search_matches_brute_force(open_store, unit_vectors, brute_force, dims, codec):
    store = open_store(IndexConfig(shortlist_codec=codec))
    x = unit_vectors(500)
    ids = store.add_many([NewItem(v, "text", {"row": i}) for i, v in enumerate(x)])
    for query in unit_vectors(5, seed=1):
        rows, scores = brute_force(x, query, 10, dims)
        hits = store.search(query, k=10, dims=dims)
        assert [h.id for h in hits] == [ids[r] for r in rows]
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
        assert [h.metadata["row"] for h in hits] == rows.tolist()


@pytest.mark.parametrize("dims", DIMS)
def test_each_item_finds_itself(open_store, unit_vectors, dims):
    store = open_store()
    x = unit_vectors(300)
    ids = store.add_many([NewItem(v, "image") for v in x])
    for mode in ("exact", "adaptive"):
        tops = store.search_batch(x[:20], k=1, dims=dims, mode=mode)
        assert [hits[0].id for hits in tops] == ids[:20]
        np.testing.assert_allclose([hits[0].score for hits in tops], 1.0, atol=1e-5)


def test_search_batch_equals_single_searches(open_store, unit_vectors):
    store = open_store()
    store.add_many([NewItem(v, "text") for v in unit_vectors(400)])
    queries = unit_vectors(7, seed=3)
    for dims, mode in [(64, "exact"), (256, "exact"), (512, "adaptive")]:
        batch = store.search_batch(queries, k=5, dims=dims, mode=mode)
        single = [store.search(q, k=5, dims=dims, mode=mode) for q in queries]
        assert [[h.id for h in hits] for hits in batch] == [[h.id for h in hits] for hits in single]
        np.testing.assert_allclose(
            [[h.score for h in hits] for hits in batch],
            [[h.score for h in hits] for hits in single],
            atol=1e-5,
        )


def test_k_larger_than_collection_returns_all(open_store, unit_vectors):
    store = open_store()
    store.add_many([NewItem(v, "text") for v in unit_vectors(4)])
    for dims in DIMS:
        for mode in ("exact", "adaptive"):
            assert len(store.search(unit_vectors(1, 9)[0], k=50, dims=dims, mode=mode)) == 4
    empty = open_store(name="empty")
    assert empty.search(unit_vectors(1)[0], k=5) == []
    assert empty.search(unit_vectors(1)[0], k=5, dims=128, modality="text") == []


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_deleted_items_never_come_back(open_store, unit_vectors, kind):
    store = open_store(IndexConfig(kind=kind))
    x = unit_vectors(300)
    ids = store.add_many([NewItem(v, "text", {"group": i % 3}) for i, v in enumerate(x)])
    gone = set(ids[:40])
    for item_id in ids[:40]:
        store.delete(item_id)
    assert store.count() == 260
    for item_id in ids[:3]:
        with pytest.raises(ItemNotFound):
            store.get(item_id)
        with pytest.raises(ItemNotFound):
            store.delete(item_id)
    for dims in DIMS:
        for mode in ("exact", "adaptive"):
            for where in (None, {"group": 0}):
                results = store.search_batch(x[:40], k=10, dims=dims, mode=mode, where=where)
                returned = {h.id for hits in results for h in hits}
                assert not returned & gone
                assert all(len(hits) == 10 for hits in results)
    assert store.info()["indexed"] == 260


def test_hnsw_compacts_after_many_deletes(open_local_store, unit_vectors):
    """FAISS only: its HNSW graph keeps tombstones (pgvector's HNSW deletes are VACUUM's)."""
    store = open_local_store(IndexConfig(kind="hnsw", hnsw_max_tombstone_fraction=0.1))
    x = unit_vectors(200)
    ids = store.add_many([NewItem(v, "text") for v in x])
    for item_id in ids[:30]:
        store.delete(item_id)
    # the 21st tombstone passes 10% of 200 and rebuilds the graphs from 179 live items
    info = store.info()
    assert (info["tombstones"], info["indexed"]) == (9, 170)
    hits = store.search_batch(x[30:60], k=1)
    assert [h[0].id for h in hits] == ids[30:60]


def test_upsert_replaces_vector_and_keeps_created_at(open_store, unit_vectors):
    store = open_store()
    a, b = unit_vectors(2)
    store.add_many([NewItem(v, "text") for v in unit_vectors(50, seed=5)])
    assert store.upsert(a, id="x", modality="text", metadata={"v": 1}) == "x"
    first = store.get("x")
    time.sleep(0.01)
    store.upsert(b, id="x", modality="audio", metadata={"v": 2})
    second = store.get("x")
    assert second.created_at == first.created_at < second.updated_at
    assert second.modality == "audio" and second.metadata == {"v": 2}
    np.testing.assert_allclose(second.vector, b, atol=1e-6)
    assert store.count() == 51
    for dims in DIMS:
        hit = store.search(b, k=1, dims=dims)[0]
        assert (hit.id, hit.modality) == ("x", "audio")
        assert all(h.id != "x" for h in store.search(a, k=5, dims=dims, modality="text"))


def test_duplicate_ids_write_nothing(open_store, unit_vectors):
    store = open_store()
    x = unit_vectors(3)
    store.add(x[0], modality="text", id="a")
    with pytest.raises(DuplicateId, match="'a'"):
        store.add(x[1], modality="text", id="a")
    with pytest.raises(DuplicateId, match="'b'"):
        store.add_many([NewItem(x[1], "text", id="b"), NewItem(x[2], "text", id="b")])
    with pytest.raises(DuplicateId, match="'a'"):
        store.add_many([NewItem(x[1], "text", id="c"), NewItem(x[2], "text", id="a")])
    assert store.count() == 1 and store.info()["indexed"] == 1
    np.testing.assert_allclose(store.get("a").vector, x[0], atol=1e-6)


def test_count_and_list_by_modality(open_store, unit_vectors):
    store = open_store()
    x = unit_vectors(10)
    for i, v in enumerate(x):
        store.add(v, modality="image" if i % 2 else "text", id=f"id{i}")
    assert store.count() == 10 and store.count("image") == 5 and store.count("video") == 0
    assert [i.id for i in store.list()] == [f"id{i}" for i in range(10)]
    assert [i.id for i in store.list("image", limit=2, offset=1)] == ["id3", "id5"]
    assert store.list("text", offset=10) == []
    assert store.info()["counts"] == {"image": 5, "text": 5}


def test_filters_by_modality_and_metadata(open_store, unit_vectors, brute_force):
    # a tiny exact threshold sends large filters through the FAISS id selector path
    for threshold in (10, 100_000):
        store = open_store(IndexConfig(filter_exact_threshold=threshold), name=f"t{threshold}")
        x = unit_vectors(600)
        values = [1, True, "1", None, 1.0, "x"]
        items = [
            NewItem(v, "image" if i % 4 == 0 else "text", {"v": values[i % 6], "i": i})
            for i, v in enumerate(x)
        ]
        ids = store.add_many(items)
        query = unit_vectors(1, seed=2)[0]
        cases = [
            ({"modality": "image"}, lambda i: i % 4 == 0),
            ({"where": {"v": 1}}, lambda i: i % 6 in (0, 4)),  # 1 == 1.0, but not true or "1"
            ({"where": {"v": True}}, lambda i: i % 6 == 1),
            ({"where": {"v": "1"}}, lambda i: i % 6 == 2),
            ({"where": {"v": None}}, lambda i: i % 6 == 3),
            ({"modality": "text", "where": {"v": "x"}}, lambda i: i % 6 == 5 and i % 4 != 0),
            ({"where": {"i": 7}}, lambda i: i == 7),
            ({"where": {"missing": 1}}, lambda i: False),
        ]
        for kwargs, keep in cases:
            rows = np.array([i for i in range(600) if keep(i)], dtype=np.int64)
            for dims, mode in [(64, "exact"), (128, "exact"), (512, "exact"), (512, "adaptive")]:
                hits = store.search(query, k=10, dims=dims, mode=mode, **kwargs)
                assert len(hits) == min(10, len(rows))
                if len(rows) and mode == "exact":
                    best, _ = brute_force(x[rows], query, 10, dims)
                    assert [h.id for h in hits] == [ids[r] for r in rows[best]]
                assert all(keep(h.metadata["i"]) for h in hits)


@pytest.mark.parametrize("threshold", [5, 100_000])
def test_repeated_filtered_searches_see_every_write(open_store, unit_vectors, threshold):
    """Filter label sets are cached between writes; each write must invalidate them."""
    store = open_store(IndexConfig(filter_exact_threshold=threshold))
    x = unit_vectors(60)
    store.add_many([NewItem(v, "text", {"tag": "a"}) for v in x[:50]])
    query = x[55]
    for kwargs in ({"modality": "audio"}, {"where": {"tag": "b"}}):
        assert store.search(query, k=3, **kwargs) == []
        store.add(query, modality="audio", metadata={"tag": "b"}, id="new")
        assert [h.id for h in store.search(query, k=3, **kwargs)] == ["new"]
        store.upsert(query, id="new", modality="text", metadata={"tag": "a"})
        assert store.search(query, k=3, **kwargs) == []
        assert store.search(query, k=1, modality="text", where={"tag": "a"})[0].id == "new"
        store.delete("new")
        assert all(h.id != "new" for h in store.search(query, k=3, modality="text"))

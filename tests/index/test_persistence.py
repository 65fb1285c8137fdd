"""Restart: data written, store closed, reopened: everything there, results identical."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from index import IndexConfig, NewItem, VectorStore

SEARCHES = [(64, "exact"), (128, "exact"), (256, "adaptive"), (512, "exact"), (512, "adaptive")]


def _results(store, queries):
    return [
        [(h.id, h.score, h.modality, h.metadata) for h in hits]
        for dims, mode in SEARCHES
        for hits in store.search_batch(queries, k=10, dims=dims, mode=mode)
    ]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_reopen_gives_identical_state_and_results(tmp_path, unit_vectors, kind):
    config = IndexConfig(kind=kind)
    x = unit_vectors(800)
    queries = unit_vectors(20, seed=1)
    with VectorStore.open(tmp_path, config) as store:
        ids = store.add_many([NewItem(v, "text", {"i": i}) for i, v in enumerate(x)])
        store.upsert(x[0], id=ids[1], modality="image", metadata={"i": -1})
        for item_id in ids[500:600]:
            store.delete(item_id)
        before = _results(store, queries)
        items_before = store.list(limit=1000)
        generation = store.info()["generation"]
    with VectorStore.open(tmp_path, config) as store:
        info = store.info()
        assert info["open"]["rebuilt"] is False and info["open"]["changes_applied"] == 0
        assert info["snapshot_generation"] == generation == info["generation"]
        assert store.count() == 700 and info["indexed"] == 700
        assert _results(store, queries) == before
        after = store.list(limit=1000)
        assert [(i.id, i.modality, i.metadata, i.created_at) for i in after] == [
            (i.id, i.modality, i.metadata, i.created_at) for i in items_before
        ]
        assert all(
            np.array_equal(a.vector, b.vector) for a, b in zip(after, items_before, strict=True)
        )
        assert not {h.id for hits in store.search_batch(x[500:600], k=10) for h in hits} & set(
            ids[500:600]
        )


def test_stale_snapshot_is_caught_up_from_sqlite(tmp_path, unit_vectors):
    """A snapshot older than the store (as after a crash) is reconciled: adds and deletes."""
    x = unit_vectors(300)
    old = tmp_path / "old-snapshot"
    data = tmp_path / "data"
    with VectorStore.open(data) as store:
        ids = store.add_many([NewItem(v, "text") for v in x[:200]])
        store.snapshot()
        old.mkdir()
        for path in data.glob("*.faiss"):
            shutil.copy(path, old / path.name)
        shutil.copy(data / "faiss.json", old / "faiss.json")
        store.add_many([NewItem(v, "text") for v in x[200:]])
        for item_id in ids[:50]:
            store.delete(item_id)
        fresh = _results(store, x[:30])
    for path in data.glob("*.faiss"):
        path.unlink()
    for path in old.iterdir():
        shutil.copy(path, data / path.name)
    assert json.loads((data / "faiss.json").read_text())["ntotal"] == 200
    with VectorStore.open(data) as store:
        report = store.info()["open"]
        assert report["rebuilt"] is False and report["changes_applied"] == 100 + 50
        assert store.info()["indexed"] == 250
        assert _results(store, x[:30]) == fresh


def test_snapshot_is_written_after_snapshot_every_changes(tmp_path, unit_vectors):
    with VectorStore.open(tmp_path, IndexConfig(snapshot_every=100)) as store:
        store.add_many([NewItem(v, "text") for v in unit_vectors(60)])
        assert not (tmp_path / "faiss.json").exists()
        store.add_many([NewItem(v, "text") for v in unit_vectors(60, seed=1)])
        store.wait_for_snapshot()  # written in the background
        manifest = json.loads((tmp_path / "faiss.json").read_text())
        assert manifest["ntotal"] == 120 and store.info()["unsaved_changes"] == 0
        assert sorted(p.name[:8] for p in tmp_path.glob("*.faiss")) == ["index512", "index64-"]

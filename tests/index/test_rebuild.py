"""Missing, corrupt or mismatched FAISS files are rebuilt from SQLite with the same results."""

from __future__ import annotations

import json

import pytest

from index import IndexConfig, NewItem, VectorStore
from index.errors import StoreError


def _results(store, queries):
    return [
        [(h.id, round(h.score, 5)) for h in hits]
        for dims, mode in [(64, "exact"), (256, "exact"), (512, "exact"), (512, "adaptive")]
        for hits in store.search_batch(queries, k=10, dims=dims, mode=mode)
    ]


@pytest.fixture
def saved(tmp_path, unit_vectors):
    """A closed store of 500 items (the last 50 deleted) and its search results."""
    x = unit_vectors(500)
    with VectorStore.open(tmp_path) as store:
        ids = store.add_many([NewItem(v, "text", {"i": i}) for i, v in enumerate(x)])
        for item_id in ids[450:]:
            store.delete(item_id)
        expected = _results(store, x[:25])
    return tmp_path, x[:25], expected


def _index_file(directory, dims):
    manifest = json.loads((directory / "faiss.json").read_text())
    return directory / manifest["files"][str(dims)]["name"]


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


CORRUPTIONS = {
    "missing 512": lambda d: _index_file(d, 512).unlink(),
    "missing 64": lambda d: _index_file(d, 64).unlink(),
    "flipped bytes in 512": lambda d: _flip_bytes(_index_file(d, 512)),
    "truncated 64": lambda d: _truncate(_index_file(d, 64)),
    "missing manifest": lambda d: (d / "faiss.json").unlink(),
    "garbage manifest": lambda d: (d / "faiss.json").write_text("{not json"),
    "manifest without files": lambda d: (d / "faiss.json").write_text('{"format": 1}'),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_snapshot_is_rebuilt(saved, corruption):
    directory, queries, expected = saved
    CORRUPTIONS[corruption](directory)
    with VectorStore.open(directory) as store:
        report = store.info()["open"]
        assert report["rebuilt"] is True and report["rebuild_reason"]
        assert store.info()["indexed"] == 450
        assert _results(store, queries) == expected
    with VectorStore.open(directory) as store:
        assert store.info()["open"]["rebuilt"] is False  # the rebuilt snapshot was saved on close
        assert _results(store, queries) == expected


def test_unreadable_file_without_checksums_is_rebuilt(saved):
    directory, queries, expected = saved
    path = _index_file(directory, 512)
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, so only read_index can tell
    with VectorStore.open(directory, IndexConfig(verify_checksums=False)) as store:
        assert "unreadable" in store.info()["open"]["rebuild_reason"]
        assert _results(store, queries) == expected


def test_changed_kind_rebuilds(saved):
    directory, queries, _ = saved
    with VectorStore.open(directory, IndexConfig(kind="hnsw")) as store:
        report = store.info()["open"]
        assert report["rebuilt"] is True and "does not match" in report["rebuild_reason"]
        assert store.info()["kind"] == "hnsw" and store.info()["indexed"] == 450
        tops = store.search_batch(queries, k=1)
        assert [hits[0].metadata["i"] for hits in tops] == list(range(25))


def test_corrupt_database_is_refused_clearly(tmp_path):
    (tmp_path / "items.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the item database"):
        VectorStore.open(tmp_path)
    # the lock was released: a later open fails the same way, not with StoreLocked
    with pytest.raises(StoreError, match="cannot open"):
        VectorStore.open(tmp_path)


def test_changed_shortlist_codec_rebuilds_with_same_results(saved):
    directory, queries, expected = saved
    with VectorStore.open(directory, IndexConfig(shortlist_codec="float32")) as store:
        assert "64-d codec fp16" in store.info()["open"]["rebuild_reason"]
        got = _results(store, queries)
        # The same ids in the same order; scores to float32 rounding (a score on a
        # 5-decimal boundary may round either way under another codec's arithmetic).
        assert [[i for i, _ in hits] for hits in got] == [[i for i, _ in hits] for hits in expected]
        scores = [s for hits in got for _, s in hits]
        assert scores == pytest.approx([s for hits in expected for _, s in hits], abs=2e-5)

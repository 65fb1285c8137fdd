"""FAISS snapshots off the write path (issue 29, finding 5): a flat store writes its
snapshot in a process of its own from one consistent SQLite read, while adds go on; the
snapshot equals the store at its generation; a reopened store needs no catching up
beyond the writes after it; a failed snapshot process loses nothing; a loaded index has
room for the next adds."""

from __future__ import annotations

import logging
import os
import re
import threading

import faiss
import numpy as np

from index import IndexConfig, NewItem, VectorStore, snapshot_worker
from index.faiss_index import MANIFEST_NAME, MatryoshkaIndexes
from index.snapshot_worker import SnapshotFailed, write_snapshot


def test_a_snapshot_taken_during_concurrent_adds_is_consistent(tmp_path, unit_vectors, caplog):
    config = IndexConfig(snapshot_every=3000, synchronous="NORMAL")
    x = unit_vectors(6000)
    caplog.set_level(logging.INFO, logger="index.store")
    store = VectorStore.open(tmp_path, config)
    try:
        start_generation = store.info()["generation"]
        store.add_many([NewItem(v, "text", {"i": i}) for i, v in enumerate(x[:2999])])
        overlapped = 0
        stop = threading.Event()

        def add_singles() -> None:
            nonlocal overlapped
            for i in range(2999, len(x)):
                store.add_many([NewItem(x[i], "text", {"i": i})])
                thread = store._snapshotter
                overlapped += thread is not None and thread.is_alive()
            stop.set()

        writer = threading.Thread(target=add_singles)
        writer.start()
        while not stop.is_set():  # searches go on too
            hits = store.search_batch(x[:2], k=1, dims=512)
            assert hits[0][0].score > 0.99
        writer.join()
        store.wait_for_snapshot()
        assert overlapped > 0, "no add ran while the snapshot was written"

        # what the background thread wrote, read back from disk
        snap, meta = MatryoshkaIndexes.load(tmp_path, config)
        # one transaction per add_many: the snapshot holds the items of the first
        # (generation - start) writes, no more, no fewer, with their own vectors
        writes = meta.generation - start_generation
        assert writes >= 2  # the batch, and the single add that set it off
        assert meta.ntotal == 2999 + (writes - 1)
        labels = np.sort(snap.stored_labels())
        all_labels = store._sql.labels()
        np.testing.assert_array_equal(labels, all_labels[: len(labels)])
        np.testing.assert_array_equal(snap.vectors(labels), store._sql.vectors(labels))
        written_by = re.search(r"written in the background by process (\d+)", caplog.text)
        assert written_by and int(written_by.group(1)) != os.getpid()
        generation = store.info()["generation"]
    finally:
        store.close()

    reopened = VectorStore.open(tmp_path, config)
    try:
        info = reopened.info()
        assert info["open"]["rebuilt"] is False
        assert info["snapshot_generation"] == generation  # close wrote the rest
        assert reopened.check_consistency() | {"items": len(x)} == {
            "items": len(x),
            "indexed": len(x),
            "missing": 0,
            "extra": 0,
            "index_64_vs_512": 0,
        }
        for i in (0, 2998, 2999, len(x) - 1):
            hit = reopened.search_batch(x[i : i + 1], k=1, dims=512)[0][0]
            assert hit.metadata == {"i": i}
    finally:
        reopened.close()


def test_a_loaded_index_has_room_for_more(tmp_path, unit_vectors):
    config = IndexConfig()
    with VectorStore.open(tmp_path, config) as store:
        store.add_many([NewItem(v, "text") for v in unit_vectors(100)])
    indexes, _ = MatryoshkaIndexes.load(tmp_path, config)
    for index in (indexes.index64, indexes.index512):
        codes = faiss.downcast_index(index.index).codes
        pointer = int(codes.data())
        index.add_with_ids(np.asarray(unit_vectors(1, seed=7))[:, : index.d], np.array([10**6]))
        assert int(codes.data()) == pointer  # not reallocated: no copy of the whole array


def test_a_failed_snapshot_process_loses_nothing(tmp_path, unit_vectors, caplog, monkeypatch):
    config = IndexConfig(snapshot_every=50, synchronous="NORMAL")
    x = unit_vectors(60)
    caplog.set_level(logging.INFO, logger="index.store")
    monkeypatch.setattr(snapshot_worker.sys, "executable", "/bin/false")
    store = VectorStore.open(tmp_path, config)
    try:
        store.add_many([NewItem(v, "text") for v in x[:50]])
        store.wait_for_snapshot()
        assert "background FAISS snapshot failed" in caplog.text
        assert "snapshot process exited with 1" in caplog.text
        assert not (tmp_path / MANIFEST_NAME).exists()
        store.add_many([NewItem(v, "text") for v in x[50:]])
    finally:
        store.close()  # writes the snapshot inline, as the background one failed
    with VectorStore.open(tmp_path, config) as reopened:
        info = reopened.info()
        assert info["open"]["rebuilt"] is False and info["open"]["changes_applied"] == 0
        assert reopened.count() == len(x)


def test_the_snapshot_process_writes_nothing_once_the_store_has_gone(tmp_path, unit_vectors):
    config = IndexConfig(snapshot_every=10**6)
    with VectorStore.open(tmp_path, config) as store:
        store.add_many([NewItem(v, "text") for v in unit_vectors(20)])
    (tmp_path / MANIFEST_NAME).unlink()
    for path in tmp_path.glob("index*.faiss"):
        path.unlink()
    not_the_parent = os.getppid() + 1
    try:
        write_snapshot(tmp_path, config, parent=not_the_parent)
    except SnapshotFailed as exc:
        assert "gone" in str(exc)
    else:
        raise AssertionError("a snapshot was written for a store whose process has gone")
    assert list(tmp_path.glob("index*.faiss")) == [] and not (tmp_path / MANIFEST_NAME).exists()
    result = write_snapshot(tmp_path, config, parent=os.getppid())
    assert result["items"] == 20 and result["pid"] == os.getpid()
    indexes, meta = MatryoshkaIndexes.load(tmp_path, config)
    assert meta.ntotal == 20 and meta.generation == result["generation"]


def test_an_hnsw_store_writes_a_copy_of_its_graph_in_the_background(tmp_path, unit_vectors, caplog):
    """HNSW graphs are not rebuilt from SQLite: they are copied under the lock and the
    copy is written by a thread. The files hold the store as it was when copied, a
    reopened store needs no rebuild, and an older copy never replaces a newer snapshot."""
    config = IndexConfig(kind="hnsw", snapshot_every=40, synchronous="NORMAL")
    x = unit_vectors(100)
    caplog.set_level(logging.INFO, logger="index.store")
    store = VectorStore.open(tmp_path, config)
    try:
        store.add_many([NewItem(v, "text", {"i": i}) for i, v in enumerate(x[:39])])
        store.add_many([NewItem(x[39], "text", {"i": 39})])  # the 40th change: a copy
        copied_at = store.info()["generation"]
        store.add_many([NewItem(v, "text", {"i": 40 + i}) for i, v in enumerate(x[40:50])])
        store.wait_for_snapshot()
        assert "written in the background in" in caplog.text
        snap, meta = MatryoshkaIndexes.load(tmp_path, config)
        assert meta.generation == copied_at and meta.ntotal == 40  # not the 10 added after
        labels = np.sort(snap.stored_labels())
        np.testing.assert_array_equal(snap.vectors(labels), store._sql.vectors(labels))

        old = store._indexes.capture(copied_at - 1)
        store.snapshot()  # a newer snapshot, inline
        newer = store.info()["snapshot_generation"]
        store._write_capture(old)
        assert MatryoshkaIndexes.load(tmp_path, config)[1].generation == newer
        store.add_many([NewItem(v, "text", {"i": 50 + i}) for i, v in enumerate(x[50:])])
    finally:
        store.close()
    with VectorStore.open(tmp_path, config) as reopened:
        assert reopened.info()["open"]["rebuilt"] is False
        assert reopened.count() == len(x)
        assert reopened.check_consistency()["missing"] == 0
        hit = reopened.search_batch(x[45:46], k=1, dims=512)[0][0]
        assert hit.metadata == {"i": 45}

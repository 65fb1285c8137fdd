"""Many searches at once alongside writes, in one process: no errors, no stale or torn results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index import IndexConfig, NewItem


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_searches_run_safely_alongside_writes(open_store, backend, unit_vectors, kind):
    """Readers and writers on one store at once (long on purpose: the threads share setup
    and their checks only make sense together)."""
    store = open_store(IndexConfig(kind=kind, snapshot_every=150))
    stable = unit_vectors(300)
    stable_ids = store.add_many([NewItem(v, "image", id=f"s{i}") for i, v in enumerate(stable)])
    churn = unit_vectors(400, seed=1)
    deleted: set[str] = set()
    deleted_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]

    def writer() -> None:
        try:
            for start in range(0, 400, 20):
                batch = [
                    NewItem(v, "text", id=f"c{start + i}")
                    for i, v in enumerate(churn[start : start + 20])
                ]
                store.add_many(batch)
                for i in range(start, start + 20, 2):
                    store.delete(f"c{i}")
                    with deleted_lock:
                        deleted.add(f"c{i}")
                store.upsert(churn[start], id=f"s{start % 300}", modality="image")
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with deleted_lock:
                    gone = set(deleted)
                rows = rng.integers(0, 300, size=4)
                dims = int(rng.choice([64, 128, 256, 512]))
                mode = str(rng.choice(["exact", "adaptive"]))
                results = store.search_batch(stable[rows], k=10, dims=dims, mode=mode)
                for row, hits in zip(rows, results, strict=True):
                    assert len(hits) == 10
                    scores = [h.score for h in hits]
                    assert scores == sorted(scores, reverse=True)
                    assert not {h.id for h in hits} & gone
                    if hits[0].id != stable_ids[row]:
                        # only an upsert that replaced this item's vector may hide it
                        assert store.get(stable_ids[row]).vector @ stable[row] < 0.999
                filtered = store.search(stable[rows[0]], k=5, modality="text")
                assert all(h.modality == "text" and h.id not in gone for h in filtered)
                searches[0] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(seed,)) for seed in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    assert searches[0] > 0
    assert store.count() == 300 + 200 and store.count("text") == 200
    if backend == "local":
        consistency = store.check_consistency()
        assert consistency["missing"] == consistency["extra"] == consistency["index_64_vs_512"] == 0


def test_snapshots_while_writing_leave_one_consistent_snapshot(tmp_path, unit_vectors):
    from index import VectorStore

    x = unit_vectors(600)
    errors: list[BaseException] = []
    with VectorStore.open(tmp_path) as store:

        def snapshotter() -> None:
            try:
                for _ in range(5):
                    store.snapshot()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=snapshotter) for _ in range(3)]
        for thread in threads:
            thread.start()
        for start in range(0, 600, 50):
            store.add_many([NewItem(v, "text") for v in x[start : start + 50]])
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors[0]
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.faiss")) == ["index512", "index64"]
    assert not list(tmp_path.glob("*.tmp"))
    with VectorStore.open(tmp_path) as store:
        assert store.info()["open"]["changes_applied"] == 0 and store.count() == 600

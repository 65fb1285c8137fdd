"""Crash: a child adding and deleting items is killed with SIGKILL mid-stream.

Every write it acknowledged (printed after the call returned) must be there
after reopening, and the FAISS indexes must agree with SQLite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from index import VectorStore
from index.errors import ItemNotFound

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from index import IndexConfig, NewItem, VectorStore

    def vector(i):
        v = np.random.default_rng(i).standard_normal(512).astype(np.float32)
        return v / np.linalg.norm(v)

    store = VectorStore.open(sys.argv[1], IndexConfig(snapshot_every=int(sys.argv[2])))
    print("open", flush=True)
    i = 0
    while True:
        if i % 5 == 4:
            store.add_many([NewItem(vector(j), "text", {"i": j}, f"item-{j}") for j in (i, i + 1)])
            print(f"add {i}", flush=True)
            print(f"add {i + 1}", flush=True)
            i += 2
        else:
            store.add(vector(i), modality="text", metadata={"i": i}, id=f"item-{i}")
            print(f"add {i}", flush=True)
            i += 1
        if i % 7 == 0:
            store.delete(f"item-{i - 3}")
            print(f"del {i - 3}", flush=True)
    """
)


def _vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize(("acks", "snapshot_every"), [(25, 1000), (150, 40)])
def test_acknowledged_writes_survive_sigkill(tmp_path, acks, snapshot_every):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(snapshot_every)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    lines: list[str] = []
    try:
        assert child.stdout.readline().strip() == "open"
        while len(lines) < acks:
            line = child.stdout.readline()
            assert line, "the child stopped before it was killed"
            lines.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    # whole lines printed before the kill were acknowledged too
    lines += [line + "\n" for line in rest.split("\n")[:-1]]
    added, deleted = set(), set()
    for line in lines:
        op, number = line.split()
        (added if op == "add" else deleted).add(int(number))
    assert deleted and deleted <= added

    with VectorStore.open(tmp_path) as store:
        consistency = store.check_consistency()
        assert consistency["missing"] == consistency["extra"] == 0
        assert consistency["index_64_vs_512"] == 0
        live = sorted(added - deleted)
        # at most the write in flight (up to two items) committed without being printed
        assert len(live) <= store.count() <= len(live) + 2
        for i in live:
            item = store.get(f"item-{i}")
            np.testing.assert_allclose(item.vector, _vector(i), atol=1e-6)
        for i in deleted:
            with pytest.raises(ItemNotFound):
                store.get(f"item-{i}")
        queries = np.stack([_vector(i) for i in live])
        for dims in (64, 512):
            tops = store.search_batch(queries, k=1, dims=dims)
            assert [hits[0].id for hits in tops] == [f"item-{i}" for i in live]
        returned = {h.id for hits in store.search_batch(queries, k=10) for h in hits}
        assert not returned & {f"item-{i}" for i in deleted}

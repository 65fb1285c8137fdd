"""Export and import: a collection moves from the local store to PostgreSQL and back, exactly."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from index import NewItem
from index.errors import DuplicateId, InvalidItem
from index.pg import PostgresConfig, PostgresStore
from index.transfer import TransferError, export_items, import_items


@pytest.fixture
def pg_store(postgres_url, request):
    schema = request.node.name.lower()[:50]
    store = PostgresStore.open(postgres_url, PostgresConfig(schema=schema))
    yield store
    store.close()


def _state(store):
    """Items by id: (modality, metadata) and the vectors (created_at is the import's time)."""
    items = sorted(store.list(limit=10_000), key=lambda item: item.id)
    fields = [(item.id, item.modality, item.metadata) for item in items]
    return fields, np.stack([item.vector for item in items])


def _same(a, b):
    assert a[0] == b[0]
    # stores re-normalise what they take: float32 rounding, nothing more
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-7)


def test_local_to_postgres_and_back_is_exact(open_local_store, pg_store, unit_vectors):
    local = open_local_store()
    x = unit_vectors(2500)
    local.add_many(
        [
            NewItem(v, "image" if i % 3 else "text", {"i": i, "tag": "é" if i % 2 else None})
            for i, v in enumerate(x)
        ]
    )
    exported = io.StringIO()
    assert export_items(local, exported, page=1000) == 2500
    lines = exported.getvalue().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"id", "modality", "metadata", "vector"} and len(first["vector"]) == 512
    assert import_items(pg_store, io.StringIO(exported.getvalue()), batch=700) == 2500
    _same(_state(pg_store), _state(local))
    back = io.StringIO()
    export_items(pg_store, back)
    again = open_local_store(name="again")
    import_items(again, io.StringIO(back.getvalue()))
    _same(_state(again), _state(local))
    query = unit_vectors(1, seed=4)[0]
    assert [h.id for h in again.search(query, k=10)] == [h.id for h in pg_store.search(query, k=10)]


def test_duplicates_fail_their_batch_unless_replacing(pg_store, unit_vectors):
    x = unit_vectors(3)
    pg_store.add(x[0], modality="text", id="a", metadata={"old": True})
    line = json.dumps({"id": "a", "modality": "audio", "metadata": {}, "vector": x[1].tolist()})
    with pytest.raises(DuplicateId, match="'a'"):
        import_items(pg_store, io.StringIO(line + "\n"))
    assert pg_store.get("a").metadata == {"old": True}
    assert import_items(pg_store, io.StringIO(line + "\n"), replace=True) == 1
    assert pg_store.get("a").modality == "audio"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"id": "x", "modality": "text"}', "line 2: missing vector"),
        ('{"id": "x", "modality": "text", "vector": [1, 2]}', "512 numbers, got 2"),
        ('{"id": "x", "modality": "text", "vector": "abc"}', "got str"),
    ],
)
def test_bad_lines_are_named(open_local_store, unit_vectors, line, message):
    store = open_local_store()
    good = json.dumps({"id": "g", "modality": "text", "vector": unit_vectors(1)[0].tolist()})
    with pytest.raises(TransferError, match=message):
        import_items(store, io.StringIO(f"{good}\n{line}\n"))
    assert store.count() == 0  # the bad line was found before the batch was written


def test_bad_item_fields_are_refused_by_the_store(open_local_store):
    line = json.dumps({"id": "", "modality": "text", "vector": np.ones(512).tolist()})
    with pytest.raises(InvalidItem, match="id must be"):
        import_items(open_local_store(), io.StringIO(line))

"""Bad input raises a clear, typed error and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexConfig, NewItem
from index.errors import (
    DuplicateId,
    InvalidItem,
    InvalidQuery,
    InvalidVector,
    ItemNotFound,
    StoreError,
)


@pytest.fixture
def store(open_store, unit_vectors):
    store = open_store(IndexConfig(max_k=100))
    store.add_many([NewItem(v, "text", {"i": i}, f"id{i}") for i, v in enumerate(unit_vectors(20))])
    return store


def _unchanged(store):
    """What a refused write must leave alone: counts and every item's id and update time."""
    info = store.info()
    items = [(item.id, item.updated_at) for item in store.list(limit=1000)]
    return info["count"], info["indexed"], items


def _nan_vector():
    v = np.ones(512, dtype=np.float32)
    v[7] = np.nan
    return v


BAD_VECTORS = [
    (np.ones(511), r"shape \(512,\), got \(511,\)"),
    (np.ones((1, 512)), r"shape \(512,\), got \(1, 512\)"),
    (np.ones(64), r"got \(64,\)"),
    (_nan_vector(), "NaN or infinity"),
    (np.full(512, np.inf), "NaN or infinity"),
    (np.zeros(512), "all zeros"),
    (np.array(["a"] * 512), "real numbers"),
    ("not a vector", "shape"),
]


@pytest.mark.parametrize(("vector", "message"), BAD_VECTORS)
def test_bad_vectors_are_rejected(store, unit_vectors, vector, message):
    before = _unchanged(store)
    with pytest.raises(InvalidVector, match=message):
        store.add(vector, modality="text", id="new")
    with pytest.raises(InvalidVector, match=message):
        store.upsert(vector, id="id3", modality="text")
    with pytest.raises(InvalidVector):
        store.add_many([NewItem(np.ones(512), "text", id="ok"), NewItem(vector, "text")])
    assert _unchanged(store) == before
    with pytest.raises(ItemNotFound):
        store.get("new")
    np.testing.assert_allclose(store.get("id3").vector, unit_vectors(20)[3], atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"modality": ""}, "modality"),
        ({"modality": 3}, "modality"),
        ({"modality": "x" * 65}, "modality"),
        ({"id": ""}, "id must be"),
        ({"id": 12}, "id must be"),
        ({"id": "a\nb"}, "control characters"),
        ({"id": "x" * 257}, "id must be"),
        ({"metadata": [1, 2]}, "JSON object"),
        ({"metadata": {"a": {1, 2}}}, "JSON-serialisable"),
        ({"metadata": {"a": float("nan")}}, "JSON-serialisable"),
        ({"metadata": {1: "a"}}, "keys must be strings"),
        ({"metadata": {"a": "x" * 70_000}}, "larger than"),
    ],
)
def test_bad_item_fields_are_rejected(store, unit_vectors, fields, message):
    before = _unchanged(store)
    kwargs = {"modality": "text", "metadata": None, "id": "new", **fields}
    with pytest.raises(InvalidItem, match=message):
        store.add(unit_vectors(1, seed=9)[0], **kwargs)
    assert _unchanged(store) == before


def test_unknown_and_duplicate_ids(store, unit_vectors):
    before = _unchanged(store)
    with pytest.raises(ItemNotFound, match="'nope'") as caught:
        store.get("nope")
    assert isinstance(caught.value, KeyError)
    with pytest.raises(ItemNotFound):
        store.delete("nope")
    with pytest.raises(DuplicateId, match="upsert"):
        store.add(unit_vectors(1)[0], modality="text", id="id0")
    with pytest.raises(InvalidItem):
        store.upsert(unit_vectors(1)[0], id=None, modality="text")
    assert _unchanged(store) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"k": 0}, InvalidQuery, r"k must be an int in \[1, 100\]"),
        ({"k": -3}, InvalidQuery, "k must be"),
        ({"k": 101}, InvalidQuery, "got 101"),
        ({"k": 10**12}, InvalidQuery, "k must be"),
        ({"k": 2.5}, InvalidQuery, "k must be"),
        ({"k": True}, InvalidQuery, "k must be"),
        ({"dims": 100}, InvalidQuery, r"dims must be one of \[64, 128, 256, 512\]"),
        ({"dims": "64"}, InvalidQuery, "dims must be"),
        ({"dims": 1024}, InvalidQuery, "dims must be"),
        ({"mode": "fuzzy"}, InvalidQuery, "mode must be"),
        ({"where": "i=1"}, InvalidQuery, "where must be a dict"),
        ({"where": {"i": [1]}}, InvalidQuery, "string, number, boolean or null"),
        ({"where": {"": 1}}, InvalidQuery, "where keys"),
        ({"where": {'a"b': 1}}, InvalidQuery, "where keys"),
        ({"where": {"i": float("nan")}}, InvalidQuery, "finite"),
        ({"modality": ""}, InvalidItem, "modality"),
    ],
)
def test_bad_search_arguments(store, unit_vectors, kwargs, error, message):
    with pytest.raises(error, match=message):
        store.search(unit_vectors(1)[0], **kwargs)


def test_bad_queries(store):
    with pytest.raises(InvalidVector, match="NaN"):
        store.search(_nan_vector())
    with pytest.raises(InvalidVector, match=r"shape \(512,\), got \(2, 512\)"):
        store.search(np.ones((2, 512)))
    with pytest.raises(InvalidVector, match=r"got \(511,\)"):
        store.search(np.ones(511))
    with pytest.raises(InvalidVector, match=r"\(N, 512\)"):
        store.search_batch(np.ones((3, 256)))
    with pytest.raises(InvalidVector, match="row 1"):
        store.search_batch(np.stack([np.ones(512), np.zeros(512)]))


def test_bad_list_arguments(store):
    with pytest.raises(InvalidQuery, match="limit"):
        store.list(limit=0)
    with pytest.raises(InvalidQuery, match="limit"):
        store.list(limit=10**6)
    with pytest.raises(InvalidQuery, match="offset"):
        store.list(offset=-1)
    with pytest.raises(InvalidQuery, match="offset"):
        store.list(offset=2**63)  # beyond SQLite's integers: was an OverflowError
    assert store.list(offset=2**63 - 1) == []
    with pytest.raises(InvalidItem, match="modality"):
        store.count(modality="")


def test_errors_are_value_errors_and_store_errors():
    for error in (InvalidVector, InvalidQuery, InvalidItem, DuplicateId):
        assert issubclass(error, ValueError) and issubclass(error, StoreError)
    assert issubclass(ItemNotFound, KeyError)


def test_closed_store_refuses_calls(open_store, unit_vectors):
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add(unit_vectors(1)[0], modality="text")
    with pytest.raises(StoreError, match="closed"):
        store.search(unit_vectors(1)[0])

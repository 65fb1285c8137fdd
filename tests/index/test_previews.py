"""Previews stored with items: written, replaced and deleted in the item's own transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index import NewItem, Preview, VectorStore
from index.errors import InvalidItem, ItemNotFound, PreviewNotFound
from index.sqlite_store import DB_NAME, SCHEMA_VERSION

THUMB = Preview(data=b"RIFF\x00\x00\x00\x00WEBPVP8 thumbnail", media_type="image/webp")
CLIP = Preview(data=b"ID3" + bytes(range(256)) * 4, media_type="audio/mpeg")


def _preview_bytes(store) -> int:
    """Bytes of previews the store holds (both backends count them the same way)."""
    return store.info()["preview_bytes"]


def test_add_get_preview_roundtrip(open_store, unit_vectors) -> None:
    store = open_store()
    v = unit_vectors(3, seed=1)
    store.add(v[0], modality="image", id="img", preview=THUMB)
    store.add(v[1], modality="audio", id="clip", preview=CLIP)
    store.add(v[2], modality="text", id="txt", metadata={"text": "hello"})
    assert store.get_preview("img") == THUMB
    assert store.get_preview("clip") == CLIP
    with pytest.raises(PreviewNotFound, match="'txt' has no preview"):
        store.get_preview("txt")
    with pytest.raises(ItemNotFound):
        store.get_preview("nobody")
    assert store.info()["preview_bytes"] == len(THUMB.data) + len(CLIP.data)
    # the item itself is unchanged by having a preview
    assert store.get("img").modality == "image" and store.get("img").metadata == {}


def test_add_many_keeps_each_items_preview(open_store, unit_vectors) -> None:
    store = open_store()
    v = unit_vectors(3, seed=2)
    ids = store.add_many(
        [
            NewItem(v[0], "image", preview=THUMB),
            NewItem(v[1], "text"),
            NewItem(v[2], "audio", preview=CLIP),
        ]
    )
    assert store.get_preview(ids[0]) == THUMB
    assert store.get_preview(ids[2]) == CLIP
    with pytest.raises(PreviewNotFound):
        store.get_preview(ids[1])


def test_delete_removes_the_preview(open_store, unit_vectors) -> None:
    store = open_store()
    v = unit_vectors(2, seed=3)
    store.add(v[0], modality="image", id="a", preview=THUMB)
    store.add(v[1], modality="image", id="b", preview=THUMB)
    store.delete("a")
    with pytest.raises(ItemNotFound):
        store.get_preview("a")
    assert _preview_bytes(store) == len(THUMB.data)
    assert store.get_preview("b") == THUMB


def test_upsert_replaces_or_removes_the_preview(open_store, unit_vectors) -> None:
    store = open_store()
    v = unit_vectors(3, seed=4)
    store.upsert(v[0], id="x", modality="image", preview=THUMB)
    store.upsert(v[1], id="x", modality="audio", preview=CLIP)
    assert store.get_preview("x") == CLIP
    store.upsert(v[2], id="x", modality="text")
    with pytest.raises(PreviewNotFound):
        store.get_preview("x")
    assert _preview_bytes(store) == 0


def test_failed_batch_stores_no_preview(open_store, unit_vectors) -> None:
    """A duplicate id rolls back the whole transaction, previews included."""
    store = open_store()
    v = unit_vectors(3, seed=5)
    store.add(v[0], modality="image", id="taken")
    with pytest.raises(ValueError, match="already exists"):
        store.add_many(
            [NewItem(v[1], "image", id="new", preview=THUMB), NewItem(v[2], "image", id="taken")]
        )
    with pytest.raises(ItemNotFound):
        store.get_preview("new")
    assert _preview_bytes(store) == 0


def test_previews_persist_across_reopen(tmp_path: Path, unit_vectors) -> None:
    with VectorStore.open(tmp_path / "d") as store:
        store.add(unit_vectors(1)[0], modality="audio", id="kept", preview=CLIP)
    with VectorStore.open(tmp_path / "d") as store:
        assert store.get_preview("kept") == CLIP


@pytest.mark.parametrize(
    ("preview", "message"),
    [
        ("not a preview", "must be a Preview"),
        (Preview(data=b"", media_type="image/webp"), "non-empty bytes"),
        (Preview(data=bytearray(b"xx"), media_type="image/webp"), "non-empty bytes"),
        (Preview(data=b"xx", media_type="webp"), "look like 'image/webp'"),
        (Preview(data=b"xx", media_type="image/we bp"), "look like 'image/webp'"),
        (Preview(data=b"xx", media_type="image/webp\n"), "look like 'image/webp'"),
    ],
)
def test_bad_previews_are_refused_and_store_nothing(
    open_store, unit_vectors, preview: object, message: str
) -> None:
    store = open_store()
    with pytest.raises(InvalidItem, match=message):
        store.add(unit_vectors(1)[0], modality="image", id="bad", preview=preview)  # type: ignore[arg-type]
    assert store.count() == 0


def test_oversized_preview_is_refused(open_store, unit_vectors, monkeypatch) -> None:
    monkeypatch.setattr("index.validation.MAX_PREVIEW_BYTES", 10)
    store = open_store()
    with pytest.raises(InvalidItem, match="11 bytes; the limit is 10"):
        store.add(unit_vectors(1)[0], modality="image", preview=Preview(b"x" * 11, "image/webp"))


def test_version_1_database_gains_previews(tmp_path: Path, unit_vectors) -> None:
    """A store written before previews existed opens, keeps its items and takes previews."""
    data = tmp_path / "old"
    with VectorStore.open(data) as store:
        store.add(unit_vectors(1, seed=6)[0], modality="image", id="old")
    with sqlite3.connect(data / DB_NAME) as conn:
        conn.execute("DROP TABLE previews")
        conn.execute("DROP TABLE documents")
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    with VectorStore.open(data) as store:
        assert store.get("old").modality == "image"
        with pytest.raises(PreviewNotFound):
            store.get_preview("old")
        store.upsert(store.get("old").vector, id="old", modality="image", preview=THUMB)
        assert store.get_preview("old") == THUMB
    with sqlite3.connect(data / DB_NAME) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version[0] == SCHEMA_VERSION == 3


def test_search_results_unaffected_by_previews(
    open_store: Callable[..., VectorStore], unit_vectors
) -> None:
    plain, with_previews = open_store(name="plain"), open_store(name="previews")
    v = unit_vectors(20, seed=7)
    plain.add_many([NewItem(x, "image", id=str(i)) for i, x in enumerate(v)])
    with_previews.add_many([NewItem(x, "image", id=str(i), preview=THUMB) for i, x in enumerate(v)])
    query = v[3] + 0.1 * v[5]
    query = query / np.linalg.norm(query)
    assert plain.search(query, k=5) == with_previews.search(query, k=5)

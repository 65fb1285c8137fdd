"""Documents: an item keeps its text, on both backends, and stores of older versions gain them."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from index import NewItem, Preview, VectorStore
from index.errors import InvalidItem
from index.pg import PostgresConfig, PostgresStore
from index.sqlite_store import DB_NAME
from index.transfer import export_items, import_items

POEM = "These days a chicken leg is a rare dish.\nÉté, 夏, \t and an emoji: 🐔"


def test_text_comes_back_from_get_list_and_search(open_store, unit_vectors):
    store = open_store()
    x = unit_vectors(4)
    store.add(x[0], modality="text", id="poem", text=POEM, metadata={"lang": "en"})
    store.add(
        x[1], modality="image", id="pic", text="a red hen", preview=Preview(b"w", "image/webp")
    )
    store.add_many([NewItem(x[2], "audio", id="clip"), NewItem(x[3], "text", id="t", text="x")])
    assert store.get("poem").text == POEM
    assert store.get("pic").text == "a red hen"
    assert store.get("clip").text is None
    assert {item.id: item.text for item in store.list()} == {
        "poem": POEM,
        "pic": "a red hen",
        "clip": None,
        "t": "x",
    }
    for dims, mode in [(512, "exact"), (64, "exact"), (512, "adaptive")]:
        hits = store.search(x[0], k=4, dims=dims, mode=mode)
        assert hits[0].id == "poem" and hits[0].text == POEM
        assert hits[0].metadata == {"lang": "en"}
        assert {h.id: h.text for h in hits} == {
            "poem": POEM,
            "pic": "a red hen",
            "clip": None,
            "t": "x",
        }
    (hits,) = store.search_batch(x[1][None, :], k=2, modality="image", where={})
    assert [(h.id, h.text) for h in hits] == [("pic", "a red hen")]
    unread = store.search(x[0], k=4, text=False)
    assert [h.text for h in unread] == [None] * 4
    assert [h.id for h in unread] == [h.id for h in store.search(x[0], k=4)]
    assert store.info()["text_bytes"] == sum(len(t.encode()) for t in (POEM, "a red hen", "x"))


def test_upsert_replaces_or_drops_the_text_and_delete_removes_it(open_store, unit_vectors):
    store = open_store()
    x = unit_vectors(2)
    store.add(x[0], modality="text", id="a", text="first")
    store.upsert(x[1], id="a", modality="text", text="second")
    assert store.get("a").text == "second"
    assert store.search(x[1], k=1)[0].text == "second"
    store.upsert(x[1], id="a", modality="text")
    assert store.get("a").text is None
    store.upsert(x[0], id="a", modality="text", text="third")
    store.delete("a")
    store.add(x[0], modality="text", id="a")
    assert store.get("a").text is None
    assert store.info()["text_bytes"] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"bytes", "text must be a string"),
        (42, "text must be a string"),
        ("nul\x00", "NUL"),
        ("half \ud800", "not valid Unicode"),
        ("x" * 11, "text is 11 characters; a stored text is at most 10"),
    ],
)
def test_bad_texts_are_refused_never_cut(open_store, unit_vectors, monkeypatch, text, message):
    monkeypatch.setattr("index.validation.MAX_TEXT_CHARS", 10)
    store = open_store()
    x = unit_vectors(2)
    with pytest.raises(InvalidItem, match=message):
        store.add_many([NewItem(x[0], "text", id="ok"), NewItem(x[1], "text", id="bad", text=text)])
    with pytest.raises(InvalidItem, match=message):
        store.upsert(x[1], id="bad", modality="text", text=text)
    assert store.count() == 0
    store.add(x[0], modality="text", text="x" * 10)  # at the limit: stored whole
    assert store.list()[0].text == "x" * 10


def test_a_version_2_sqlite_store_gains_documents_without_a_rebuild(tmp_path: Path, unit_vectors):
    """A store as the release before documents wrote it (schema 2) opens and serves."""
    data = tmp_path / "old"
    x = unit_vectors(3)
    with VectorStore.open(data) as store:
        store.add(x[0], modality="text", id="old", metadata={"n": 1})
        store.add(x[1], modality="image", id="pic", preview=Preview(b"webp", "image/webp"))
    with sqlite3.connect(data / DB_NAME) as conn:
        conn.execute("DROP TABLE documents")
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    with VectorStore.open(data) as store:
        report = store.info()["open"]
        assert not report["rebuilt"] and report["changes_applied"] == 0
        assert store.get("old").text is None and store.get("old").metadata == {"n": 1}
        assert store.get_preview("pic").data == b"webp"
        assert [(h.id, h.text) for h in store.search(x[0], k=1)] == [("old", None)]
        store.add(x[2], modality="text", id="new", text="kept now")
        assert store.search(x[2], k=1)[0].text == "kept now"
    with sqlite3.connect(data / DB_NAME) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version[0] == 3
    with VectorStore.open(data) as store:  # and it opens again as version 3
        assert store.get("new").text == "kept now" and store.count() == 3


def test_a_version_1_postgres_schema_gains_documents(postgres_url, unit_vectors):
    config = PostgresConfig(schema="docs_migration")
    x = unit_vectors(2)
    with PostgresStore.open(postgres_url, config) as store:
        store.add(x[0], modality="text", id="old", metadata={"n": 1})
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE docs_migration.mmembed_documents")
        conn.execute(
            "UPDATE docs_migration.mmembed_meta SET value = '1' WHERE key = 'schema_version'"
        )
    with PostgresStore.open(postgres_url, config) as store:
        assert store.get("old").text is None and store.get("old").metadata == {"n": 1}
        assert [(h.id, h.text) for h in store.search(x[0], k=1)] == [("old", None)]
        store.add(x[1], modality="text", id="new", text="kept now")
        assert store.search(x[1], k=1)[0].text == "kept now"
        store.delete("new")  # the cascade takes the document along
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute(
            "SELECT value FROM docs_migration.mmembed_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
        documents = conn.execute("SELECT count(*) FROM docs_migration.mmembed_documents")
        assert version == "2" and documents.fetchone()[0] == 0


def test_export_and_import_carry_the_text_across_backends(
    open_local_store, postgres_url, unit_vectors
):
    """local -> file -> PostgreSQL -> file -> local: every text arrives whole."""
    local = open_local_store()
    x = unit_vectors(30)
    texts = [POEM if i % 3 == 0 else None if i % 3 == 1 else f"caption {i}" for i in range(30)]
    local.add_many(
        [
            NewItem(v, "text" if i % 3 == 0 else "image", {"i": i}, f"id{i}", text=texts[i])
            for i, v in enumerate(x)
        ]
    )
    exported = io.StringIO()
    assert export_items(local, exported, page=7) == 30
    rows = [json.loads(line) for line in exported.getvalue().splitlines()]
    assert {row["id"]: row.get("text") for row in rows} == {f"id{i}": texts[i] for i in range(30)}
    assert all("text" not in row for row in rows if row["id"] == "id1")
    with PostgresStore.open(postgres_url, PostgresConfig(schema="docs_transfer")) as pg:
        assert import_items(pg, io.StringIO(exported.getvalue()), batch=8) == 30
        assert {item.id: item.text for item in pg.list()} == {f"id{i}": texts[i] for i in range(30)}
        assert pg.search(x[0], k=1)[0].text == POEM
        back = io.StringIO()
        export_items(pg, back)
        # replace=True upserts: the texts come along that path too
        changed = back.getvalue().replace("caption 2", "caption two")
        assert import_items(pg, io.StringIO(changed), replace=True) == 30
        assert pg.get("id2").text == "caption two"
    again = open_local_store(name="again")
    import_items(again, io.StringIO(back.getvalue()))
    assert {item.id: item.text for item in again.list()} == {f"id{i}": texts[i] for i in range(30)}
    assert again.search(x[3], k=1)[0].text == POEM


def test_import_refuses_a_text_that_is_not_a_string(open_local_store, unit_vectors):
    line = json.dumps({"id": "a", "modality": "text", "text": 5, "vector": [0.0] * 511 + [1.0]})
    with pytest.raises(ValueError, match="line 1: text must be a string, got int"):
        import_items(open_local_store(), io.StringIO(line + "\n"))

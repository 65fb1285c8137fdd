"""An index records which model made its vectors and refuses another model's queries."""

from __future__ import annotations

import sqlite3

import pytest

from index import NewItem
from index.errors import ModelMismatch
from index.items import ModelStamp

V1 = ModelStamp(name="audio-text-v1 1.0.0", fingerprint="a" * 64)
V2 = ModelStamp(name="audio-text-v1 1.1.0", fingerprint="b" * 64)


def test_first_model_is_recorded_and_kept_across_reopening(open_store, unit_vectors):
    store = open_store()
    assert store.model_stamp() is None
    assert store.bind_model(V1) is None
    store.add(unit_vectors(1)[0], modality="text")
    store.close()
    store = open_store()
    assert store.model_stamp() == V1
    assert store.bind_model(V1) == V1
    assert store.count() == 1


def test_another_model_is_refused_while_the_index_holds_vectors(open_store, unit_vectors):
    store = open_store()
    store.bind_model(V1)
    store.add_many([NewItem(v, "text") for v in unit_vectors(3)])
    with pytest.raises(ModelMismatch) as caught:
        store.bind_model(V2)
    message = str(caught.value)
    assert store.location in message
    assert "holds 3 vectors made by audio-text-v1 1.0.0 (weights aaaaaaaaaaaa)" in message
    assert "the model loaded now is audio-text-v1 1.1.0 (weights bbbbbbbbbbbb)" in message
    assert "re-embed" in message
    assert caught.value.items == 3
    assert store.model_stamp() == V1  # the refusal changed nothing


def test_an_emptied_index_takes_the_new_model(open_store, unit_vectors):
    store = open_store()
    store.bind_model(V1)
    item_id = store.add(unit_vectors(1)[0], modality="text")
    store.delete(item_id)
    assert store.bind_model(V2) == V1
    assert store.model_stamp() == V2
    store.add(unit_vectors(1)[0], modality="text")
    with pytest.raises(ModelMismatch):
        store.bind_model(V1)


def test_an_index_written_before_stamps_takes_the_first_model(open_local_store, unit_vectors):
    """Stores from before this check hold vectors of an unknown model: nothing to compare."""
    store = open_local_store()
    store.add_many([NewItem(v, "text") for v in unit_vectors(2)])
    store.close()
    store = open_local_store()
    assert store.bind_model(V2) is None
    assert store.model_stamp() == V2 and store.count() == 2


def test_binding_leaves_the_write_generation_alone(open_local_store, unit_vectors):
    """The generation tells a FAISS snapshot which writes it has seen; a stamp is not one."""
    store = open_local_store()
    store.add(unit_vectors(1)[0], modality="text")
    before = store.info()["generation"]
    store.bind_model(V1)
    assert store.info()["generation"] == before
    store.close()
    db = sqlite3.connect(store.data_dir / "items.sqlite3")
    try:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    finally:
        db.close()
    assert ModelStamp.from_json(value) == V1


def test_stamp_round_trips_through_json():
    assert ModelStamp.from_json(V1.to_json()) == V1
    assert str(V1) == "audio-text-v1 1.0.0 (weights aaaaaaaaaaaa)"


def test_a_model_whose_vectors_are_an_earlier_ones_takes_its_store_over(open_store, unit_vectors):
    store = open_store()
    store.bind_model(V1)
    store.add_many([NewItem(v, "text") for v in unit_vectors(2)])
    v2 = ModelStamp(
        name="image-audio-text-v2 2.0.0", fingerprint="c" * 64, adopts=(("a" * 64, ()),)
    )
    assert store.bind_model(v2) == V1
    assert store.model_stamp() == ModelStamp(v2.name, v2.fingerprint)  # restamped
    assert store.count() == 2
    with pytest.raises(ModelMismatch):  # the store is v2's now: v1 is refused
        store.bind_model(V1)
    other = ModelStamp(name="x", fingerprint="d" * 64, adopts=(("b" * 64, ()),))
    with pytest.raises(ModelMismatch):
        store.bind_model(other)


def test_a_model_that_changed_audio_only_takes_over_a_store_without_audio(open_store, unit_vectors):
    v3 = ModelStamp(
        name="image-audio-text-v3 3.0.0",
        fingerprint="e" * 64,
        adopts=(("a" * 64, ("audio",)),),
    )
    texts_only = open_store()
    texts_only.bind_model(V1)
    texts_only.add_many([NewItem(v, "text") for v in unit_vectors(2)])
    assert texts_only.bind_model(v3) == V1
    assert texts_only.model_stamp() == ModelStamp(v3.name, v3.fingerprint)
    with_audio = open_store(name="audio")
    with_audio.bind_model(V1)
    with_audio.add_many(
        [NewItem(v, m) for v, m in zip(unit_vectors(2), ("text", "audio"), strict=True)]
    )
    with pytest.raises(ModelMismatch, match="2 vectors"):
        with_audio.bind_model(v3)
    assert with_audio.model_stamp() == V1  # the refusal changed nothing

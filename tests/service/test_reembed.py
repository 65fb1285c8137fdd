"""Moving a store to a new model: every item embedded again from its text or preview."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from index import IndexConfig, NewItem, VectorStore
from index.errors import ModelMismatch
from model import Embedder
from model.config import PRESETS
from model.multimodal import MultimodalModel
from service.previews import PreviewLimits, audio_preview, image_preview
from service.reembed import reembed
from service.store import model_stamp

LIMITS = PreviewLimits(audio_seconds=2.0)


def _embedder(seed: int) -> Embedder:
    import torch

    torch.manual_seed(seed)
    return Embedder(MultimodalModel(PRESETS["tiny"]).eval(), preset_name="tiny")


def _wav(seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(16_000 * seconds)) / 16_000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000, format="WAV")
    return buf.getvalue()


@pytest.fixture
def old_store(tmp_path: Path) -> tuple[Path, Embedder]:
    """A store built with one tiny model: texts (one kept as metadata.text, as the page
    once did, one with no text at all), an image and two clips, all with previews."""
    old = _embedder(1)
    red = Image.new("RGB", (500, 300), (220, 20, 20))
    short, long = _wav(1.0), _wav(5.0, 880.0)
    store = VectorStore.open(tmp_path / "old", IndexConfig())
    store.bind_model(model_stamp(old.info))
    texts = old.embed_texts(["a red square", "rain tomorrow", "lost text"])
    images = old.embed_images([red])
    clips = old.embed_audio([np.zeros(16_000, np.float32)] * 2, sampling_rate=16_000)
    store.add_many(
        [
            NewItem(texts[0], "text", {"tag": "a"}, "t1", None, "a red square"),
            NewItem(texts[1], "text", {"text": "rain tomorrow"}, "t2", None, None),
            NewItem(texts[2], "text", {}, "t3", None, None),
            NewItem(images[0], "image", {"source": "red.png"}, "i1", image_preview(red, LIMITS)),
            NewItem(clips[0], "audio", {"duration_s": 1.0}, "a1", audio_preview(short, LIMITS)),
            NewItem(clips[1], "audio", {"duration_s": 5.0}, "a2", audio_preview(long, LIMITS)),
        ]
    )
    store.close()
    return tmp_path / "old", old


def test_media_stored_without_a_preview_is_named_not_guessed(tmp_path: Path) -> None:
    old, new = _embedder(1), _embedder(2)
    source = VectorStore.open(tmp_path / "old", IndexConfig())
    source.bind_model(model_stamp(old.info))
    clip = old.embed_audio([np.zeros(16_000, np.float32)], sampling_rate=16_000)[0]
    image = old.embed_images([Image.new("RGB", (64, 64), (0, 0, 200))])[0]
    source.add_many([NewItem(clip, "audio", {}, "a1"), NewItem(image, "image", {}, "i1")])
    target = VectorStore.open(tmp_path / "new", IndexConfig())
    target.bind_model(model_stamp(new.info))
    report = reembed(source, target, new, audio_preview_seconds=LIMITS.audio_seconds)
    assert report.skipped == [
        ("a1", "an audio item with no preview"),
        ("i1", "an image item with no preview"),
    ]
    assert target.count() == 0


def test_every_item_is_embedded_again_from_what_the_store_keeps(
    old_store: tuple[Path, Embedder], tmp_path: Path
) -> None:
    folder, old = old_store
    new = _embedder(2)
    source = VectorStore.open(folder, IndexConfig())
    target = VectorStore.open(tmp_path / "new", IndexConfig())
    target.bind_model(model_stamp(new.info))
    report = reembed(source, target, new, audio_preview_seconds=LIMITS.audio_seconds)
    assert report.from_text == 2 and report.from_preview == {"image": 1, "audio": 2}
    assert report.skipped == [("t3", "a text item stored without its text")]
    assert report.shortened_audio == 1  # a2 was 5 s; its preview keeps 2
    t1 = target.get("t1")
    assert t1.text == "a red square" and t1.metadata == {"tag": "a"}
    np.testing.assert_allclose(t1.vector, new.embed_texts(["a red square"])[0], atol=1e-5)
    np.testing.assert_allclose(
        target.get("t2").vector, new.embed_texts(["rain tomorrow"])[0], atol=1e-5
    )
    thumb = Image.open(io.BytesIO(target.get_preview("i1").data))
    np.testing.assert_allclose(target.get("i1").vector, new.embed_images([thumb])[0], atol=1e-5)
    assert not np.allclose(target.get("i1").vector, source.get("i1").vector, atol=1e-3)
    assert target.count() == 5 and source.count() == 6  # the source is only read
    with pytest.raises(ModelMismatch):
        source.bind_model(model_stamp(new.info))  # the old store still refuses new vectors
    source.close()
    target.close()


def _mmembed(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv], capture_output=True, text=True, timeout=300
    )


def test_the_command_moves_a_store_and_says_what_it_could_not_redo(
    old_store: tuple[Path, Embedder], tmp_path: Path
) -> None:
    folder, _ = old_store
    moved_dir = str(tmp_path / "moved")
    tiny = ("--preset", "tiny", "--torch-threads", "1")
    run = _mmembed("index", "reembed", *tiny, "--data-dir", str(folder), "--to-data-dir", moved_dir)
    assert run.returncode == 0, run.stderr
    assert "not redone t3: a text item stored without its text" in run.stderr
    assert "5 items embedded again: 2 from their text, 2 audio from their preview" in run.stderr
    moved = json.loads(_mmembed("index", "stats", "--data-dir", moved_dir).stdout)
    assert moved["count"] == 5 and moved["counts"] == {"audio": 2, "image": 1, "text": 2}
    same = _mmembed(
        "index", "reembed", *tiny, "--data-dir", str(folder), "--to-data-dir", str(folder)
    )
    assert same.returncode != 0 and "another folder or database" in same.stderr


def test_a_release_that_keeps_some_modalities_adopts_stores_without_the_others() -> None:
    info = {
        "model": "image-audio-text-v3",
        "version": "3.0.0",
        "trained": True,
        "weights_digest": "e" * 64,
        "encoders": {"image": "x", "audio": "y", "text": "z"},
        "same_vectors_as": [
            {"name": "v2", "fingerprint": "c" * 64, "modalities": ["image", "text"]},
            {"name": "v1", "fingerprint": "a" * 64, "modalities": ["text"]},
            {"name": "all", "fingerprint": "f" * 64, "modalities": ["image", "audio", "text"]},
        ],
    }
    stamp = model_stamp(info)
    assert stamp.adopts == (
        ("c" * 64, ("audio",)),
        ("a" * 64, ("audio", "image")),
        ("f" * 64, ()),  # keeps every modality: always taken over
    )


def _turned(old: Embedder, earlier: list[dict], turn: np.ndarray | None = None) -> Embedder:
    """``old`` with a prefix rotation (``turn``, else a random one), as a release listing
    ``earlier`` (the models whose stored vectors the rotation turns into its own)."""
    import dataclasses

    import torch

    from model.training.prefix_rotation import install_rotation, rotation_of

    model = MultimodalModel(dataclasses.replace(old.model.config, prefix_rotation=True)).eval()
    model.load_state_dict(old.model.state_dict(), strict=False)
    if turn is None:
        turn = rotation_of(torch.randn(512, 512, generator=torch.Generator().manual_seed(4)))
    install_rotation(model, torch.as_tensor(turn))
    new = Embedder(model, preset_name="tiny")
    new._release = {
        "name": "turned",
        "version": "1",
        "same_vectors_as": [],
        "rotated_from": earlier,
    }
    return new


def test_a_rotated_release_turns_stored_vectors_exactly_without_media(
    old_store: tuple[Path, Embedder], tmp_path: Path
) -> None:
    from service.reembed import rotation_for

    folder, old = old_store
    digest = old.info["weights_digest"]
    new = _turned(
        old, [{"name": "old 1", "fingerprint": digest, "modalities": ["image", "audio", "text"]}]
    )
    assert rotation_for(new, "f" * 64) is None and rotation_for(old, digest) is None
    rotation = rotation_for(new, digest)
    assert rotation is not None and rotation.name == "old 1"
    source = VectorStore.open(folder, IndexConfig())
    target = VectorStore.open(tmp_path / "new", IndexConfig())
    target.bind_model(model_stamp(new.info))
    report = reembed(
        source, target, new, audio_preview_seconds=LIMITS.audio_seconds, rotation=rotation
    )
    assert report.rotated == 6 and report.from_text == 0 and report.skipped == []  # t3 too
    assert "6 turned from their stored vectors by the rotation" in report.summary()
    turn = new.model.prefix_rotation.weight.numpy()
    for item in all_items_of(source):
        moved = target.get(item.id)
        np.testing.assert_allclose(moved.vector, turn @ item.vector, atol=1e-5)
        assert (moved.text, moved.metadata) == (item.text, item.metadata)
    # the same as embedding the media again with the new release
    np.testing.assert_allclose(
        target.get("t1").vector, new.embed_texts(["a red square"])[0], atol=1e-5
    )
    assert target.get_preview("i1").data == source.get_preview("i1").data
    source.close()
    target.close()


def test_a_rotation_for_some_modalities_embeds_the_others_again(
    old_store: tuple[Path, Embedder], tmp_path: Path
) -> None:
    from service.reembed import rotation_for

    folder, old = old_store
    new = _turned(
        old, [{"name": "old", "fingerprint": old.info["weights_digest"], "modalities": ["text"]}]
    )
    source = VectorStore.open(folder, IndexConfig())
    target = VectorStore.open(tmp_path / "new", IndexConfig())
    target.bind_model(model_stamp(new.info))
    report = reembed(
        source,
        target,
        new,
        audio_preview_seconds=LIMITS.audio_seconds,
        rotation=rotation_for(new, old.info["weights_digest"]),
    )
    assert report.rotated == 3 and report.from_preview == {"image": 1, "audio": 2}
    thumb = Image.open(io.BytesIO(target.get_preview("i1").data))
    np.testing.assert_allclose(target.get("i1").vector, new.embed_images([thumb])[0], atol=1e-5)
    source.close()
    target.close()


def test_a_release_turned_by_another_rotation_is_turned_by_both(
    old_store: tuple[Path, Embedder],
) -> None:
    """A store of a release that is the same model under an earlier rotation ``Q``
    (``turned_by``: 4.0.0 for a release that refits it) moves by ``R Qᵀ``, exactly."""
    from service.reembed import released_rotation, rotation_for

    _, old = old_store
    earlier = released_rotation("image-audio-text-v4")
    np.testing.assert_allclose(earlier @ earlier.T, np.eye(512), atol=1e-4)
    mid = _turned(old, [], turn=earlier)
    digest = mid.info["weights_digest"]
    entry = {"name": "mid 4", "fingerprint": digest, "modalities": ["image", "audio", "text"]}
    new = _turned(old, [entry | {"turned_by": "image-audio-text-v4"}])
    rotation = rotation_for(new, digest)
    assert rotation is not None and rotation.name == "mid 4"
    texts = ["a red square", "a dog barks"]
    stored, wanted = mid.embed_texts(texts), new.embed_texts(texts)
    for vector, expected in zip(stored, wanted, strict=True):
        np.testing.assert_allclose(rotation.turn(vector), expected, atol=1e-5)
    # without turned_by the earlier rotation would stay in: the vectors are not the new ones
    plain = rotation_for(_turned(old, [entry]), digest)
    assert plain is not None and not np.allclose(plain.turn(stored[0]), wanted[0], atol=1e-2)
    with pytest.raises(ValueError, match="no prefix rotation"):
        released_rotation("image-audio-text-v3")


def all_items_of(store: VectorStore) -> list:
    from service.reembed import all_items

    return list(all_items(store))


def test_the_command_turns_a_store_of_the_release_before_the_rotation(
    old_store: tuple[Path, Embedder], tmp_path: Path
) -> None:
    from model.checkpoint import save_checkpoint

    folder, old = old_store
    earlier = [
        {
            "name": "old 1",
            "fingerprint": old.info["weights_digest"],
            "modalities": ["image", "audio", "text"],
        }
    ]
    new = _turned(old, earlier)
    save_checkpoint(
        new.model,
        tmp_path / "turned",
        metadata={"release": "turned", "version": "1", "rotated_from": earlier},
    )
    moved_dir = str(tmp_path / "moved")
    run = _mmembed(
        "index",
        "reembed",
        "--checkpoint",
        str(tmp_path / "turned"),
        "--torch-threads",
        "1",
        "--data-dir",
        str(folder),
        "--to-data-dir",
        moved_dir,
    )
    assert run.returncode == 0, run.stderr
    assert "embedded by old 1: they are turned from their stored vectors" in run.stderr
    assert (
        "6 items embedded again: 0 from their text, 6 turned from their stored vectors"
        in run.stderr
    )
    source = VectorStore.open(folder, IndexConfig())
    moved = VectorStore.open(moved_dir, IndexConfig())
    turn = new.model.prefix_rotation.weight.numpy()
    np.testing.assert_allclose(moved.get("a2").vector, turn @ source.get("a2").vector, atol=1e-5)
    assert moved.model_stamp().fingerprint == new.info["weights_digest"]
    source.close()
    moved.close()

"""Adding folders of files to the index: what is found, what is added, what is skipped and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from index import VectorStore
from index.errors import PreviewNotFound
from model import Embedder
from service.app import load_embedder
from service.ingest import Skipped, find_files, ingest_files
from service.settings import Settings


@pytest.fixture
def folder(
    tmp_path: Path, png_bytes: bytes, png_bytes_2: bytes, jpeg_bytes: bytes, wav_bytes: bytes
):
    """photos/ with images, a sound, junk, a hidden file and a subfolder."""
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes)
    (root / "b.jpg").write_bytes(jpeg_bytes)
    (root / "c.wav").write_bytes(wav_bytes)
    (root / "notes.txt").write_text("shopping list: eggs, milk")
    (root / "broken.png").write_bytes(png_bytes[:60])
    (root / "empty.wav").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "trip" / "d.png").write_bytes(png_bytes_2)
    return root


def test_find_files_lists_a_folder_sorted_without_hidden_files(folder: Path) -> None:
    files, skipped = find_files([folder])
    names = [p.name for p in files]
    assert names == ["a.png", "b.jpg", "broken.png", "c.wav", "empty.wav", "notes.txt"]
    assert skipped == []
    deep, _ = find_files([folder], recursive=True)
    assert [p.relative_to(folder).as_posix() for p in deep][-1] == "trip/d.png"
    assert len(deep) == 7


def test_find_files_keeps_named_files_and_reports_missing_paths(folder: Path) -> None:
    files, skipped = find_files([folder / "c.wav", folder / "nope.png"])
    assert files == [folder / "c.wav"]
    assert skipped == [Skipped(folder / "nope.png", "no such file or folder")]


def test_ingest_adds_media_with_previews_and_skips_the_rest(
    folder: Path, tmp_path: Path, tiny_embedder: Embedder
) -> None:
    files, _ = find_files([folder], recursive=True)
    seen: list[Skipped] = []
    with VectorStore.open(tmp_path / "data") as store:
        report = ingest_files(
            store,
            tiny_embedder,
            files,
            settings=Settings(preset="tiny"),
            metadata={"album": "summer"},
            batch_size=2,
            on_skip=seen.append,
        )
        added = {
            path.relative_to(folder).as_posix(): modality for _, modality, path in report.added
        }
        assert added == {
            "a.png": "image",
            "b.jpg": "image",
            "c.wav": "audio",
            "trip/d.png": "image",
        }
        reasons = {s.path.name: s.reason for s in report.skipped}
        assert set(reasons) == {"broken.png", "empty.wav", "notes.txt"}
        assert "corrupt image" in reasons["broken.png"]
        assert reasons["empty.wav"] == "the file is empty"
        assert "unrecognised file type" in reasons["notes.txt"]
        assert seen == report.skipped  # reported as they happened, each once
        assert store.count() == 4
        for item_id, modality, path in report.added:
            item = store.get(item_id)
            assert item.metadata == {"album": "summer", "source": str(path)}
            preview = store.get_preview(item_id)
            assert preview.media_type == ("image/webp" if modality == "image" else "audio/mpeg")


def test_ingest_without_previews_stores_none(folder: Path, tmp_path: Path, tiny_embedder) -> None:
    with VectorStore.open(tmp_path / "data") as store:
        report = ingest_files(
            store,
            tiny_embedder,
            [folder / "a.png"],
            settings=Settings(preset="tiny", previews=False),
        )
        (item_id, _, _) = report.added[0]
        with pytest.raises(PreviewNotFound):
            store.get_preview(item_id)
        assert store.get(item_id).metadata == {"source": str(folder / "a.png")}


def test_ingest_skips_large_unreadable_and_unsupported_files(
    folder: Path, tmp_path: Path, png_bytes: bytes
) -> None:
    big = folder / "big.png"
    big.write_bytes(png_bytes + b"\x00")
    image_only = load_embedder(Settings(preset="tiny", modalities=["image"]))
    settings = Settings(preset="tiny", modalities=["image"], max_upload_bytes=len(png_bytes))
    with VectorStore.open(tmp_path / "data") as store:
        report = ingest_files(
            store,
            image_only,
            [big, folder / "trip", folder / "c.wav", folder / "a.png"],
            settings=settings,
        )
        assert [p.name for _, _, p in report.added] == ["a.png"]
        reasons = {s.path.name: s.reason for s in report.skipped}
        limit = len(png_bytes)
        assert reasons["big.png"] == (
            f"{limit + 1} bytes is over the {limit}-byte limit (MMEMBED_MAX_UPLOAD_BYTES)"
        )
        assert reasons["trip"].startswith("cannot read it: Is a directory")
        no_audio = ingest_files(
            store, image_only, [folder / "c.wav"], settings=Settings(modalities=["image"])
        )
        assert no_audio.added == []
        assert "audio" in no_audio.skipped[0].reason, no_audio.skipped
        assert store.count() == 1


def test_ingest_shows_a_progress_bar(folder: Path, tmp_path: Path, tiny_embedder, capsys) -> None:
    with VectorStore.open(tmp_path / "data") as store:
        ingest_files(
            store,
            tiny_embedder,
            [folder / "a.png", folder / "b.jpg"],
            settings=Settings(preset="tiny"),
            progress=True,
        )
    err = capsys.readouterr().err
    assert "adding" in err and "2/2" in err

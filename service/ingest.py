"""Adding files from disk to the index: single files or whole folders, with a progress bar.

`find_files` turns the paths a person typed into the files to read (folders
expanded, `recursive` descending into subfolders, hidden entries left out);
`ingest_files` reads, decodes, embeds and stores them in batches. A file that
cannot be used (unreadable, too large, not an image or audio file, corrupt, a
modality the model lacks) is skipped with its reason, so one bad file never
stops a folder of thousands; the caller decides how to report the skips.
Previews are made exactly as the HTTP API makes them, so items added here look
the same on the page.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from index import NewItem, VectorBackend
from model import Embedder
from model.errors import InvalidInput, MissingModality
from service.engine import Input, embed_batch
from service.errors import ServiceError
from service.inputs import RawInput, decode_input
from service.previews import PreviewLimits, make_preview
from service.settings import Settings

DEFAULT_BATCH = 16


@dataclass(frozen=True)
class Skipped:
    """A file that was not added, and why (a sentence for people)."""

    path: Path
    reason: str


@dataclass
class IngestReport:
    """What `ingest_files` did: (id, modality, path) per added item, and the skipped files."""

    added: list[tuple[str, str, Path]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class _Ready:
    path: Path
    data: bytes
    media: Input


def find_files(
    paths: Sequence[Path], *, recursive: bool = False
) -> tuple[list[Path], list[Skipped]]:
    """The files named or inside the folders named, in a stable order; and the paths skipped.

    A folder contributes its files (sorted by name), and with `recursive` those of its
    subfolders too; names starting with '.' are left out inside folders. A path that
    does not exist is skipped with a reason; so is a subfolder when not recursive.
    """
    files: list[Path] = []
    skipped: list[Skipped] = []
    for path in paths:
        if path.is_dir():
            _walk(path, recursive, files, skipped)
        elif path.exists():
            files.append(path)
        else:
            skipped.append(Skipped(path, "no such file or folder"))
    return files, skipped


def _walk(folder: Path, recursive: bool, files: list[Path], skipped: list[Skipped]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(folder, f"cannot list the folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            if recursive:
                _walk(path, recursive, files, skipped)
        elif entry.is_file():
            files.append(path)


def _read(path: Path, settings: Settings, loaded: Sequence[str]) -> _Ready | Skipped:
    """The file decoded (by the HTTP API's own checks), or why it cannot be used."""
    limit = settings.max_upload_bytes
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > limit:
                return Skipped(
                    path, f"{size} bytes is over the {limit}-byte limit (MMEMBED_MAX_UPLOAD_BYTES)"
                )
            data = file.read(limit + 1)
    except OSError as exc:
        return Skipped(path, f"cannot read it: {exc.strerror or exc}")
    if not data:
        return Skipped(path, "the file is empty")
    label = str(path)
    try:
        media = decode_input(RawInput(label, data=data), settings, loaded)
    except ServiceError as exc:
        return Skipped(path, exc.message.removeprefix(f"{label}: "))
    return _Ready(path, data, media)


def _store_batch(
    store: VectorBackend,
    embedder: Embedder,
    batch: list[_Ready],
    settings: Settings,
    metadata_for: Callable[[Path], dict[str, Any]],
    report: IngestReport,
) -> None:
    """Embed and store one batch of one modality; a failing batch is retried file by file."""
    try:
        vectors = embed_batch(embedder, batch[0].media.modality, [r.media.value for r in batch])
    except (InvalidInput, MissingModality) as exc:
        if len(batch) == 1:
            report.skipped.append(Skipped(batch[0].path, str(exc)))
            return
        for one in batch:
            _store_batch(store, embedder, [one], settings, metadata_for, report)
        return
    limits = PreviewLimits.from_settings(settings)
    items = [
        NewItem(
            vector=vector,
            modality=ready.media.modality,
            metadata=metadata_for(ready.path),
            preview=make_preview(
                ready.media.modality, ready.media.value, ready.data, limits, label=str(ready.path)
            )
            if settings.previews
            else None,
        )
        for ready, vector in zip(batch, vectors, strict=True)
    ]
    ids = store.add_many(items)
    report.added += [(i, r.media.modality, r.path) for i, r in zip(ids, batch, strict=True)]


def ingest_files(
    store: VectorBackend,
    embedder: Embedder,
    files: Iterable[Path],
    *,
    settings: Settings,
    metadata: dict[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: bool | None = None,
    on_skip: Callable[[Skipped], None] | None = None,
) -> IngestReport:
    """Decode, embed and store image and audio files in batches; skip what cannot be used.

    Each item's metadata is `source` (the file's path as found) plus `metadata`,
    whose own `source` wins if it has one. `progress` shows a tqdm bar on
    stderr (None: only on a terminal). `on_skip` is called for each skipped file as
    it happens. Store errors (a full disk, a locked store) are not skipped: they raise.
    """
    files = list(files)
    report = IngestReport()
    pending: dict[str, list[_Ready]] = {"image": [], "audio": []}

    def metadata_for(path: Path) -> dict[str, Any]:
        return {"source": str(path), **(metadata or {})}

    def flush(modality: str) -> None:
        if pending[modality]:
            _store_batch(store, embedder, pending[modality], settings, metadata_for, report)
            pending[modality] = []

    reported = 0

    def announce_skips() -> None:
        nonlocal reported
        for skip in report.skipped[reported:]:
            if on_skip is not None:
                on_skip(skip)
        reported = len(report.skipped)

    with tqdm(total=len(files), unit="file", desc="adding", disable=_quiet(progress)) as bar:
        for path in files:
            ready = _read(path, settings, embedder.modalities)
            if isinstance(ready, Skipped):
                report.skipped.append(ready)
            else:
                modality = ready.media.modality
                pending[modality].append(ready)
                if len(pending[modality]) >= batch_size:
                    flush(modality)
            announce_skips()
            bar.update(1)
        for modality in pending:
            flush(modality)
        announce_skips()
    return report


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None lets tqdm decide (off when stderr is not a terminal)."""
    return None if progress is None else not progress

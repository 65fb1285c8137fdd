"""Move a store to another model: every item embedded again from what the store keeps.

A store holds one model's vectors (its stamp refuses any other). A new release
that changes the vectors needs every item embedded again, and a store keeps
enough to do it without the original files:

- a text item: its document (``Item.text``; items added before stores kept
  documents may carry it in ``metadata.text``, which the page used to write);
- an image item: its preview, a WebP thumbnail (``preview_image_px`` on the
  longer side: the model sees 224 px, so little is lost; measured in
  docs/model.md);
- an audio item: its preview, the clip's first ``preview_audio_seconds`` as MP3
  (a longer clip is embedded from its beginning only: reported).

Where the new release is an earlier one turned by a prefix rotation
(model/prefix_rotation.py), the items of that earlier release need no media at
all: their stored vectors, turned by the rotation, are exactly the new ones
(:func:`rotation_for`).

Items are written, with their ids, metadata, documents and previews, to a
target store bound to the new model: the source is only read, so an
interrupted run is simply run again (items already there are replaced).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from index import Item, Preview
from index.errors import ItemNotFound, PreviewNotFound
from model.errors import InvalidInput

log = logging.getLogger("mmembed.reembed")

PAGE = 256


@dataclass
class ReembedReport:
    """What was embedded again, and from what; ``skipped`` lists ``(id, why)``."""

    from_text: int = 0
    from_preview: dict[str, int] = field(default_factory=dict)
    rotated: int = 0
    shortened_audio: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.from_text + sum(self.from_preview.values()) + self.rotated

    def summary(self) -> str:
        parts = [f"{self.done} items embedded again: {self.from_text} from their text"]
        if self.rotated:
            parts.append(f"{self.rotated} turned from their stored vectors by the rotation")
        parts += [f"{n} {m} from their preview" for m, n in sorted(self.from_preview.items())]
        line = ", ".join(parts)
        if self.shortened_audio:
            line += (
                f"; {self.shortened_audio} audio items were longer than their preview, and "
                "are embedded from its first seconds only"
            )
        if self.skipped:
            line += f"; {len(self.skipped)} could not be redone (listed above)"
        return line


def all_items(store: Any) -> Iterator[Item]:
    """Every item of a store, page by page (ids in the store's order)."""
    offset = 0
    while True:
        page = store.list(limit=PAGE, offset=offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += len(page)


def _document(item: Item) -> str | None:
    if item.text:
        return item.text
    legacy = item.metadata.get("text") if isinstance(item.metadata, dict) else None
    return legacy if isinstance(legacy, str) and legacy.strip() else None


def _decode_preview(preview: Preview) -> tuple[str, Any, float | None]:
    """(modality, decoded media, seconds for audio) of a stored preview."""
    if preview.media_type.startswith("image/"):
        with Image.open(io.BytesIO(preview.data)) as image:
            image.load()
            return "image", image.copy(), None
    if preview.media_type.startswith("audio/"):
        samples, rate = sf.read(io.BytesIO(preview.data), dtype="float32", always_2d=True)
        return "audio", (samples.mean(axis=1), rate), samples.shape[0] / rate
    raise ValueError(f"a {preview.media_type} preview cannot be embedded")


def rotation_for(embedder: Any, fingerprint: str | None) -> Rotation | None:
    """The turn that takes vectors stored by the model ``fingerprint`` to ``embedder``'s,
    and the modalities it holds for; None where none does.

    An entry of the release's ``rotated_from`` is a model whose vectors are this one's
    before its prefix rotation ``R``, so ``R`` turns them. One that names
    ``turned_by`` (a shipped release) is the same model turned by that release's
    rotation ``Q`` instead: ``R Qᵀ`` undoes ``Q`` and applies ``R``."""
    rotation = getattr(embedder.model, "prefix_rotation", None)
    if rotation is None or fingerprint is None:
        return None
    for earlier in embedder.info.get("rotated_from") or ():
        if earlier.get("fingerprint") == fingerprint and earlier.get("modalities"):
            matrix = rotation.weight.detach().cpu().numpy().astype(np.float32)
            if earlier.get("turned_by"):
                matrix = matrix @ released_rotation(str(earlier["turned_by"])).T
            return Rotation(matrix, frozenset(earlier["modalities"]), str(earlier.get("name")))
    return None


def released_rotation(name: str) -> np.ndarray:
    """The prefix rotation of the shipped release ``name`` (float32, D x D)."""
    from model.checkpoint import trainable_weights
    from model.release import release_path

    weights = trainable_weights(release_path(name))
    if "prefix_rotation.weight" not in weights:
        raise ValueError(f"the release {name} has no prefix rotation")
    return weights["prefix_rotation.weight"].numpy().astype(np.float32)


@dataclass(frozen=True)
class Rotation:
    """``matrix`` (D, D) turns the stored vectors of ``modalities`` of the release ``name``."""

    matrix: np.ndarray
    modalities: frozenset[str]
    name: str

    def turn(self, vector: np.ndarray) -> np.ndarray:
        turned = self.matrix @ vector.astype(np.float32)
        return turned / np.linalg.norm(turned)


def reembed(
    source: Any,
    target: Any,
    embedder: Any,
    *,
    audio_preview_seconds: float,
    on_item: Callable[[], None] | None = None,
    rotation: Rotation | None = None,
) -> ReembedReport:
    """Embed every item of ``source`` again with ``embedder`` into ``target``; items of
    ``rotation``'s modalities are turned from their stored vectors instead."""
    report = ReembedReport()
    modalities = set(embedder.modalities)
    for item in all_items(source):
        try:
            preview: Preview | None = source.get_preview(item.id)
        except (PreviewNotFound, ItemNotFound):
            preview = None
        try:
            if rotation is not None and item.modality in rotation.modalities:
                vector = rotation.turn(item.vector)
                report.rotated += 1
            else:
                vector = _embed_again(
                    item, preview, embedder, modalities, report, audio_preview_seconds
                )
        except (InvalidInput, ValueError, OSError, RuntimeError, sf.LibsndfileError) as exc:
            report.skipped.append((item.id, str(exc)))
            vector = None
        if vector is not None:
            target.upsert(
                vector,
                id=item.id,
                modality=item.modality,
                metadata=item.metadata,
                preview=preview,
                text=item.text,
            )
        if on_item is not None:
            on_item()
    return report


def _embed_again(
    item: Item,
    preview: Preview | None,
    embedder: Any,
    modalities: set[str],
    report: ReembedReport,
    audio_preview_seconds: float,
) -> np.ndarray | None:
    if item.modality not in modalities:
        report.skipped.append((item.id, f"the new model has no {item.modality} encoder"))
        return None
    if item.modality == "text":
        text = _document(item)
        if text is None:
            report.skipped.append((item.id, "a text item stored without its text"))
            return None
        report.from_text += 1
        return embedder.embed_texts([text])[0]
    if preview is None:
        article = "an" if item.modality[0] in "aeiou" else "a"
        report.skipped.append((item.id, f"{article} {item.modality} item with no preview"))
        return None
    modality, media, seconds = _decode_preview(preview)
    if modality != item.modality:
        raise ValueError(f"a {item.modality} item whose preview is {preview.media_type}")
    report.from_preview[modality] = report.from_preview.get(modality, 0) + 1
    if modality == "image":
        return embedder.embed_images([media])[0]
    samples, rate = media
    duration = item.metadata.get("duration_s") if isinstance(item.metadata, dict) else None
    if seconds is not None and seconds >= audio_preview_seconds - 0.5:
        if not isinstance(duration, int | float) or duration > seconds + 0.5:
            report.shortened_audio += 1
    return embedder.embed_audio([samples], sampling_rate=rate)[0]

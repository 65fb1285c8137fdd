"""Datasets of (media, caption) pairs for training and evaluation.

Three formats are read into one list of :class:`Pair`:

- a JSONL manifest, one object a line: ``{"image": path, "text": ...}`` or
  ``{"audio": path, "text": ...}`` (paths relative to the manifest's folder);
- COCO captions JSON (``images`` with ``id``/``file_name``, ``annotations``
  with ``image_id``/``caption``) with an image folder;
- an AudioCaps-style CSV (``audiocap_id,youtube_id,start_time,caption``, or
  any CSV with a ``caption`` column and a ``file_name``/``audio`` column) with
  an audio folder.

A malformed line, a missing file or an empty caption is reported with the
file and line it came from and skipped; media that cannot be decoded are
reported and skipped when loaded. Nothing is dropped silently: every skip
lands in a :class:`SkipReport` that is logged and returned.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

MEDIA_MODALITIES = ("image", "audio")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class DataError(ValueError):
    """A dataset file or sample that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Pair:
    """One training pair: a media file and its caption.

    ``origin`` says where the pair was declared, e.g. ``train.jsonl:12``.
    ``group`` identifies the caption's sentence, so clips of the same
    sentence (or captions of the same image) count as one item in retrieval.
    """

    modality: str
    path: Path
    text: str
    origin: str
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class SkipReport:
    """Samples that were skipped, with the reason for each."""

    reasons: list[str] = field(default_factory=list)

    def add(self, origin: str, reason: str) -> None:
        message = f"{origin}: {reason}"
        self.reasons.append(message)
        log.warning("skipped sample %s", message)

    def extend(self, other: SkipReport) -> None:
        self.reasons.extend(other.reasons)

    @property
    def count(self) -> int:
        return len(self.reasons)

    def summary(self, limit: int = 10) -> str:
        """One line per reason kind, then the first ``limit`` samples."""
        if not self.reasons:
            return "no samples skipped"
        kinds = Counter(r.split(": ", 1)[-1].split(":")[0] for r in self.reasons)
        head = ", ".join(f"{n} x {k}" for k, n in kinds.most_common())
        lines = [f"{self.count} samples skipped ({head})"]
        lines += [f"  {r}" for r in self.reasons[:limit]]
        if self.count > limit:
            lines.append(f"  ... and {self.count - limit} more")
        return "\n".join(lines)


@dataclass
class PairSet:
    """Pairs read from one or more sources, and what was skipped on the way."""

    pairs: list[Pair]
    skipped: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> Pair:
        return self.pairs[index]

    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({p.modality for p in self.pairs}))


def _check_caption(text: Any, origin: str) -> str:
    if not isinstance(text, str):
        raise DataError(f"{origin}: caption must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise DataError(f"{origin}: empty caption")
    return text


def _check_file(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise DataError(f"{origin}: missing file {path}")
    return path


def read_jsonl(path: str | Path, *, check_files: bool = True) -> PairSet:
    """Read a JSONL manifest of ``{"image"|"audio": path, "text": caption}`` lines.

    Raises :class:`DataError` if the manifest itself is missing; bad lines
    are reported in the returned set's ``skipped`` and left out.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise DataError(f"manifest not found: {manifest}")
    root = manifest.parent
    pairs: list[Pair] = []
    skipped = SkipReport()
    with manifest.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            origin = f"{manifest}:{lineno}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.add(origin, f"invalid JSON: {exc.msg}")
                continue
            try:
                pairs.append(_pair_from_record(record, root, origin, check_files))
            except DataError as exc:
                skipped.add(origin, str(exc).removeprefix(f"{origin}: "))
    if skipped.count:
        log.warning("%s: %s", manifest, skipped.summary())
    return PairSet(pairs, skipped)


def _pair_from_record(record: Any, root: Path, origin: str, check_files: bool) -> Pair:
    if not isinstance(record, dict):
        raise DataError(f"{origin}: expected a JSON object, got {type(record).__name__}")
    present = [m for m in MEDIA_MODALITIES if m in record]
    if len(present) != 1:
        raise DataError(f"{origin}: needs exactly one of 'image' or 'audio', got {present}")
    modality = present[0]
    if "text" not in record:
        raise DataError(f"{origin}: no 'text' field")
    text = _check_caption(record["text"], origin)
    raw = record[modality]
    if not isinstance(raw, str) or not raw:
        raise DataError(f"{origin}: '{modality}' must be a non-empty path")
    media = Path(raw) if Path(raw).is_absolute() else root / raw
    if check_files:
        _check_file(media, origin)
    group = str(record.get("sentence_id", record.get("group", text)))
    meta = {k: v for k, v in record.items() if k not in (modality, "text")}
    return Pair(modality, media, text, origin, group, meta)


def read_coco_captions(
    annotations: str | Path, image_dir: str | Path, *, check_files: bool = True
) -> PairSet:
    """Read COCO captions JSON (``captions_train2017.json`` style) with its image folder."""
    ann_path = Path(annotations)
    if not ann_path.is_file():
        raise DataError(f"COCO annotations not found: {ann_path}")
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann_path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{ann_path}: not COCO captions (needs 'images' and 'annotations')")
    images: dict[Any, str] = {}
    skipped = SkipReport()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            skipped.add(f"{ann_path}:images[{i}]", "needs 'id' and 'file_name'")
            continue
        images[image["id"]] = image["file_name"]
    root = Path(image_dir)
    pairs: list[Pair] = []
    for i, ann in enumerate(data["annotations"]):
        origin = f"{ann_path}:annotations[{i}]"
        try:
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise DataError(f"{origin}: needs 'image_id' and 'caption'")
            if ann["image_id"] not in images:
                raise DataError(f"{origin}: unknown image_id {ann['image_id']!r}")
            text = _check_caption(ann.get("caption"), origin)
            media = root / images[ann["image_id"]]
            if check_files:
                _check_file(media, origin)
        except DataError as exc:
            skipped.add(origin, str(exc).removeprefix(f"{origin}: "))
            continue
        pairs.append(
            Pair("image", media, text, origin, str(ann["image_id"]), {"id": ann.get("id")})
        )
    if skipped.count:
        log.warning("%s: %s", ann_path, skipped.summary())
    return PairSet(pairs, skipped)


def _audiocaps_candidates(row: dict[str, str]) -> list[str]:
    for key in ("file_name", "audio", "path", "filename"):
        if row.get(key):
            return [row[key]]
    stems: list[str] = []
    if row.get("audiocap_id"):
        stems.append(row["audiocap_id"])
    if row.get("youtube_id"):
        start = row.get("start_time", "")
        if start:
            stems.append(f"{row['youtube_id']}_{start}")
            stems.append(f"{row['youtube_id']}_{int(float(start))}")
        stems.append(row["youtube_id"])
    return [stem + ext for stem in stems for ext in AUDIO_EXTENSIONS]


def read_audiocaps_csv(
    csv_path: str | Path, audio_dir: str | Path, *, check_files: bool = True
) -> PairSet:
    """Read an AudioCaps-style CSV with its audio folder.

    The audio file of a row is its ``file_name``/``audio``/``path`` column if
    present, else ``{audiocap_id}.wav``, ``{youtube_id}_{start_time}.wav`` or
    ``{youtube_id}.wav`` (also .flac/.ogg/.mp3), the first that exists.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"CSV not found: {path}")
    root = Path(audio_dir)
    pairs: list[Pair] = []
    skipped = SkipReport()
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "caption" not in reader.fieldnames:
            raise DataError(f"{path}:1: header needs a 'caption' column, got {reader.fieldnames}")
        for row in reader:
            origin = f"{path}:{reader.line_num}"
            try:
                text = _check_caption(row.get("caption"), origin)
                try:
                    candidates = _audiocaps_candidates(row)
                except ValueError as exc:
                    raise DataError(f"{origin}: bad start_time {row.get('start_time')!r}") from exc
                if not candidates:
                    raise DataError(f"{origin}: no audio file column and no audiocap_id/youtube_id")
                media = next((root / c for c in candidates if (root / c).is_file()), None)
                if media is None:
                    if check_files:
                        raise DataError(f"{origin}: missing file {root / candidates[0]}")
                    media = root / candidates[0]
            except DataError as exc:
                skipped.add(origin, str(exc).removeprefix(f"{origin}: "))
                continue
            group = row.get("youtube_id") or row.get("audiocap_id") or str(media)
            pairs.append(Pair("audio", media, text, origin, group, {}))
    if skipped.count:
        log.warning("%s: %s", path, skipped.summary())
    return PairSet(pairs, skipped)


def read_dataset(spec: str, *, check_files: bool = True) -> PairSet:
    """Read a dataset from a spec string.

    ``path.jsonl`` (manifest), ``coco:captions.json:image_dir`` or
    ``audiocaps:file.csv:audio_dir``; several specs joined with ``+`` make a
    mixture (e.g. ``images.jsonl+audiocaps:train.csv:wavs``).
    """
    if "+" in spec:
        merged = PairSet([])
        for part in spec.split("+"):
            sub = read_dataset(part, check_files=check_files)
            merged.pairs.extend(sub.pairs)
            merged.skipped.extend(sub.skipped)
        return merged
    kind, _, rest = spec.partition(":")
    if kind == "coco":
        ann, _, folder = rest.partition(":")
        if not folder:
            raise DataError(f"dataset spec {spec!r}: expected coco:ANNOTATIONS.json:IMAGE_DIR")
        return read_coco_captions(ann, folder, check_files=check_files)
    if kind == "audiocaps":
        table, _, folder = rest.partition(":")
        if not folder:
            raise DataError(f"dataset spec {spec!r}: expected audiocaps:FILE.csv:AUDIO_DIR")
        return read_audiocaps_csv(table, folder, check_files=check_files)
    return read_jsonl(spec, check_files=check_files)


def load_audio(path: str | Path, origin: str = "", sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to float32 mono at ``sampling_rate``; shape (samples,).

    Raises :class:`DataError` naming ``origin`` if it cannot be read, is
    empty, or holds NaN/inf samples.
    """
    import soundfile as sf
    import soxr

    where = origin or str(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise DataError(f"{where}: unreadable audio {path}: {exc}") from exc
    audio = audio.mean(axis=1)
    if audio.size == 0:
        raise DataError(f"{where}: empty audio {path}")
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{where}: audio {path} has NaN or inf samples")
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_image(path: str | Path, origin: str = ""):
    """Decode an image file to an RGB ``PIL.Image`` (transparency on white, as
    :func:`model.imaging.on_white`); :class:`DataError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    from model.imaging import on_white

    where = origin or str(path)
    try:
        with Image.open(path) as img:
            return on_white(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"{where}: unreadable image {path}: {exc}") from exc


def load_media(pair: Pair) -> Any:
    """The decoded media of a pair: 16 kHz audio samples or an RGB image."""
    if pair.modality == "audio":
        return load_audio(pair.path, pair.origin)
    if pair.modality == "image":
        return load_image(pair.path, pair.origin)
    raise DataError(f"{pair.origin}: unknown modality {pair.modality!r}")

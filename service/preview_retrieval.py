"""What re-embedding from a preview costs in retrieval: `python -m service.preview_retrieval`.

`mmembed index reembed` embeds an image item again from its stored thumbnail
(service/previews.py: WebP, at most `preview_image_px` on its longer side),
and an audio item from its stored clip (MP3, the first `preview_audio_seconds`),
when the original file is gone. This measures what that costs: the release's
image->text and text->image R@1 on the picture test sets
(model/training/pictures.py, built by the image release recipe), and its
audio->text and text->audio R@1 on the spoken test sets (built by the audio-text
recipe), with every picture or clip embedded once from its original file and
once from the preview the service would have stored for it.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from model import Embedder
from model.imaging import on_white
from service.previews import PreviewLimits, audio_preview, image_preview


def read_manifest(folder: Path) -> list[dict]:
    """The picture manifest's rows (model/training/pictures.py), image paths made absolute."""
    rows = []
    for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        row["image"] = str(folder / row["image"])  # an absolute path stays as it is
        rows.append(row)
    return rows


def r1(queries: np.ndarray, gallery: np.ndarray) -> float:
    return float(np.mean((queries @ gallery.T).argmax(axis=1) == np.arange(len(queries))))


def thumbnail(path: str, limits: PreviewLimits) -> Image.Image:
    with Image.open(path) as original:
        preview = image_preview(on_white(original), limits)
    with Image.open(io.BytesIO(preview.data)) as stored:
        stored.load()
        return stored.copy()


def measure(embedder: Embedder, rows: list[dict], limits: PreviewLimits) -> dict[str, float]:
    """R@1 both ways from originals and from thumbnails (one picture per caption)."""
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["text"], row)
    picked = list(first.values())
    texts = embedder.embed_texts([r["text"] for r in picked])
    originals = []
    for r in picked:
        with Image.open(r["image"]) as image:
            originals.append(on_white(image))
    full = embedder.embed_images(originals)
    thumbs = embedder.embed_images([thumbnail(r["image"], limits) for r in picked])
    return {
        "pictures": len(picked),
        "original image->text": r1(full, texts),
        "thumbnail image->text": r1(thumbs, texts),
        "original text->image": r1(texts, full),
        "thumbnail text->image": r1(texts, thumbs),
        "mean cosine original vs thumbnail": float(np.mean(np.sum(full * thumbs, axis=1))),
    }


def measure_audio(embedder: Embedder, manifest: Path, limits: PreviewLimits) -> dict[str, float]:
    """R@1 both ways from the original clips and from their MP3 previews."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    texts = embedder.embed_texts([r["text"] for r in rows])
    originals, previews = [], []
    for row in rows:
        data = (manifest.parent / row["audio"]).read_bytes()
        originals.append(sf.read(io.BytesIO(data), dtype="float32"))
        stored = audio_preview(data, limits).data
        previews.append(sf.read(io.BytesIO(stored), dtype="float32"))

    def embed(clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        by_rate: dict[int, list[int]] = {}
        for i, (_, rate) in enumerate(clips):
            by_rate.setdefault(rate, []).append(i)
        out = np.zeros((len(clips), texts.shape[1]), np.float32)
        for rate, rows_at in by_rate.items():
            out[rows_at] = embedder.embed_audio([clips[i][0] for i in rows_at], rate)
        return out

    full, heard = embed(originals), embed(previews)
    return {
        "clips": len(rows),
        "original audio->text": r1(full, texts),
        "preview audio->text": r1(heard, texts),
        "original text->audio": r1(texts, full),
        "preview text->audio": r1(texts, heard),
        "mean cosine original vs preview": float(np.mean(np.sum(full * heard, axis=1))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, default=Path("data/pictures"))
    parser.add_argument(
        "--spoken",
        type=Path,
        default=Path("data/release/spoken"),
        help="folder of the spoken test sets (test-*.jsonl); skipped when absent",
    )
    parser.add_argument("--text-encoder", help="folder (default: the release's source)")
    parser.add_argument("--audio-encoder", help="folder (default: the release's source)")
    args = parser.parse_args(argv)
    encoders = {m: s for m, s in (("text", args.text_encoder), ("audio", args.audio_encoder)) if s}
    embedder = Embedder.from_pretrained(encoders=encoders)
    limits = PreviewLimits()
    rows = read_manifest(args.pictures)
    report = {
        split: measure(embedder, [r for r in rows if r["split"] == split], limits)
        for split in sorted({r["split"] for r in rows if r["split"].startswith("test_")})
    }
    for manifest in sorted(args.spoken.glob("test-*.jsonl")):
        report[manifest.stem] = measure_audio(embedder, manifest, limits)
    header = {"thumbnail_px": limits.image_px, "audio_preview_seconds": limits.audio_seconds}
    print(json.dumps({**header, **report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What re-embedding from a preview costs in retrieval: `python -m service.preview_retrieval`.

`mmembed index reembed` embeds an image item again from its stored thumbnail
(service/previews.py: WebP, at most `preview_image_px` on its longer side)
when the original file is gone. This measures what that costs: the release's
image->text and text->image R@1 on the picture test sets
(model/training/pictures.py, built by the image release recipe), with every
picture embedded once from its original file and once from the thumbnail the
service would have stored for it.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from model import Embedder
from model.imaging import on_white
from service.previews import PreviewLimits, image_preview


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, default=Path("data/pictures"))
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
    print(json.dumps({"thumbnail_px": limits.image_px, **report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What previews cost on disk: `python -m service.preview_cost [--items N]`.

Stores the same items twice in fresh stores, once with previews made by
`service.previews` at the default settings and once without, and prints the
preview sizes and the database growth per item. Inputs: espeak-ng speech (a
3 s sentence, and a 60 s passage cut to 30 s) and images (a 1024x768 drawing
with smooth areas and edges, and 1024x768 noise, the worst case for a codec).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from index import NewItem, VectorStore
from index.sqlite_store import DB_NAME
from service.previews import PreviewLimits, audio_preview, image_preview

PASSAGE = (
    "The quick brown fox jumps over the lazy dog while a small bird sings in the old oak "
    "tree, and far away a train whistles as it crosses the bridge over the quiet river. "
) * 6


def _speech(text: str) -> bytes:
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run(["espeak-ng", "-w", out.name, text], check=True, capture_output=True)
        return Path(out.name).read_bytes()


def _drawing(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (1024, 768), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = int(rng.integers(0, 1000)), int(rng.integers(0, 740))
        box = (x, y, x + int(rng.integers(20, 300)), y + int(rng.integers(20, 300)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    grain = rng.normal(0, 12, (768, 1024, 3))
    pixels = np.asarray(img.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64) + grain
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _noise(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob(f"{DB_NAME}*"))


def _growth(previews: list, items: int, root: Path, name: str) -> float:
    """Database bytes per item for `items` items cycling through `previews`."""
    vectors = np.random.default_rng(0).standard_normal((items, 512)).astype(np.float32)
    with VectorStore.open(root / name):
        pass
    empty = _db_bytes(root / name)
    with VectorStore.open(root / name) as store:
        store.add_many(
            [
                NewItem(vectors[i], "image", preview=previews[i % len(previews)])
                for i in range(items)
            ]
        )
    return (_db_bytes(root / name) - empty) / items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="items per store")
    args = parser.parse_args(argv)
    limits = PreviewLimits()
    kinds = {
        "image: 1024x768 drawing": [image_preview(_drawing(s), limits) for s in range(4)],
        "image: 1024x768 noise": [image_preview(_noise(s), limits) for s in range(2)],
        "audio: 3 s speech": [audio_preview(_speech("a small dog barks at the red ball"), limits)],
        "audio: 60 s speech": [audio_preview(_speech(PASSAGE), limits)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = _growth([None], args.items, root, "none")
        print(f"item without preview: {base / 1024:.1f} KiB per item in the database")
        for n, (label, previews) in enumerate(kinds.items()):
            size = np.mean([len(p.data) for p in previews])
            grown = _growth(previews, args.items, root, f"kind{n}") - base
            print(f"{label:26s} preview {size / 1024:6.1f} KiB, database +{grown / 1024:6.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Captioned-picture dataset builder: packaged clip art, emoji and drawn shapes.

Three real sources, each installable here, each with its licence:

- ``openclipart`` (Debian ``openclipart-png`` + ``openclipart-svg``, public
  domain): the PNG drawing, captioned from its SVG's metadata (title, and
  keywords where the title alone is a single word); the folder is its family
  (``transportation/boating``).
- ``openmoji`` (npm ``openmoji``, CC BY-SA 4.0): the colour SVG rendered with
  ``rsvg-convert``, captioned by its CLDR annotation; the group is its family.
  Skin-tone variants are left out (the same picture and caption five times).
- ``shapes`` (drawn here with Pillow): "a red circle" and the like, with the
  colour and shape in the caption and size, place and background at random.
  ImageNet has no words for colours or shapes, so this is what teaches them.

Whole families are held out for test (:data:`TEST_FAMILIES`): training never
reads an image of them, nor an image whose caption equals a test caption.
Captions are cleaned, never invented: authors' names, collection notes and file
name debris are removed, and a caption keeps only words the metadata has.

Writes ``manifest.jsonl`` (``{"image", "text", "source", "family", "split",
"licence"}``) under the output folder; ``image`` is absolute for packaged PNGs
and relative to the folder for rendered ones. Rendering resumes: an image
already written is kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import re
import shutil
import subprocess
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

log = logging.getLogger(__name__)

OPENCLIPART = Path("/usr/share/openclipart")
LICENCES = {
    "openclipart": "public domain (Debian openclipart-png/-svg)",
    "openmoji": "CC BY-SA 4.0 (npm openmoji)",
    "shapes": "generated (mmembed)",
}

# Families no training image comes from: two unseen test sets, one per source.
TEST_FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {
    "clipart": {"openclipart": ("transportation", "plants", "tools", "buildings", "electronics")},
    "emoji": {"openmoji": ("food-drink", "animals-nature", "activities")},
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 210, 20),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "black": (15, 15, 15),
    "pink": (245, 130, 190),
}
MAX_PER_CAPTION = 4
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")


@dataclass(frozen=True)
class Picture:
    """One image-caption pair of the manifest."""

    image: str
    text: str
    source: str
    family: str
    split: str = "train"

    @property
    def licence(self) -> str:
        return LICENCES[self.source]


# ------------------------------------------------------------------ captions

_AUTHOR = re.compile(r"^\s*clip\s*art\s+by\s+[^-]+-\s*", re.IGNORECASE)
_NOTES = re.compile(
    r"part of the flat icon collection.*$|architetto( francesco)?( rollandin)?|"
    r"\(?\b(?:mon|tue|wed|thu|fri|sat|sun) \w{3} \d+ \d{4}\)?",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def clean_caption(text: str) -> str:
    """Words only: no author prefix, collection notes, underscores or numbered file names."""
    text = _NOTES.sub(" ", _AUTHOR.sub("", text or ""))
    text = re.sub(r"[_\-+./]+", " ", text)
    words = [w for w in text.split() if _WORD.fullmatch(w.strip(",;:()!?\"'"))]
    words = [w.strip(",;:()!?\"'").lower() for w in words]
    return " ".join(w for w in words if w)


def caption_from(title: str, keywords: Sequence[str], family: str) -> str:
    """The title; with fewer than two words, the title and up to three keywords; then
    the folder's name. Empty where none has a word."""
    title = clean_caption(title)
    words = title.split()
    if len(words) >= 2:
        return title
    extra = []
    for keyword in keywords:
        k = clean_caption(keyword)
        if k and k not in words and k not in extra:
            extra.append(k)
    parts = [p for p in [title, *extra[:3]] if p]
    if not parts:
        leaf = clean_caption(family.rsplit("/", 1)[-1])
        parts = [leaf] if leaf else []
    return ", ".join(parts)


def normalise(caption: str) -> str:
    return " ".join(_WORD.findall(caption.lower()))


# ------------------------------------------------------------------ sources


def _svg_metadata(path: Path) -> tuple[str, list[str]]:
    """(title, keywords) of an openclipart SVG's cc:Work (any cc namespace)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return "", []
    for el in root.iter():
        if el.tag.endswith("}Work"):
            title = next((c.text or "" for c in el if c.tag.endswith("}title")), "")
            keywords = [
                li.text or ""
                for subject in el
                if subject.tag.endswith("}subject")
                for li in subject.iter()
                if li.tag.endswith("}li")
            ]
            return title, [k for k in keywords if k.strip()]
    return "", []


def _reasonable_size(path: Path, max_pixels: int = 40_000_000) -> bool:
    """Whether the PNG's header says at most ``max_pixels`` (a few drawings are
    rendered at 600M pixels, which no encoder needs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # header only
            with Image.open(path) as image:
                return image.width * image.height <= max_pixels
    except (OSError, Image.DecompressionBombError):
        return False


def openclipart_pictures(root: Path = OPENCLIPART) -> list[Picture]:
    """Every openclipart PNG that has an SVG beside it and a caption."""
    out = []
    for png in sorted((root / "png").rglob("*.png")):
        if not _reasonable_size(png):
            continue
        rel = png.relative_to(root / "png")
        family = str(rel.parent)
        title, keywords = _svg_metadata((root / "svg" / rel).with_suffix(".svg"))
        caption = caption_from(title, keywords, family)
        if caption:
            out.append(Picture(str(png), caption, "openclipart", family))
    return out


def openmoji_pictures(package: Path, out: Path) -> list[Picture]:
    """Every openmoji emoji without a skin tone, rendered to ``out/openmoji/HEX.png``."""
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        raise RuntimeError("rendering openmoji needs rsvg-convert (apt-get install librsvg2-bin)")
    folder = out / "openmoji"
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader((package / "data" / "openmoji.csv").open(encoding="utf-8")))
    pictures = []
    for row in tqdm(rows, desc="openmoji", unit="emoji", mininterval=5):
        if row["skintone"] or row["group"] == "component":
            continue
        svg = package / "color" / "svg" / f"{row['hexcode']}.svg"
        caption = clean_caption(row["annotation"])
        if not svg.is_file() or not caption:
            continue
        png = folder / f"{row['hexcode']}.png"
        if not png.is_file():
            tmp = png.with_suffix(".tmp.png")
            subprocess.run(
                [rsvg, "-w", "256", "-h", "256", "-b", "white", "-o", str(tmp), str(svg)],
                check=True,
                capture_output=True,
            )
            tmp.replace(png)
        pictures.append(
            Picture(str(png.relative_to(out)), caption, "openmoji", row["group"] or "other")
        )
    return pictures


def draw_shape(colour: str, shape: str, rng: random.Random, size: int = 256) -> Image.Image:
    """One ``colour`` ``shape`` on a plain light background, at a random size and place."""
    bg = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.22, 0.42) * size
    cx, cy = (rng.uniform(r + 4, size - r - 4) for _ in range(2))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(4, int(r / 4)))
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        w = r / 3
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return image


def shape_pictures(out: Path, per_pair: int, seed: int) -> list[Picture]:
    """``per_pair`` drawings of every colour and shape, written to ``out/shapes/``."""
    folder = out / "shapes"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pictures = []
    for colour in COLOURS:
        for shape in SHAPES:
            for i in range(per_pair):
                path = folder / f"{colour}-{shape}-{i}.png"
                image = draw_shape(colour, shape, rng)
                if not path.is_file():
                    image.save(path)
                pictures.append(
                    Picture(str(path.relative_to(out)), f"a {colour} {shape}", "shapes", "shapes")
                )
    return pictures


# ------------------------------------------------------------------ splits


def _test_set_of(picture: Picture) -> str | None:
    top = picture.family.split("/", 1)[0]
    for name, sources in TEST_FAMILIES.items():
        if top in sources.get(picture.source, ()):
            return name
    return None


def split_pictures(
    pictures: Iterable[Picture], *, n_val: int, n_test: int, seed: int
) -> list[Picture]:
    """Test sets from :data:`TEST_FAMILIES` (one image per caption, at most ``n_test``),
    ``n_val`` validation pictures from the training families, the rest train. A training
    picture whose caption equals a test caption is dropped."""
    rng = random.Random(seed)
    tests: dict[str, list[Picture]] = {name: [] for name in TEST_FAMILIES}
    train: list[Picture] = []
    for p in pictures:
        name = _test_set_of(p)
        (tests[name] if name else train).append(p)
    out: list[Picture] = []
    test_captions: set[str] = set()
    for name, items in tests.items():
        rng.shuffle(items)
        seen: set[str] = set()
        kept = []
        for p in items:
            key = normalise(p.text)
            if key and key not in seen:
                seen.add(key)
                kept.append(dataclass_replace(p, split=f"test_{name}"))
        out += kept[:n_test]
        test_captions |= seen
    rng.shuffle(train)
    # At most MAX_PER_CAPTION training images share a caption ("lemon svg theme"
    # names hundreds of icons, which teach nothing but crowd every batch).
    per_caption: dict[str, int] = {}
    kept_train = []
    for p in train:
        key = normalise(p.text)
        if key in test_captions or per_caption.get(key, 0) >= MAX_PER_CAPTION:
            continue
        per_caption[key] = per_caption.get(key, 0) + 1
        kept_train.append(p)
    train = kept_train
    # Validation: one image per caption too, so that R@1 is well defined there.
    val, seen_val = [], set()
    for p in train:
        if len(val) >= n_val:
            break
        key = normalise(p.text)
        if p.source != "shapes" and key not in seen_val:
            seen_val.add(key)
            val.append(p)
    val_ids = {id(p) for p in val}
    out += [dataclass_replace(p, split="val") for p in val]
    out += [p for p in train if id(p) not in val_ids and normalise(p.text) not in seen_val]
    return out


def dataclass_replace(p: Picture, **changes: str) -> Picture:
    return Picture(**{**asdict(p), **changes})


def build_picture_dataset(
    out: Path,
    *,
    openmoji: Path | None,
    shapes_per_pair: int = 12,
    n_val: int = 300,
    n_test: int = 500,
    seed: int = 0,
) -> list[Picture]:
    """Collect, render and split every source; write ``out/manifest.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    pictures = openclipart_pictures()
    log.info("openclipart: %d captioned drawings", len(pictures))
    if openmoji is not None:
        emoji = openmoji_pictures(openmoji, out)
        log.info("openmoji: %d emoji", len(emoji))
        pictures += emoji
    pictures += shape_pictures(out, shapes_per_pair, seed)
    split = split_pictures(pictures, n_val=n_val, n_test=n_test, seed=seed)
    tmp = out / "manifest.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for p in split:
            f.write(json.dumps({**asdict(p), "licence": p.licence}, ensure_ascii=False) + "\n")
    tmp.replace(out / "manifest.jsonl")
    counts: dict[str, int] = {}
    for p in split:
        counts[p.split] = counts.get(p.split, 0) + 1
    log.info("pictures: %s -> %s", counts, out / "manifest.jsonl")
    return split


def read_manifest(folder: Path) -> list[dict]:
    """The manifest's rows, each with ``image`` made absolute."""
    rows = []
    with (folder / "manifest.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            path = Path(row["image"])
            row["image"] = str(path if path.is_absolute() else folder / path)
            rows.append(row)
    return rows


def speak_test_captions(folder: Path, *, seed: int = 0, noise_prob: float = 0.3) -> dict[str, int]:
    """Every test caption spoken once by the held-out voices (model/training/spoken.py),
    for audio->image: ``folder/spoken/test_NAME.jsonl`` of ``{"audio", "text"}`` lines.
    Clips already written are kept, so an interrupted run resumes."""
    import soundfile as sf

    from model.constants import SAMPLE_RATE
    from model.training.spoken import HELD_OUT_VOICES, sample_params, synthesize

    rows = [r for r in read_manifest(folder) if r["split"].startswith("test_")]
    counts: dict[str, int] = {}
    records: dict[str, list[dict]] = {}
    rng = random.Random(seed)
    for i, row in enumerate(tqdm(rows, desc="spoken captions", unit="clip", mininterval=5)):
        params = sample_params(rng, HELD_OUT_VOICES, noise_prob)
        rel = Path("spoken") / row["split"] / f"{i:05d}.wav"
        path = folder / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = synthesize(row["text"], params, seed=seed + i)
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
            tmp.replace(path)
        records.setdefault(row["split"], []).append(
            {"audio": str(rel), "text": row["text"], "voice": params.voice}
        )
    for split, items in records.items():
        with (folder / f"spoken-{split}.jsonl").open("w", encoding="utf-8") as f:
            for record in items:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts[split] = len(items)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("data/pictures"))
    parser.add_argument("--openmoji", type=Path, help="the unpacked npm package folder")
    parser.add_argument("--shapes-per-pair", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--speak", action="store_true", help="also speak the test captions (held-out voices)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build_picture_dataset(
        args.out,
        openmoji=args.openmoji,
        shapes_per_pair=args.shapes_per_pair,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
    )
    if args.speak:
        log.info("spoken test captions: %s", speak_test_captions(args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

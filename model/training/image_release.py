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

import dataclasses
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.training.features import FeatureCache
from model.training.image_branch import (
    BRANCH_IMAGE_PARTS,
    CachedImages,
    ImageTrainSpec,
    embed_images,
    fit_label_prior,
    load_cached,
    main_text,
    report_baseline,
    report_split,
    train_image_path,
    train_mean_pool_baseline,
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
    from model.training.pipeline import recipe_has_table

    return recipe_has_table(path, "image_release")


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


def build_pictures(recipe: ImageRecipe) -> None:
    """The picture manifest and the spoken test captions (each kept where already made)."""
    p = recipe.pictures
    build_picture_dataset(
        Path(recipe.release.root),
        openmoji=fetch_openmoji(Path(p.openmoji)),
        shapes_per_pair=p.shapes_per_pair,
        n_val=p.n_val,
        n_test=p.n_test,
        seed=p.seed,
    )
    speak_test_captions(Path(recipe.release.root), seed=p.seed)


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


def _splits(root: Path, model: Any, only: Sequence[str] | None = None) -> dict[str, CachedImages]:
    """The pictures' cached features by split (``only`` those splits, when named)."""
    cache = str(root / "features")
    images = FeatureCache.for_model(cache, model, "image")
    texts = FeatureCache.for_model(cache, model, "text")
    by_split: dict[str, list[dict]] = {}
    for row in read_manifest(root):
        if only is None or row["split"] in only:
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
    cache_spoken(root, model)


def cache_spoken(root: Path, model: Any) -> None:
    """Whisper features of the spoken test captions."""
    from model.training.data import read_jsonl
    from model.training.features import cache_pairs

    for split in TEST_SPLITS:
        spoken = read_jsonl(root / f"spoken-{split}.jsonl").pairs
        cache_pairs(model, root / "features", spoken, batch_size=16)


def evaluate_images(root: Path, model: Any, spec: ImageTrainSpec | None = None) -> dict[str, Any]:
    """image<->text on each test split (model at 64 and 512 dims, label cascade, and the
    mean-pool baseline trained here with ``spec`` when given), and audio->image with the
    spoken captions against text->image on the same galleries."""
    from model.training.data import read_jsonl
    from model.training.evaluate import embed_cached
    from model.training.features import FeatureCache, item_id, text_item_id

    device = torch.device("cpu")
    texts = FeatureCache.for_model(str(root / "features"), model, "text")
    audio = FeatureCache.for_model(str(root / "features"), model, "audio")
    data = _splits(root, model)
    baseline = None
    if spec is not None:
        baseline, _ = train_mean_pool_baseline(model, data["train"], data["val"], spec)
    results: dict[str, Any] = {}
    for split in ("val", *TEST_SPLITS):
        d = data[split]
        ids = [text_item_id(t) for t in d.texts]
        text_vectors = embed_cached(model, "text", texts, ids, device)
        entry = report_split(model, d, text_vectors)
        if baseline is not None:
            entry["baseline"] = report_baseline(model, baseline, d)
        if split in TEST_SPLITS:
            spoken = read_jsonl(root / f"spoken-{split}.jsonl").pairs
            entry["audio->image"] = spoken_to_image(
                model,
                d,
                [p for p in spoken if item_id(p) in audio],
                text_vectors,
                lambda kept: embed_cached(
                    model, "audio", audio, [item_id(p) for p in kept], device
                ),
            )
        results[split] = entry
    return results


def spoken_to_image(
    model: Any,
    data: CachedImages,
    spoken: Sequence[Any],
    text_vectors: np.ndarray,
    embed: Callable[[list[Any]], np.ndarray],
) -> dict[str, Any]:
    """R@1/R@5 of each spoken caption finding its image among the split's images (one per
    caption), at 512 and 64 dims, beside the typed caption's on the same gallery.

    ``spoken``: clips (each with ``.text``); those whose caption is not in the split
    are left out. ``embed``: the vectors (N, 512) of the clips kept, in order (the
    speech path from cached features, or the served vectors, transcript and all).
    """
    from model.matryoshka import truncate
    from model.training.evaluate import first_relevant_ranks, metrics_from_ranks

    group_of = {t: int(g) for t, g in zip(data.texts, data.groups, strict=True)}
    kept = [p for p in spoken if p.text in group_of]
    clips = embed(kept)
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
    """Train the image path of each branch (the locked one first), or load what an earlier
    run trained; then choose the images' blend weight on the validation pictures."""
    runs = Path(recipe.release.runs)
    runs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.train.threads)
    data = _splits(Path(recipe.release.root), model)
    logs: dict[str, Any] = {}
    for branch in ("locked", "main"):
        parts, summary = runs / f"{branch}_parts.pt", runs / f"{branch}.json"
        if parts.is_file() and summary.is_file():
            log.info("the %s image path is trained already (%s)", branch, parts)
            state = torch.load(parts, weights_only=True)
            wanted = BRANCH_IMAGE_PARTS[branch]
            model.load_state_dict(
                {k: v for k, v in state.items() if k.startswith(wanted)}, strict=False
            )
            logs[branch] = json.loads(summary.read_text())
            continue
        targets = None
        if branch == "main":
            texts = FeatureCache.for_model(
                str(Path(recipe.release.root) / "features"), model, "text"
            )
            targets = (
                main_text(model, texts, data["train"].texts),
                main_text(model, texts, data["val"].texts),
            )
        logs[branch] = train_image_path(
            model, data["train"], data["val"], recipe.train, branch=branch, targets=targets
        )
        wanted = BRANCH_IMAGE_PARTS[branch]
        torch.save({n: t for n, t in model.state_dict().items() if n.startswith(wanted)}, parts)
        summary.write_text(json.dumps(logs[branch], indent=2) + "\n")
    logs["image_weight"] = choose_image_weight(model, data["val"], Path(recipe.release.root))
    return logs


IMAGE_WEIGHTS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose_image_weight(model: Any, val: CachedImages, root: Path) -> dict[str, Any]:
    """The locked part's weight in image vectors with the best validation image->text R@1
    at 512 dims (ties: the higher weight); sets it on the model and its config."""
    from model.training.evaluate import embed_cached
    from model.training.features import text_item_id

    texts = FeatureCache.for_model(str(root / "features"), model, "text")
    text_vectors = embed_cached(
        model, "text", texts, [text_item_id(t) for t in val.texts], torch.device("cpu")
    )
    scores = {}
    for weight in IMAGE_WEIGHTS:
        set_image_weight(model, weight)
        entry = report_split(model, val, text_vectors, dims=(512,))
        scores[weight] = entry["model"]["image->text"]["512"]["R@1"]
    best = max(IMAGE_WEIGHTS, key=lambda w: (scores[w], w))
    set_image_weight(model, best)
    log.info("image weight %.1f (validation image->text R@1 by weight: %s)", best, scores)
    return {"chosen": best, "val_r1": {str(w): r for w, r in scores.items()}}


def set_image_weight(model: Any, weight: float) -> None:
    blend = dataclasses.replace(model.config.blend, image_weight=weight)
    model.config = dataclasses.replace(model.config, blend=blend)
    model.locked_branch.blend = blend


def same_vectors(recipe: ImageRecipe, model: Any, sources: dict[str, str]) -> list[dict]:
    """The base release, when this model's audio and text vectors are the base's bit for bit
    (checked on real inputs), so that stores it filled are taken over with no re-embed."""
    from model.checkpoint import load_model, read_checkpoint_config

    if model.config.blend.prefix_main is not None:
        return []
    base = load_model(recipe.release.base, encoder_overrides=sources)
    texts = ["a red circle", "The weather will be cold and windy tomorrow."]
    t = np.arange(24_000) / 16_000
    clips = [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220.0, 660.0)]
    with torch.inference_mode():
        for modality, raw in (("text", texts), ("audio", clips)):
            ours = model(modality, model.preprocess(modality, raw), with_llm_tokens=False)
            theirs = base(modality, base.preprocess(modality, raw), with_llm_tokens=False)
            if not torch.equal(ours.embedding, theirs.embedding):
                log.warning("%s vectors differ from the base release's", modality)
                return []
    meta = read_checkpoint_config(recipe.release.base).get("metadata", {})
    name = f"{meta.get('release', recipe.release.base)} {meta.get('version', '')}".strip()
    return [{"name": name, "fingerprint": base.weights_digest(), "modalities": ["audio", "text"]}]


def export_stage(
    recipe: ImageRecipe,
    checkpoint: Path,
    model: Any,
    results: dict[str, Any],
    training: dict[str, Any],
    sources: dict[str, str],
) -> Path:
    """The fp16 release folder of ``checkpoint`` (``model``, saved; at most 20 MB) and its
    model card."""
    from model.training.export import export_release
    from model.training.image_card import write_image_card

    out = export_release(
        checkpoint,
        recipe.release.out,
        name=recipe.release.name,
        version=recipe.release.version,
        hub_ids=recipe.release.hub_ids,
        weights_from=recipe.release.base,
        extra={
            "eval": results,
            "image_training": training,
            "recipe": recipe.source,
            "base": recipe.release.base,
            "same_vectors_as": same_vectors(recipe, model, sources),
        },
    )
    write_image_card(out)
    return out


def evaluate_all(
    recipe: ImageRecipe,
    checkpoint: Path,
    model: Any,
    sources: dict[str, str],
    *,
    baseline: bool = True,
):
    """Images (model/training/image_release.py) and the base recipe's audio-text test sets
    and neighbourhoods, measured on ``checkpoint`` as :func:`evaluate_release` does."""
    from model.training.pipeline import evaluate_release, read_release_recipe

    spec = recipe.train if baseline else None
    images = evaluate_images(Path(recipe.release.root), model, spec)
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
    build_pictures(recipe)
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
    export_stage(recipe, checkpoint, model, results, training, sources)
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
    build_pictures(recipe)
    model = load_model(target, encoder_overrides=sources)
    from model.training.data import read_jsonl
    from model.training.features import cache_pairs

    needed = [q for q in read_jsonl(root / "manifest.jsonl").pairs if q.meta["split"] != "train"]
    cache_pairs(model, root / "features", needed, batch_size=16)
    cache_spoken(root, model)
    results = evaluate_all(recipe, target, model, sources, baseline=False)
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

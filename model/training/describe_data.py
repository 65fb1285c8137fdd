"""What the LLM projector learns from: a release's latents beside the text they carry.

The projector (model/describer.py) reads only the resampler's latents, and phase-1
weights never change, so each clip's or picture's latents are computed once and
cached beside its text. Sources:

- **train**: the first ``n_train`` training sentences of the release's own spoken
  recipe, spoken once by the training voices (the same clips, names and speech
  parameters as the release's own ``train`` split, so a later full build reuses them);
  and, when the release has images, the training pictures with their captions.
- **val** and **test-NAME**: the recipe's validation and unseen test clips (held-out
  voices), and the unseen picture sets.

Everything lands in ``<root>/describe/`` as ``<split>.pt`` files of
``{"latents": (N, L, D) float16, "texts": [...], "modality": [...], "audio": [...]}``,
keyed by the release's weight digest: another release makes another folder. Each
step skips what is already there, so an interrupted build resumes.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.multimodal import MultimodalModel
from model.training.data import Pair, read_jsonl
from model.training.features import FeatureCache, collate, item_id
from model.training.spoken import _synthesize_all, is_test_split, plan_spoken

log = logging.getLogger(__name__)

MANIFEST = "describe-train.jsonl"


def speak_training_prefix(recipe_path: str | Path, n_train: int, *, workers: int = 1) -> Path:
    """Speak the first ``n_train`` training sentences of a release recipe (variant 0),
    exactly as its own build would; returns the manifest ``<root>/spoken/describe-train.jsonl``."""
    from model.training.pipeline import read_release_recipe

    recipe = read_release_recipe(recipe_path)
    spec = recipe.spoken
    out = Path(recipe.release.root) / "spoken"
    manifest = out / MANIFEST
    if manifest.exists() and sum(1 for _ in manifest.open()) >= n_train:
        return manifest
    _, planned = plan_spoken(out, spec)
    jobs = [
        j
        for j in planned
        if j.split == "train" and j.record["variant"] == 0 and j.record["sentence_id"] < n_train
    ]
    (out / "audio" / "train").mkdir(parents=True, exist_ok=True)
    _synthesize_all(
        out,
        jobs,
        workers=workers,
        progress=True,
        flush_every=1000,
        manifest_for=lambda _: manifest,
    )
    return manifest


@torch.inference_mode()
def latents_of(
    model: MultimodalModel,
    modality: str,
    cache: FeatureCache,
    ids: Sequence[str],
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """The main branch's latents (N, L, D) float16 of cached encoder features."""
    out = []
    for i in range(0, len(ids), batch_size):
        tokens, mask = collate([cache.get(x) for x in ids[i : i + batch_size]])
        latents = model.forward_features(modality, tokens, mask, with_llm_tokens=False).latents
        if latents is None:
            raise ValueError(f"this model has no resampler latents for {modality}")
        out.append(latents.to(torch.float16))
    return torch.cat(out)


def _audio_split(model: MultimodalModel, feature_root: Path, pairs: Sequence[Pair]) -> dict:
    from model.training.features import cache_pairs

    cache_pairs(model, feature_root, pairs, batch_size=16, chunk=500)
    cache = FeatureCache.for_model(feature_root, model, "audio")
    kept = [p for p in pairs if item_id(p) in cache]
    return {
        "latents": latents_of(model, "audio", cache, [item_id(p) for p in kept]),
        "texts": [p.text for p in kept],
        "modality": ["audio"] * len(kept),
        "audio": [str(p.path) for p in kept],
    }


def _image_split(model: MultimodalModel, pictures: Path, split: str) -> dict:
    from model.training.pictures import read_manifest

    cache = FeatureCache.for_model(pictures / "features", model, "image")
    rows = [r for r in read_manifest(pictures) if r["split"] == split]
    kept = []
    for row in rows:
        ident = item_id(Pair("image", Path(row["image"]), row["text"], "", row["text"], {}))
        if ident in cache:
            kept.append((ident, row))
    if len(kept) < len(rows):
        log.warning(
            "%s: %d of %d pictures have no cached features", split, len(rows) - len(kept), len(rows)
        )
    return {
        "latents": latents_of(model, "image", cache, [i for i, _ in kept]),
        "texts": [r["text"] for _, r in kept],
        "modality": ["image"] * len(kept),
        "audio": [r["image"] for _, r in kept],
    }


def _merge(parts: Sequence[dict], seed: int) -> dict:
    """One split of several sources, shuffled together (seeded) for training."""
    rows = [(i, j) for i, part in enumerate(parts) for j in range(len(part["texts"]))]
    random.Random(seed).shuffle(rows)
    dims = {tuple(p["latents"].shape[1:]) for p in parts}
    if len(dims) != 1:
        raise ValueError(f"the sources' latents differ in shape: {sorted(dims)}")
    return {
        "latents": torch.stack([parts[i]["latents"][j] for i, j in rows]),
        "texts": [parts[i]["texts"][j] for i, j in rows],
        "modality": [parts[i]["modality"][j] for i, j in rows],
        "audio": [parts[i]["audio"][j] for i, j in rows],
    }


def build_describe_data(
    model: MultimodalModel,
    recipe_path: str | Path,
    *,
    n_train: int,
    pictures: str | Path | None = None,
    out: str | Path | None = None,
    workers: int = 1,
    seed: int = 0,
) -> Path:
    """Cache ``train``, ``val`` and every ``test-*`` split's latents and texts; returns
    the folder. ``pictures``: the image release's picture folder, when the model has
    images (its ``features`` cache must hold the pictures' EfficientNet features)."""
    from model.training.pipeline import read_release_recipe

    recipe = read_release_recipe(recipe_path)
    root = Path(recipe.release.root)
    folder = Path(out) if out else root / "describe" / model.weights_digest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    spoken = root / "spoken"
    splits: dict[str, Path] = {
        "train": speak_training_prefix(recipe_path, n_train, workers=workers)
    }
    for manifest in sorted(spoken.glob("*.jsonl")):
        if manifest.stem == "val" or is_test_split(manifest.stem):
            splits[manifest.stem] = manifest
    for split, manifest in splits.items():
        target = folder / f"{split}.pt"
        if target.exists():
            continue
        pairs = read_jsonl(manifest).pairs
        parts = [_audio_split(model, root / "features", pairs)]
        if pictures is not None and "image" in model.modalities and split in ("train", "val"):
            parts.append(_image_split(model, Path(pictures), split))
        data = _merge(parts, seed) if len(parts) > 1 else parts[0]
        torch.save(data, target)
        log.info("%s: %d items -> %s", split, len(data["texts"]), target)
    if pictures is not None and "image" in model.modalities:
        from model.training.pictures import read_manifest

        for split in sorted({r["split"] for r in read_manifest(Path(pictures))}):
            target = folder / f"images-{split}.pt"
            if split.startswith("test") and not target.exists():
                torch.save(_image_split(model, Path(pictures), split), target)
    (folder / "info.json").write_text(
        json.dumps(
            {
                "digest": model.weights_digest(),
                "recipe": str(recipe_path),
                "n_train": n_train,
                "pictures": str(pictures) if pictures else None,
            },
            indent=2,
        )
        + "\n"
    )
    return folder


def load_split(folder: str | Path, split: str) -> dict[str, Any]:
    """A cached split (see the module docstring)."""
    path = Path(folder) / f"{split}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no cached {split!r} split; build it with describe data")
    return torch.load(path, weights_only=True)

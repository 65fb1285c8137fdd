"""A whole release in one recipe: spoken data, features, baseline, model, evaluation, export.

A release recipe is a training recipe (:mod:`model.training.recipe`) with four
more tables::

    [release]                  # where it all goes, and what the release is called
    name = "audio-text-v1"
    version = "1.0.0"
    root = "data/release"      # spoken data and the feature cache
    runs = "runs/release"      # training runs (model, baseline)
    out = "model/weights/audio-text-v1"
    hub_ids = { audio = "openai/whisper-base", text = "sentence-transformers/all-MiniLM-L6-v2" }

    [spoken]                   # model.training.spoken.SpokenSpec, plus workers
    train_sources = ["/usr/share/games/fortunes"]
    test_sets = { devil = ["/usr/share/dictd/devil.dict.dz"] }

    [baseline]                 # dotted overrides of the training config for the baseline
    "optim.lr" = 3e-3

    [eval]
    neighbourhood_k = 10

    [blend]                    # optional: a second, locked-text branch (model/blend.py)
    dims = 256
    text_weight = 0.7
    media_weight = 0.1
    locked = { "optim.distill_weight" = 0.0 }   # dotted overrides of its training run

``mmembed train --recipe FILE`` runs every stage in order, the last one writing
the release's model card (:mod:`model.training.card`). Each resumes:
spoken clips already written are kept, cached features are not recomputed,
and a training run whose ``last/`` checkpoint exists continues from it (a
finished run is not repeated).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.config import BlendConfig
from model.training.evaluate import embed_cached, evaluate_cached, neighbourhood_recall
from model.training.features import FeatureCache, cache_pairs, mean_tokens
from model.training.pairs import cached_pairs, load_split
from model.training.recipe import TrainConfig
from model.training.runtime import resolve_device
from model.training.spoken import SpokenSpec, build_spoken_dataset, is_test_split

log = logging.getLogger(__name__)

PIPELINE_TABLES = ("release", "spoken", "baseline", "eval", "blend")


@dataclass
class ReleasePart:
    """What the release is called and where its data, runs and weights go."""

    name: str
    version: str
    hub_ids: dict[str, str]
    root: str = "data/release"
    runs: str = "runs/release"
    out: str | None = None


@dataclass
class BlendPart:
    """A blend's shape (:class:`model.config.BlendConfig`) and how its locked-text branch
    trains: ``locked`` holds dotted overrides of the training config for that run, on
    top of ``model.overrides.text_tower = "locked"``."""

    dims: int = BlendConfig.dims
    text_weight: float = BlendConfig.text_weight
    media_weight: float = BlendConfig.media_weight
    locked: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked when the recipe is read, not at compose time after both branches trained.
        BlendConfig(dims=self.dims, text_weight=self.text_weight, media_weight=self.media_weight)


@dataclass
class ReleaseRecipe:
    """A parsed release recipe: the pipeline's own tables and the training config."""

    release: ReleasePart
    spoken: SpokenSpec
    train: TrainConfig
    baseline: dict[str, Any] | None = None
    neighbourhood_k: int = 10
    workers: int = 1
    source: str = field(default="", repr=False)
    blend: BlendPart | None = None


def recipe_has_table(path: str | Path, table: str) -> bool:
    """Whether a recipe file has the top-level ``[table]``."""
    try:
        with open(path, "rb") as fh:
            return table in tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"recipe {path}: {exc}") from exc


def is_release_recipe(path: str | Path) -> bool:
    """Whether a recipe file has a ``[release]`` table (so it is run as a pipeline)."""
    return recipe_has_table(path, "release")


def read_release_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> ReleaseRecipe:
    """Parse a release recipe; ``overrides`` are dotted training values (flags, ``--set``)
    that win over the file. Errors name the file and the bad table or key."""
    text = Path(path).read_text()
    try:
        data = tomllib.loads(text)
        spoken = dict(data.pop("spoken"))
        workers = int(spoken.pop("workers", 1))
        spoken["train_sources"] = tuple(spoken["train_sources"])
        spoken["test_sets"] = {k: tuple(v) for k, v in spoken["test_sets"].items()}
        release = ReleasePart(**data.pop("release"))
        baseline = data.pop("baseline", None)
        blend = data.pop("blend", None)
        evaluation = dict(data.pop("eval", {}))
        k = int(evaluation.pop("neighbourhood_k", 10))
        if evaluation:
            raise ValueError(f"unknown keys in [eval]: {sorted(evaluation)}")
        recipe = ReleaseRecipe(
            release=release,
            spoken=SpokenSpec(**spoken),
            train=TrainConfig.from_dict(data).with_values(dict(overrides or {})),
            baseline=baseline,
            neighbourhood_k=k,
            workers=workers,
            source=text,
            blend=BlendPart(**blend) if blend is not None else None,
        )
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"release recipe {path}: {type(exc).__name__}: {exc}") from exc
    return recipe


def _run_config(recipe: ReleaseRecipe, name: str, extra: dict[str, Any]) -> TrainConfig:
    """The training config of one run, reading the pipeline's data and resuming a run
    that was interrupted."""
    root = Path(recipe.release.root)
    out = Path(recipe.release.runs) / name
    values: dict[str, Any] = {
        "data.train": [str(root / "spoken" / "train.jsonl")],
        "data.val": [str(root / "spoken" / "val.jsonl")],
        "data.cache_dir": str(root / "features"),
        "run.out": str(out),
        **extra,
    }
    if (out / "last" / "trainer_state.pt").exists() and not _finished(out):
        values["run.resume"] = str(out / "last")
    return recipe.train.with_values(values)


def _finished(out: Path) -> bool:
    """Whether the run in ``out`` went through its whole schedule (a run stopped by
    ``run.max_minutes`` is continued by the next call)."""
    summary = out / "summary.json"
    if not summary.exists():
        return False
    return not json.loads(summary.read_text()).get("stopped_by_time_limit", False)


def _train(cfg: TrainConfig) -> Path:
    """Train (or finish training) one run; returns its best checkpoint folder."""
    from model.training.train import train

    out = Path(cfg.run.out)
    if _finished(out):
        log.info("%s already trained", out)
    else:
        train(cfg)  # writes summary.json
    return out / "best"


def evaluate_release(
    recipe: ReleaseRecipe, checkpoint: Path, baseline: Path | None
) -> dict[str, Any]:
    """Retrieval on every test set (model and baseline), and how much of the text
    encoder's own top-k neighbourhoods the text embeddings keep, over all test
    sentences together."""
    from model.training.baseline import MeanPoolBaseline
    from model.training.trainable import build_model

    device = resolve_device(recipe.train.run.device)
    part = recipe.train.model
    model = build_model(part, start=checkpoint).to(device)
    other = MeanPoolBaseline.load(baseline).to(device) if baseline else None
    cache_dir = str(Path(recipe.release.root) / "features")
    caches = {m: FeatureCache.for_model(cache_dir, model, m) for m in model.config.modalities}
    results: dict[str, Any] = {"test_sets": {}}
    text_ids: list[str] = []
    for name in recipe.spoken.test_sets:
        split = load_split([str(Path(recipe.release.root) / "spoken" / f"test-{name}.jsonl")])
        cache_pairs(
            model, cache_dir, split.pairs, device=device, progress=recipe.train.run.progress
        )
        caches = {m: FeatureCache.for_model(cache_dir, model, m) for m in caches}
        test, _ = cached_pairs(split.pairs, caches)
        entry = {"pairs": len(test), "model": evaluate_cached(model, test, caches, device)}
        if other is not None:
            entry["baseline"] = evaluate_cached(other, test, caches, device)
        results["test_sets"][name] = entry
        text_ids.extend(dict.fromkeys(test.text_ids))
    teacher = mean_tokens(caches["text"], text_ids)
    embedded = embed_cached(model, "text", caches["text"], text_ids, device)
    k = recipe.neighbourhood_k
    results["text_neighbourhood"] = {
        "sentences": len(text_ids),
        "k": k,
        **{str(d): neighbourhood_recall(embedded[:, :d], teacher, k) for d in (64, 512)},
    }
    return results


def check_release(
    path: str | Path, overrides: dict[str, Any] | None = None, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Measure a release again on its recipe's test sets, without training anything.

    Speaks the test sets alone (the same clips a whole build makes, in about a
    minute; the training clips are not made), evaluates ``checkpoint`` (default:
    the recipe's ``out`` folder) as the pipeline's evaluation stage does, and sets
    the figures beside the ones stored in the checkpoint when it was exported.
    Returns ``{"results", "stored", "figures"}``; each figure is
    ``{"what", "stored", "measured"}`` (R@1 and neighbourhood recall; ``stored``
    None where the checkpoint has no such figure).
    """
    from model.checkpoint import read_checkpoint_config

    recipe = read_release_recipe(path, overrides)
    target = Path(checkpoint or recipe.release.out or "")
    if not (target / "config.json").is_file():
        raise ValueError(
            f"no checkpoint to check: {target} has no config.json "
            "(the recipe's [release] out, or --checkpoint DIR)"
        )
    if recipe.train.run.torch_threads:
        torch.set_num_threads(recipe.train.run.torch_threads)
    root = Path(recipe.release.root)
    log.info("speaking the test sets of %s in %s (not the training clips)", path, root / "spoken")
    build_spoken_dataset(root / "spoken", recipe.spoken, workers=recipe.workers, only=is_test_split)
    results = evaluate_release(recipe, target, None)
    stored = read_checkpoint_config(target).get("metadata", {}).get("eval") or {}
    return {"results": results, "stored": stored, "figures": _figures(results, stored)}


def _figures(results: dict[str, Any], stored: dict[str, Any]) -> list[dict[str, Any]]:
    """The R@1 of every test set, direction and dims, and the neighbourhood recall, measured
    and as stored (None where the stored results lack it)."""
    figures = []
    for name, entry in results["test_sets"].items():
        old = stored.get("test_sets", {}).get(name, {}).get("model", {})
        for direction, by_dims in entry["model"].items():
            for dims, metrics in by_dims.items():
                before = old.get(direction, {}).get(dims, {}).get("R@1")
                what = f"{name} {direction} R@1 at {dims}"
                figures.append({"what": what, "stored": before, "measured": metrics["R@1"]})
    for dims in ("64", "512"):
        before = stored.get("text_neighbourhood", {}).get(dims)
        measured = results["text_neighbourhood"][dims]
        what = f"text encoder's neighbourhoods kept at {dims}"
        figures.append({"what": what, "stored": before, "measured": measured})
    return figures


class StageClock:
    """Wall time of each pipeline stage, summed over every run of the pipeline (an
    interrupted stage's time counts, and a resumed one adds its own), kept in
    ``stages.json`` in the runs folder for the model card."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")


def run_release(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every stage of a release recipe, in order; returns the evaluation results."""
    recipe = read_release_recipe(path, overrides)
    torch.manual_seed(recipe.train.run.seed)
    root, runs = Path(recipe.release.root), Path(recipe.release.runs)
    clock = StageClock(runs / "stages.json")
    log.info("stage 1/6: spoken data in %s", root / "spoken")
    with clock.stage("spoken data (espeak-ng)"):
        build_spoken_dataset(root / "spoken", recipe.spoken, workers=recipe.workers)
    baseline = None
    if recipe.baseline is not None:
        log.info("stage 2/6: the mean-pool baseline (caches the features first)")
        with clock.stage("features and the mean-pool baseline"):
            baseline = _train(
                _run_config(recipe, "baseline", {"model.baseline": True, **recipe.baseline})
            )
    log.info("stage 3/6: the model")
    with clock.stage("the model"):
        best = _train(_run_config(recipe, "model", {}))
    if recipe.blend is not None:
        best = _blend(recipe, best, clock)
    log.info("stage 4/6: evaluation on %s", ", ".join(recipe.spoken.test_sets))
    with clock.stage("evaluation"):
        results = evaluate_release(recipe, best, baseline)
    (runs / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    if recipe.release.out:
        export_and_describe(recipe, best, results, clock)
    return results


def _blend(recipe: ReleaseRecipe, main: Path, clock: StageClock) -> Path:
    """Stage 3b: train the locked-text branch, then compose the blend with ``main``."""
    from model.training.compose import compose_checkpoints

    blend = recipe.blend
    assert blend is not None
    log.info("stage 3/6: the locked-text branch of the blend")
    with clock.stage("the locked-text branch"):
        extra = {"model.overrides.text_tower": "locked", **blend.locked}
        locked = _train(_run_config(recipe, "locked", extra))
    return compose_checkpoints(
        main,
        locked,
        Path(recipe.release.runs) / "blend",
        dims=blend.dims,
        text_weight=blend.text_weight,
        media_weight=blend.media_weight,
    )


def export_and_describe(
    recipe: ReleaseRecipe, best: Path, results: dict[str, Any], clock: StageClock
) -> Path:
    """Stages 5 and 6: the fp16 release folder, then its model card with the text speed."""
    from model.training.card import release_test_sentences, text_speed, write_model_card
    from model.training.export import export_release

    out = Path(recipe.release.out)
    log.info("stage 5/6: export to %s", out)
    with clock.stage("export"):
        export_release(
            best,
            out,
            name=recipe.release.name,
            version=recipe.release.version,
            hub_ids=recipe.release.hub_ids,
            extra={"eval": results, "spoken": asdict(recipe.spoken), "recipe": recipe.source},
        )
    log.info("stage 6/6: text speed against plain MiniLM, and the model card")
    encoders = recipe.train.model.encoders
    speed = None
    if "text" in encoders:
        sentences = release_test_sentences(recipe.spoken.test_sets, recipe.release.root)
        speed = text_speed(
            out,
            encoders["text"],
            sentences,
            audio_encoder=encoders.get("audio"),
            threads=recipe.train.run.torch_threads,
        )
    else:
        log.warning("no --text-encoder folder given: the model card has no text speed")
    return write_model_card(out, stages=clock.seconds, speed=speed)

"""The projector of a release, every stage from one recipe (``[describe]`` table):
cached latents -> projector training -> evaluation -> the projector and its card.

Each stage resumes: the latents are cached per split, training from its state file,
and the evaluation from its saved generations.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.training.describe_card import describe_figures
from model.training.describe_train import DescribeTrainSpec

log = logging.getLogger(__name__)

__all__ = ["describe_figures", "eval_describe_release", "run_describe_release"]


@dataclass(frozen=True)
class DescribeRecipe:
    release: str
    spoken_recipe: str
    n_train: int
    runs: str
    out: str
    llm: str
    pictures: str | None = None
    eval_clips: int = 200
    train: DescribeTrainSpec = DescribeTrainSpec()


def is_describe_recipe(path: str | Path) -> bool:
    """Whether a recipe file has a ``[describe]`` table."""
    try:
        with open(path, "rb") as fh:
            return "describe" in tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return False


def read_describe_recipe(path: str | Path) -> DescribeRecipe:
    """Parse a describe recipe; errors name the file and what is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text())
        spec = DescribeTrainSpec(**data.get("describe_train", {}))
        return DescribeRecipe(**data["describe"], train=spec)
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"describe recipe {path}: {type(exc).__name__}: {exc}") from exc


def load_phase1(recipe: DescribeRecipe, sources: dict[str, str]):
    """The release's frozen phase-1 model."""
    from model.checkpoint import load_model

    model = load_model(recipe.release, sources)
    model.eval()
    return model


def data_stage(recipe: DescribeRecipe, model) -> Path:
    from model.training.describe_data import build_describe_data

    return build_describe_data(
        model, recipe.spoken_recipe, n_train=recipe.n_train, pictures=recipe.pictures
    )


def train_stage(recipe: DescribeRecipe, model, folder: Path, *, max_minutes: float | None = None):
    from model.llm import load_llm, resolve_llm
    from model.training.describe_data import load_split
    from model.training.describe_train import new_describer, train_projector

    source = resolve_llm(recipe.llm)
    if source is None:
        raise ValueError("the describe recipe needs a language model; its llm is 'none'")
    llm, tokenizer = load_llm(source)
    train, val = load_split(folder, "train"), load_split(folder, "val")
    describer = new_describer(
        llm,
        tokenizer,
        latent_dim=int(train["latents"].shape[-1]),
        weights_digest=model.weights_digest(),
        llm_name=source.name,
        hidden=recipe.train.hidden,
        seed=recipe.train.seed,
    )
    history = train_projector(
        describer,
        train,
        val,
        recipe.train,
        Path(recipe.runs) / "train",
        recipe.out,
        max_minutes=max_minutes,
    )
    return history


SPOKEN_SPLITS = ("test-devil", "test-wordnet")
PICTURE_SPLITS = ("images-test_clipart", "images-test_emoji")


def trained_describer(recipe: DescribeRecipe):
    """The language model with the recipe's exported projector."""
    from model.describer import Describer, load_projector
    from model.llm import load_llm, resolve_llm

    found = load_projector(recipe.out)
    if found is None:
        raise ValueError(f"no trained projector in {recipe.out}; run the recipe's training first")
    projector, config = found
    llm, tokenizer = load_llm(resolve_llm(recipe.llm))
    return Describer(projector, config, llm, tokenizer)


def evaluate_stage(recipe: DescribeRecipe, model, folder: Path) -> dict[str, Any]:
    """Word error rate and meaning kept on each unseen set (model/training/describe_eval.py);
    written to ``<runs>/eval.json``."""
    from model.training.describe_data import load_split
    from model.training.describe_eval import evaluate_split
    from model.training.pipeline import read_release_recipe

    describer = trained_describer(recipe)
    runs = Path(recipe.runs)
    root = Path(read_release_recipe(recipe.spoken_recipe).release.root)
    results: dict[str, Any] = {}
    for split in (*SPOKEN_SPLITS, *PICTURE_SPLITS):
        if not (folder / f"{split}.pt").exists():
            continue
        spoken = split in SPOKEN_SPLITS
        whisper_file = runs / "whisper" / f"{split}.json"
        whisper = json.loads(whisper_file.read_text()) if spoken and whisper_file.exists() else None
        results[split] = evaluate_split(
            describer,
            model,
            load_split(folder, split),
            n=recipe.eval_clips,
            feature_root=root / "features" if spoken else None,
            whisper=whisper,
            generations=runs / "generations" / f"{split}.json",
        )
    results["projector"] = describer.config.trained
    (runs / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    from model.training.describe_card import write_card

    write_card(recipe.out, results, CARD_NOTES)
    return results


# The card's prose; its figures come from the evaluation.
CARD_NOTES = {
    "honest": (
        "Check the figures below before relying on it: a description is only worth "
        "reading where its meaning R@1 is well above chance. The language model writes "
        "fluent text whatever the latents hold, so a projector that has not learnt to "
        "read them still answers, with sentences unrelated to the input."
    ),
    "training": (
        "- The latents of 4,000 spoken training sentences (the release's own clips) and "
        "4,836 captioned training pictures, cached once; 128 validation items choose the "
        "exported step."
    ),
    "speed": "`python -m service.describe_benchmark` prints a describe's latency and memory.",
}


def run_describe_release(
    path: str | Path,
    sources: dict[str, str],
    *,
    max_minutes: float | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Every stage of a describe recipe; returns what the card reports."""
    recipe = read_describe_recipe(path)
    torch.set_num_threads(recipe.train.threads)
    model = load_phase1(recipe, sources)
    folder = data_stage(recipe, model)
    history = train_stage(recipe, model, folder, max_minutes=max_minutes)
    result: dict[str, Any] = {"history": history, "latents": str(folder)}
    if evaluate and history.get("steps_done", 0) >= recipe.train.steps:
        result["eval"] = evaluate_stage(recipe, model, folder)
    return result


def eval_describe_release(path: str | Path, sources: dict[str, str]) -> dict[str, Any]:
    """The evaluation stage alone (the data and projector must exist)."""
    recipe = read_describe_recipe(path)
    torch.set_num_threads(recipe.train.threads)
    model = load_phase1(recipe, sources)
    return evaluate_stage(recipe, model, data_stage(recipe, model))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipe")
    parser.add_argument("--audio-encoder", required=True)
    parser.add_argument("--text-encoder", required=True)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--eval-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sources = {"audio": args.audio_encoder, "text": args.text_encoder}
    if args.eval_only:
        print(json.dumps(eval_describe_release(args.recipe, sources), indent=2))
        return 0
    result = run_describe_release(args.recipe, sources, max_minutes=args.max_minutes)
    print(json.dumps(result["history"]["val"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

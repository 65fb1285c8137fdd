"""TrainConfig: its parts, the TOML recipe files, and the model config it describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.training.describe_release import is_describe_recipe, read_describe_recipe
from model.training.image_release import is_image_release_recipe, read_image_recipe
from model.training.pipeline import is_release_recipe, read_release_recipe
from model.training.recipe import TrainConfig
from model.training.trainable import model_config
from model.training.transcript_release import is_transcript_recipe, read_transcript_recipe


def test_round_trip_through_a_dict_and_json() -> None:
    cfg = TrainConfig().with_values({"optim.lr": 1e-3, "model.encoders.text": "/w/minilm"})
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.optim.lr == 1e-3 and again.model.encoders == {"text": "/w/minilm"}


def test_recipe_file_sets_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[model]\npreset = "tiny"\n[model.overrides.perceiver]\ndim = 64\n[optim]\nepochs = 3\n'
    )
    cfg = TrainConfig.from_recipe(path)
    assert cfg.model.preset == "tiny" and cfg.optim.epochs == 3
    assert cfg.optim.lr == TrainConfig().optim.lr  # untouched fields keep their defaults
    assert model_config(cfg.model).perceiver.dim == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[optimizer]\nlr = 1\n", "unknown sections ['optimizer']"),
        ("[run]\nthreads = 2\n", "unknown keys in [run]: ['threads']"),
        ("[run\n", "recipe"),
        ('[optim]\nlr = "abc"\n', "optim.lr = 'abc' is a str; expected float"),
        ("[optim]\nepochs = 1.5\n", "optim.epochs = 1.5 is a float; expected int"),
        (
            "[optim]\nmax_steps = true\n",
            "optim.max_steps = True is a bool; expected int or NoneType",
        ),
        ('[data]\ntrain = "a.jsonl"\n', "data.train = 'a.jsonl' is a str; expected list"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_recipe(path)


def test_model_part_builds_the_same_config_as_the_old_flags() -> None:
    """The nested overrides reach the same ModelConfig fields the flat flags did."""
    cfg = TrainConfig().with_values(
        {
            "model.preset": "tiny",
            "model.audio_window": "trimmed",
            "model.overrides": {
                "perceiver": {"dim": 256, "num_latents": 16, "depth": 2, "ff_mult": 2},
                "adapter": {"hidden_mult": 1, "audio_frame_pool": 4},
                "head": {"llm_dim": 64},
            },
            "model.random_init": {"audio": {"init_std": 0.2}},
        }
    )
    config = model_config(cfg.model)
    assert (config.perceiver.dim, config.perceiver.num_latents) == (256, 16)
    assert (config.perceiver.depth, config.perceiver.ff_mult) == (2, 2)
    assert (config.adapter.hidden_mult, config.adapter.audio_frame_pool) == (1, 4)
    assert config.head.llm_dim == 64 and config.encoders["audio"].audio_window == "trimmed"
    assert config.encoders["audio"].random_init["init_std"] == 0.2


def test_unknown_model_overrides_are_refused() -> None:
    cfg = TrainConfig().with_values({"model.preset": "tiny", "model.overrides.perceiver.width": 1})
    with pytest.raises(ValueError, match="width"):
        model_config(cfg.model)
    cfg = TrainConfig().with_values({"model.preset": "tiny", "model.overrides.encoders": {}})
    with pytest.raises(ValueError, match="cannot override"):
        model_config(cfg.model)


def test_shipped_recipes_load() -> None:
    folder = Path(__file__).resolve().parents[3] / "model" / "training" / "recipes"
    recipes = sorted(folder.glob("*.toml"))
    assert recipes, f"no recipes in {folder}"
    for path in recipes:
        if is_describe_recipe(path):  # the LLM projector of a release, its own tables
            recipe = read_describe_recipe(path)
            assert (folder.parents[2] / recipe.release / "config.json").is_file()
            assert is_release_recipe(folder.parents[2] / recipe.spoken_recipe)
            assert recipe.train.steps > 0 and recipe.eval_clips > 0
            continue
        if is_transcript_recipe(path):  # a release plus transcripts: its own table
            recipe = read_transcript_recipe(path)
            assert (folder.parents[2] / recipe.base / "config.json").is_file()
            assert is_release_recipe(folder.parents[2] / recipe.base_recipe)
            assert is_image_release_recipe(folder.parents[2] / recipe.image_recipe)
            assert recipe.weights and all(0 <= w <= 1 for w in recipe.weights)
            continue
        if is_image_release_recipe(path):  # extends a release: its own tables, checked here
            recipe = read_image_recipe(path)
            assert Path(recipe.release.base).is_dir() or recipe.release.base.startswith("model/")
            assert is_release_recipe(folder.parents[2] / recipe.release.base_recipe)
            continue
        if is_release_recipe(path):  # a whole pipeline; its stages fill in the data paths
            cfg = read_release_recipe(path).train
        else:
            cfg = TrainConfig.from_recipe(path)
            assert cfg.data.train, f"{path.name} names no training data"
        model_config(cfg.model)


def test_set_values_are_type_checked_too() -> None:
    with pytest.raises(ValueError, match="optim.lr = 'abc' is a str; expected float"):
        TrainConfig().with_values({"optim.lr": "abc"})
    assert TrainConfig().with_values({"optim.lr": 1}).optim.lr == 1  # an int is a float

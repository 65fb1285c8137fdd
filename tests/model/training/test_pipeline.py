"""A release recipe end to end: spoken data, features, baseline, model, evaluation, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model import Embedder
from model.training.pipeline import read_release_recipe, run_release
from service.cli import main

TRAIN_TEXT = " ".join(
    f"The {c} {a} jumps over {n} small {t}."
    for c, a, n, t in zip(
        ["red", "blue", "green", "white", "black", "brown", "grey", "pink"],
        ["fox", "dog", "cat", "horse", "bird", "goat", "mouse", "frog"],
        ["one", "two", "three", "four", "five", "six", "seven", "eight"],
        ["fences", "stones", "boxes", "logs", "walls", "chairs", "tables", "rivers"],
        strict=True,
    )
)


def write_recipe(tmp_path: Path, shared_encoders: dict[str, str]) -> Path:
    (tmp_path / "train.txt").write_text(TRAIN_TEXT)
    (tmp_path / "a.txt").write_text("A quiet river runs to the sea. Old books smell of dust.")
    (tmp_path / "b.txt").write_text("Bright lights fill the city at night. Cold rain falls today.")
    recipe = tmp_path / "release.toml"
    recipe.write_text(
        f"""
[release]
name = "audio-text-test"
version = "0.0.1"
root = "{tmp_path / "data"}"
runs = "{tmp_path / "runs"}"
out = "{tmp_path / "weights"}"
hub_ids = {{ audio = "openai/whisper-base", text = "sentence-transformers/all-MiniLM-L6-v2" }}

[spoken]
train_sources = ["{tmp_path / "train.txt"}"]
test_sets = {{ a = ["{tmp_path / "a.txt"}"], b = ["{tmp_path / "b.txt"}"] }}
n_val = 2
n_test = 2
train_variants = 1

[model]
preset = "base"
modalities = ["audio", "text"]
audio_window = "trimmed"
encoders = {{ audio = "{shared_encoders["audio"]}", text = "{shared_encoders["text"]}" }}

[model.overrides]
perceiver = {{ dim = 64, num_latents = 4, depth = 1, heads = 4, ff_mult = 2 }}
adapter = {{ hidden_mult = 1, audio_frame_pool = 4 }}

[optim]
batch_size = 6
max_steps = 3
warmup_steps = 1
distill_weight = 1.0

[run]
eval_every = 0
progress = false

[baseline]
"optim.max_steps" = 2

[eval]
neighbourhood_k = 2
"""
    )
    return recipe


@pytest.mark.slow
@pytest.mark.real_weights
def test_a_release_recipe_runs_every_stage_and_resumes(
    tmp_path: Path, shared_encoders: dict[str, str], hub_cache: Path, capfd
) -> None:
    recipe = write_recipe(tmp_path, shared_encoders)
    results = run_release(recipe)
    assert "Loading weights" not in capfd.readouterr().err  # no transformers load bars

    assert set(results["test_sets"]) == {"a", "b"}
    for entry in results["test_sets"].values():
        assert entry["pairs"] == 2
        assert set(entry) == {"pairs", "model", "baseline"}
        r1 = entry["model"]["audio->text"]["512"]["R@1"]
        assert 0.0 <= r1 <= 1.0
    hood = results["text_neighbourhood"]
    assert hood["sentences"] == 4 and hood["k"] == 2 and 0.0 <= hood["512"] <= 1.0
    for split in ("train", "val", "test-a", "test-b"):
        assert (tmp_path / "data" / "spoken" / f"{split}.jsonl").exists()
    assert json.loads((tmp_path / "runs" / "eval.json").read_text()) == results

    released = Embedder.from_pretrained(tmp_path / "weights")
    assert released.info["model"] == "audio-text-test" and released.info["version"] == "0.0.1"
    config = json.loads((tmp_path / "weights" / "config.json").read_text())
    assert config["metadata"]["eval"] == results and "[release]" in config["metadata"]["recipe"]
    vectors = released.embed_texts(["a red fox", "cold rain"], dims=64)
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)

    card = (tmp_path / "weights" / "README.md").read_text()
    a2t = results["test_sets"]["a"]["model"]["audio->text"]["512"]["R@1"]
    assert card.startswith("# audio-text-test 0.0.1")
    assert f"| a | 2 | **resampler (this release)** | {a2t:.3f} / " in card
    assert "| b | 2 | mean-pool baseline |" in card and "Text embeddings per second" in card
    stages = json.loads((tmp_path / "runs" / "stages.json").read_text())
    assert list(stages) == [
        "spoken data (espeak-ng)",
        "features and the mean-pool baseline",
        "the model",
        "evaluation",
        "export",
    ]
    assert all(seconds >= 0 for seconds in stages.values()) and stages["the model"] > 0
    assert "| the model |" in card

    # A second run finds every stage done: same data, same runs, same results.
    summary = (tmp_path / "runs" / "model" / "summary.json").read_text()
    assert run_release(recipe) == results
    assert (tmp_path / "runs" / "model" / "summary.json").read_text() == summary

    # `mmembed eval --recipe`: in a fresh data folder, only the test sets are spoken, and
    # the exported release measures what it stored. A stored figure that is off fails it.
    check = tmp_path / "check.toml"
    check.write_text(recipe.read_text().replace(str(tmp_path / "data"), str(tmp_path / "d2")))
    capfd.readouterr()
    assert main(["eval", "--recipe", str(check), "--json", str(tmp_path / "c.json")]) == 0
    out = capfd.readouterr().out
    assert "all 18 figures within 0.010 of the stored ones" in out
    assert sorted(p.name for p in (tmp_path / "d2" / "spoken").glob("*.jsonl")) == [
        "test-a.jsonl",
        "test-b.jsonl",
    ]
    checked = json.loads((tmp_path / "c.json").read_text())
    assert checked["stored"] == results
    for key in ("model", "pairs"):
        assert checked["results"]["test_sets"]["a"][key] == results["test_sets"]["a"][key]
    config["metadata"]["eval"]["test_sets"]["b"]["model"]["text->audio"]["64"]["R@1"] += 0.25
    (tmp_path / "weights" / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--recipe", str(check)]) == 1
    err = capfd.readouterr().err
    assert "1 of 18 figures differ from the stored ones by more than 0.010" in err
    assert "b text->audio R@1 at 64" in err


def test_bad_release_recipes_name_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[release]\nname = "x"\nversion = "1"\nhub_ids = {}\n')
    with pytest.raises(ValueError, match=r"bad.toml: KeyError: 'spoken'"):
        read_release_recipe(bad)
    bad.write_text(
        '[release]\nname = "x"\nversion = "1"\nhub_ids = {}\n'
        "[spoken]\ntrain_sources = []\ntest_sets = {}\n[eval]\nk = 3\n"
    )
    with pytest.raises(ValueError, match=r"unknown keys in \[eval\]: \['k'\]"):
        read_release_recipe(bad)
    # A bad [blend] fails when the recipe is read, not after both branches have trained.
    head = '[release]\nname = "x"\nversion = "1"\nhub_ids = {}\n'
    head += "[spoken]\ntrain_sources = []\ntest_sets = {}\n[blend]\n"
    for table, problem in [
        ("dims = 512", "blend dims must be between 1 and 511; got 512"),
        ("text_weight = 1.5", "blend text_weight must be between 0 and 1; got 1.5"),
        ("weight = 0.5", "unexpected keyword argument 'weight'"),
    ]:
        bad.write_text(head + table + "\n")
        with pytest.raises(ValueError, match=rf"bad.toml: \w+Error: .*{problem}"):
            read_release_recipe(bad)
    bad.write_text(head + "dims = 128\nmedia_weight = 0.2\n")
    blend = read_release_recipe(bad).blend
    assert blend is not None
    assert (blend.dims, blend.text_weight, blend.media_weight) == (128, 0.7, 0.2)


def test_a_run_stopped_by_its_time_limit_is_continued_not_skipped(
    tmp_path: Path, shared_encoders: dict[str, str]
) -> None:
    from model.training.pipeline import _finished, _run_config

    recipe = read_release_recipe(write_recipe(tmp_path, shared_encoders))
    out = tmp_path / "runs" / "model"
    (out / "last").mkdir(parents=True)
    (out / "last" / "trainer_state.pt").write_bytes(b"")
    (out / "summary.json").write_text(json.dumps({"stopped_by_time_limit": True}))
    assert not _finished(out)
    assert _run_config(recipe, "model", {}).run.resume == str(out / "last")
    (out / "summary.json").write_text(json.dumps({"stopped_by_time_limit": False}))
    assert _finished(out) and _run_config(recipe, "model", {}).run.resume is None


@pytest.mark.slow
@pytest.mark.real_weights
def test_a_blend_recipe_trains_both_branches_and_releases_their_blend(
    tmp_path: Path, shared_encoders: dict[str, str], hub_cache: Path
) -> None:
    from model.checkpoint import load_model

    recipe = write_recipe(tmp_path, shared_encoders)
    # distill_weight is a text-only term: the locked-text run must turn it off, or it refuses.
    recipe.write_text(
        recipe.read_text()
        + """
[blend]
dims = 128
text_weight = 0.6
media_weight = 0.2
locked = { "optim.distill_weight" = 0.0, "model.overrides.perceiver.num_latents" = 2 }
"""
    )
    results = run_release(recipe)
    runs = tmp_path / "runs"
    stages = json.loads((runs / "stages.json").read_text())
    assert list(stages)[2:4] == ["the model", "the locked-text branch"]
    locked = load_model(runs / "locked" / "best")
    assert locked.text_locked and locked.config.perceiver.num_latents == 2
    released = Embedder.from_pretrained(tmp_path / "weights")
    blend = released.model.config.blend
    assert (blend.dims, blend.text_weight, blend.media_weight) == (128, 0.6, 0.2)
    assert blend.perceiver.num_latents == 2
    main = Embedder.from_checkpoint(runs / "model" / "best")
    texts = ["a red fox", "cold rain"]
    head = main.embed_texts(texts)[:, :384]
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    np.testing.assert_allclose(
        released.embed_texts(texts)[:, :384], head * np.sqrt(0.4), atol=2e-3
    )  # float16 release against the float32 run
    hood = results["text_neighbourhood"]
    assert 0.0 <= hood["512"] <= 1.0
    card = (tmp_path / "weights" / "README.md").read_text()
    assert "The last 128 of the 512 dims come from a second branch" in card
    assert "A text vector gives 60% of its weight to those dims, a speech vector 20%" in card
    assert run_release(recipe) == results  # every stage, the blend included, resumes as done

"""`mmembed train`, `eval` and `data` argument wiring: flags, recipes and the environment."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from model.training.recipe import TrainConfig
from service import commands
from service.cli import build_parser, main


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _config(argv: list[str]) -> TrainConfig:
    return commands.train_config(_parse(["train", *argv]))


def test_train_arguments_become_a_train_config(monkeypatch) -> None:
    for name in ("PRESET", "MODALITIES", "DEVICE", "AUDIO_WINDOW", "TORCH_THREADS"):
        monkeypatch.delenv(f"MMEMBED_{name}", raising=False)
    cfg = _config(
        [
            "--train",
            "a.jsonl",
            "b.jsonl",
            "--val",
            "v.jsonl",
            "--preset",
            "base",
            "--audio-encoder",
            "/w/whisper",
            "--text-encoder",
            "/w/minilm",
            "--modalities",
            "audio,text",
            "--audio-window",
            "trimmed",
            "--set",
            "model.overrides.perceiver.depth=2",
            "--batch-size",
            "32",
            "--lr",
            "0.001",
            "--set",
            "optim.mrl_dims=[64, 512]",
            "--set",
            "optim.mrl_weight=0.5",
            "--seed",
            "7",
            "--torch-threads",
            "2",
            "--no-progress",
        ]
    )
    assert cfg.data.train == ["a.jsonl", "b.jsonl"] and cfg.data.val == ["v.jsonl"]
    assert cfg.model.encoders == {"audio": "/w/whisper", "text": "/w/minilm"}
    assert cfg.model.modalities == ["audio", "text"] and cfg.model.audio_window == "trimmed"
    assert cfg.model.overrides == {"perceiver": {"depth": 2}}
    assert cfg.optim.batch_size == 32 and cfg.optim.lr == 0.001
    assert cfg.optim.mrl_dims == [64, 512] and cfg.optim.mrl_weight == 0.5
    assert cfg.run.seed == 7 and cfg.run.torch_threads == 2
    assert cfg.run.progress is False and cfg.model.baseline is False


def test_train_defaults_match_the_dataclass_and_the_service(monkeypatch) -> None:
    monkeypatch.delenv("MMEMBED_PRESET", raising=False)
    monkeypatch.delenv("MMEMBED_DEVICE", raising=False)
    cfg = _config(["--train", "a.jsonl", "--baseline"])
    defaults = TrainConfig()
    assert cfg.model.baseline is True
    assert (cfg.optim, cfg.augment, cfg.model.preset) == (
        defaults.optim,
        defaults.augment,
        defaults.model.preset,
    )
    # The same defaults as `mmembed serve`.
    from service.settings import Settings

    settings = Settings()
    assert (cfg.model.preset, cfg.run.device) == (settings.preset, settings.device)


def test_recipe_then_set_then_flags(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMEMBED_PRESET", "base")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        """
[data]
train = ["from-recipe.jsonl"]
[model]
preset = "tiny"
audio_window = "trimmed"
[model.overrides]
perceiver = { dim = 128 }
[optim]
lr = 0.01
batch_size = 16
[run]
torch_threads = 3
"""
    )
    cfg = _config(
        ["--recipe", str(recipe), "--set", "optim.lr=0.02", "--batch-size", "8", "--preset", "tiny"]
    )
    assert cfg.data.train == ["from-recipe.jsonl"]
    assert cfg.model.preset == "tiny"  # the recipe beats the environment
    assert cfg.model.overrides == {"perceiver": {"dim": 128}}
    assert cfg.optim.lr == 0.02 and cfg.optim.batch_size == 8 and cfg.run.torch_threads == 3
    assert _config(["--recipe", str(recipe), "--torch-threads", "1"]).run.torch_threads == 1


def test_bad_recipes_and_values_are_one_line_errors(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 1\n")
    assert main(["train", "--recipe", str(bad)]) == 1
    assert "unknown keys in [optim]: ['learning_rate']" in capsys.readouterr().err
    bad.write_text("[optim\n")
    assert main(["train", "--recipe", str(bad)]) == 1
    assert f"recipe {bad}" in capsys.readouterr().err
    assert main(["train", "--set", "lr=1"]) == 1
    assert "expected SECTION.KEY" in capsys.readouterr().err
    assert main(["train", "--train", "a.jsonl", "--dtype", "float16"]) == 1
    assert "float32" in capsys.readouterr().err


def test_eval_and_data_subcommands() -> None:
    args = _parse(
        ["eval", "--checkpoint", "ck", "--baseline", "bl", "--data", "t.jsonl", "--json", "o.json"]
    )
    assert (str(args.checkpoint), args.baseline, args.data, args.json) == (
        "ck",
        "bl",
        ["t.jsonl"],
        "o.json",
    )
    spoken = _parse(["data", "spoken", "--out", "d", "--train-variants", "3"])
    assert spoken.train_variants == 3 and spoken.test_set is None
    held = _parse(["data", "spoken", "--out", "d", "--test-set", "wn=/usr/share/wordnet"])
    assert held.test_set == ["wn=/usr/share/wordnet"]
    synth = _parse(["data", "synthetic", "--out", "s"])
    assert synth.per_caption_train == 12 and synth.modalities == "image,audio"
    feats = _parse(["data", "features", "--data", "m.jsonl", "--cache-dir", "c"])
    assert feats.cache_dir == "c" and callable(feats.func)


def test_eval_without_a_checkpoint_says_so(capsys) -> None:
    assert main(["eval", "--data", "t.jsonl"]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err


def test_checking_a_release_takes_a_release_recipe_and_nothing_of_plain_eval(
    tmp_path: Path, capsys
) -> None:
    recipe = str(Path("model/training/recipes/audio-text-v1.toml").resolve())
    assert main(["eval", "--recipe", recipe, "--limit", "5"]) == 1
    assert "--limit cannot go with --recipe" in capsys.readouterr().err
    plain = tmp_path / "plain.toml"
    plain.write_text("[optim]\nlr = 0.001\n")
    assert main(["eval", "--recipe", str(plain)]) == 1
    assert "is not a release recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --data or --recipe, not both
        build_parser().parse_args(["eval", "--recipe", recipe, "--data", "t.jsonl"])
    assert "not allowed with argument" in capsys.readouterr().err
    nowhere = tmp_path / "nowhere.toml"
    nowhere.write_text(Path(recipe).read_text().replace('out = "model/', 'out = "nowhere/'))
    assert main(["eval", "--recipe", str(nowhere)]) == 1
    assert "no checkpoint to check: nowhere/weights/audio-text-v1 has no config.json" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("recipe", "module", "check"),
    [
        ("image-audio-text-v2.toml", "model.training.image_release", "check_image_release"),
        (
            "image-audio-text-v3.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
        (
            "image-audio-text-v4.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
        (
            "image-audio-text-v5.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
        (
            "image-audio-text-v6.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
        (
            "image-audio-text-v7.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
        (
            "image-audio-text-v8.toml",
            "model.training.transcript_release",
            "check_transcript_release",
        ),
    ],
)
def test_a_release_that_extends_another_is_checked_by_its_own_check(
    recipe: str, module: str, check: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`eval --recipe` sends each kind of release recipe to its check, with the encoder
    flags and --checkpoint, and reports the figures (stubbed here: the real checks speak
    and embed hundreds of clips, which their releases' cards record)."""
    import importlib

    calls = []

    def measured(path, sources, checkpoint):
        calls.append((Path(path).name, sources, checkpoint))
        return {"figures": [{"what": "devil audio->text 512", "stored": 0.5, "measured": 0.6}]}

    monkeypatch.setattr(importlib.import_module(module), check, measured)
    path = str(Path("model/training/recipes", recipe).resolve())
    out = tmp_path / "checked.json"
    argv = ["eval", "--recipe", path, "--text-encoder", "T", "--checkpoint", "C"]
    assert main([*argv, "--json", str(out)]) == 1  # 0.1 off: more than the tolerance
    assert calls == [(recipe, {"text": "T"}, Path("C"))]
    assert "devil audio->text 512" in capsys.readouterr().out
    assert '"measured": 0.6' in out.read_text()


def test_data_errors_are_one_line(tmp_path, capsys) -> None:
    argv = ["train", "--train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--preset", "tiny"]) == 1
    assert "manifest not found" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["optim.lr=1e-3", "run.out=runs/x", "optim.mrl_dims=[64]"])
def test_set_values_are_read_as_toml_else_text(spec: str) -> None:
    key, value = commands._set_value(spec)
    assert key == spec.split("=")[0]
    assert value == {"optim.lr": 1e-3, "run.out": "runs/x", "optim.mrl_dims": [64]}[key]


def test_a_release_recipe_is_its_own_say_on_data_runs_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from service.commands import train_values

    recipe = Path("model/training/recipes/audio-text-v1.toml").resolve()
    assert main(["train", "--recipe", str(recipe), "--out", "x"]) == 1
    assert "--out cannot change a release recipe" in capsys.readouterr().err
    monkeypatch.setenv("MMEMBED_PRESET", "tiny")  # the environment never beats the recipe
    args = build_parser().parse_args(
        ["train", "--recipe", str(recipe), "--set", "optim.lr=0.01", "--audio-encoder", "/a"]
    )
    assert train_values(args, release=True) == {"optim.lr": 0.01, "model.encoders.audio": "/a"}

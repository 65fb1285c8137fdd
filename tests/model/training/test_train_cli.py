"""`mmembed train`, `eval` and `data` argument wiring."""

from __future__ import annotations

import argparse

from model.training import cli
from model.training.train import TrainConfig


def _parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def test_train_arguments_become_a_train_config() -> None:
    args = _parse(
        [
            "train",
            "--train",
            "a.jsonl",
            "b.jsonl",
            "--val",
            "v.jsonl",
            "--preset",
            "base",
            "--encoder",
            "audio=/w/whisper",
            "--encoder",
            "text=/w/minilm",
            "--modalities",
            "audio",
            "text",
            "--audio-window",
            "trimmed",
            "--perceiver-depth",
            "2",
            "--batch-size",
            "32",
            "--lr",
            "0.001",
            "--mrl-dims",
            "64",
            "512",
            "--mrl-weight",
            "0.5",
            "--seed",
            "7",
            "--no-progress",
        ]
    )
    assert args.func is not None
    cfg = cli.train_config_from_args(args)
    assert isinstance(cfg, TrainConfig)
    assert cfg.train == ["a.jsonl", "b.jsonl"] and cfg.val == ["v.jsonl"]
    assert cfg.encoders == {"audio": "/w/whisper", "text": "/w/minilm"}
    assert cfg.modalities == ["audio", "text"] and cfg.audio_window == "trimmed"
    assert cfg.perceiver_depth == 2 and cfg.batch_size == 32 and cfg.lr == 0.001
    assert cfg.mrl_dims == [64, 512] and cfg.mrl_weight == 0.5 and cfg.seed == 7
    assert cfg.progress is False and cfg.baseline is False


def test_train_defaults_match_the_dataclass() -> None:
    cfg = cli.train_config_from_args(_parse(["train", "--train", "a.jsonl", "--baseline"]))
    defaults = TrainConfig(train=["a.jsonl"])
    assert cfg.baseline is True
    assert (cfg.epochs, cfg.lr, cfg.mrl_dims, cfg.preset) == (
        defaults.epochs,
        defaults.lr,
        defaults.mrl_dims,
        defaults.preset,
    )


def test_eval_and_data_subcommands() -> None:
    args = _parse(
        ["eval", "--checkpoint", "ck", "--baseline", "bl", "--data", "t.jsonl", "--json", "o.json"]
    )
    assert (args.checkpoint, args.baseline, args.data, args.json) == (
        "ck",
        "bl",
        ["t.jsonl"],
        "o.json",
    )
    spoken = _parse(["data", "spoken", "--out", "d", "--train-variants", "3"])
    assert spoken.train_variants == 3 and spoken.test_text == ["/usr/share/dictd/devil.dict.dz"]
    synth = _parse(["data", "synthetic", "--out", "s"])
    assert synth.per_caption_train == 12
    feats = _parse(["data", "features", "--data", "m.jsonl", "--cache-dir", "c"])
    assert feats.cache_dir == "c" and callable(feats.func)


def test_registered_on_the_mmembed_parser() -> None:
    from service import cli as service_cli

    parser = service_cli.build_parser()
    args = parser.parse_args(["train", "--train", "x.jsonl", "--epochs", "2"])
    assert args.epochs == 2 and callable(args.func)


def test_data_errors_are_one_line(tmp_path, capsys) -> None:
    args = _parse(
        ["train", "--train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert args.func(args) == 1
    assert "manifest not found" in capsys.readouterr().err

"""`mmembed train`, `mmembed eval` and `mmembed data ...`, registered on the service's parser.

``register(subparsers)`` adds the subcommands to the ``mmembed`` argparse
parser (``service/cli.py`` calls it); each sets ``func`` to a function taking
the parsed args and returning an exit code. ``python -m model.training.cli ...`` runs
the same commands without the service installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.training import features, spoken, synthetic

log = logging.getLogger(__name__)

# TrainConfig fields set by dedicated arguments rather than the generic loop.
_SPECIAL = {
    "train",
    "val",
    "encoders",
    "random_init_overrides",
    "modalities",
    "mrl_dims",
    "progress",
    "baseline",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`~model.training.train.TrainConfig` field (``--batch-size`` ...)."""
    from model.training.train import TrainConfig

    parser.add_argument("--train", nargs="+", required=True, help="training dataset specs")
    parser.add_argument("--val", nargs="+", default=[], help="validation dataset specs")
    features.add_model_arguments(parser)
    parser.add_argument("--mrl-dims", nargs="+", type=int, default=None)
    parser.add_argument("--baseline", action="store_true", help="train the mean-pool baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = TrainConfig(train=[])
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SPECIAL or _flag(f.name) in parser._option_string_actions:
            continue
        default = getattr(defaults, f.name)
        kind = {"int": int, "float": float, "str": str}.get(
            str(f.type).split("|")[0].strip().removeprefix("<class '").removesuffix("'>"), str
        )
        if isinstance(default, bool):
            continue
        parser.add_argument(_flag(f.name), type=kind, default=default, help=f"default {default}")


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~model.training.train.TrainConfig` the parsed arguments describe."""
    from model.training.train import TrainConfig

    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    values["encoders"] = dict(args.encoder or [])
    values["modalities"] = list(args.modalities) if args.modalities else None
    values["progress"] = not args.no_progress
    if args.mrl_dims:
        values["mrl_dims"] = list(args.mrl_dims)
    else:
        values.pop("mrl_dims", None)
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from model.training.train import train

    cfg = train_config_from_args(args)
    summary = train(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "best_val"}, indent=2))
    if summary.get("best_val"):
        from model.training.evaluate import format_table

        print(
            format_table(summary["best_val"], title=f"validation, best step {summary['best_step']}")
        )
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder (mmembed train --out/best)"
    )
    parser.add_argument(
        "--baseline", default=None, help="also evaluate this mean-pool baseline folder"
    )
    parser.add_argument("--data", nargs="+", required=True, help="test dataset specs")
    parser.add_argument("--cache-dir", default="data/features")
    parser.add_argument(
        "--encoder",
        action="append",
        type=lambda v: tuple(v.split("=", 1)),
        metavar="MODALITY=SOURCE",
        help="load an encoder from another place (same weights)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only")
    parser.add_argument(
        "--audio-window",
        choices=("full", "trimmed"),
        default=None,
        help="encode test audio with this window instead of the checkpoint's",
    )


def _with_audio_window(model: Any, window: str) -> Any:
    """``model`` with its audio encoder switched to ``window`` (trainable weights unchanged)."""
    audio = dataclasses.replace(model.config.encoders["audio"], audio_window=window)
    model.config = dataclasses.replace(
        model.config, encoders={**model.config.encoders, "audio": audio}
    )
    model.encoders["audio"].config = audio
    return model


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from model.checkpoint import load_model
    from model.training.evaluate import format_table
    from model.training.features import FeatureCache, cache_pairs
    from model.training.train import _load_split, cached_pairs, evaluate_cached

    device = torch.device(args.device)
    model = load_model(args.checkpoint, encoder_overrides=dict(args.encoder or []) or None)
    if args.audio_window and "audio" in model.config.encoders:
        model = _with_audio_window(model, args.audio_window)
    model.to(device)
    data = _load_split(args.data, args.limit)
    rep, _ = cache_pairs(model, args.cache_dir, data.pairs, device=device)
    caches = {m: FeatureCache.for_model(args.cache_dir, model, m) for m in model.config.modalities}
    test, rep2 = cached_pairs(data.pairs, caches)
    for report in (data.skipped, rep, rep2):
        if report.count:
            print(report.summary(), file=sys.stderr)
    results: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "pairs": len(test),
        "model": evaluate_cached(model, test, caches, device),
    }
    print(format_table(results["model"], title=f"{args.checkpoint} ({len(test)} pairs)"))
    if args.baseline:
        from model.training.baseline import MeanPoolBaseline

        baseline = MeanPoolBaseline.load(args.baseline)
        for m, enc in baseline.encoder_config.items():
            mine = (
                dataclasses.asdict(model.config.encoders[m]) if m in model.config.encoders else None
            )
            if mine is not None and args.audio_window and m == "audio":
                # An explicit --audio-window evaluates both models on that window.
                enc = {**enc, "audio_window": args.audio_window}
            if mine != enc:
                raise ValueError(
                    f"baseline {args.baseline} was trained on {m} encoder {enc}, "
                    f"the checkpoint uses {mine}"
                )
        results["baseline"] = evaluate_cached(baseline.to(device), test, caches, device)
        print()
        print(
            format_table(
                results["baseline"], title=f"baseline {args.baseline} (mean-pool + linear)"
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _guard(func: Any) -> Any:
    """Print data and model errors as one line instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        from model.errors import ModelError
        from model.training.data import DataError

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            return int(func(args) or 0)
        except (DataError, ModelError, FileNotFoundError, ValueError) as exc:
            print(f"mmembed: error: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``data`` (``spoken``, ``synthetic``, ``features``)."""
    train_p = subparsers.add_parser(
        "train", help="train the alignment model (or baseline) on cached encoder features"
    )
    add_train_arguments(train_p)
    train_p.set_defaults(func=_guard(cmd_train))

    eval_p = subparsers.add_parser("eval", help="retrieval R@1/5/10 and MRR at 64..512 dims")
    add_eval_arguments(eval_p)
    eval_p.set_defaults(func=_guard(cmd_eval))

    data_p = subparsers.add_parser("data", help="build datasets and feature caches")
    data_sub = data_p.add_subparsers(dest="data_command", required=True)
    spoken_p = data_sub.add_parser("spoken", help="spoken-sentence dataset with espeak-ng")
    spoken.add_arguments(spoken_p)
    spoken_p.set_defaults(func=_guard(spoken.run))
    synth_p = data_sub.add_parser("synthetic", help="tiny coloured-shapes and tones dataset")
    synthetic.add_arguments(synth_p)
    synth_p.set_defaults(func=_guard(synthetic.run))
    feat_p = data_sub.add_parser("features", help="compute and cache frozen-encoder features")
    features.add_arguments(feat_p)
    feat_p.set_defaults(func=_guard(features.run))
    cmp_p = data_sub.add_parser(
        "compare-windows", help="time full vs trimmed Whisper windows on the same clips"
    )
    features.add_arguments(cmp_p)
    cmp_p.set_defaults(func=_guard(features.compare_windows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.training.cli")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The `mmembed` command line: one parser for every command.

Every command that builds a model takes the same model flags (:func:`model_options`);
their defaults come from the `MMEMBED_*` environment (see `service.settings.Settings`),
then the built-ins, and flags win over both. What each command does is in
`service/commands.py`; the training commands (train, eval, data) load
`model.training` only when they run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from model.constants import MATRYOSHKA_DIMS, MODALITIES
from service import commands as cmd

DTYPES = ("float32", "float16", "bfloat16")
WINDOWS = ("full", "trimmed")


def _command(
    commands: argparse._SubParsersAction, name: str, help_text: str, *, files: bool = False
) -> argparse.ArgumentParser:
    """A subcommand whose usage line stays one line (its --help lists the options)."""
    usage = "%(prog)s [options]" + (" [FILE ...]" if files else "")
    return commands.add_parser(name, help=help_text, usage=usage)


def model_options(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and place the model; the same on every command that has one."""
    group = parser.add_argument_group("model (default: MMEMBED_* environment, then built-ins)")
    group.add_argument("--preset", choices=["tiny", "base"], help="MMEMBED_PRESET (base)")
    group.add_argument("--checkpoint", type=Path, metavar="DIR", help="trained checkpoint folder")
    group.add_argument("--text-encoder", metavar="SRC", help="hub id or folder (text)")
    group.add_argument("--image-encoder", metavar="SRC", help="hub id or folder (image)")
    group.add_argument("--audio-encoder", metavar="SRC", help="hub id or folder (audio)")
    group.add_argument(
        "--audio-decoder",
        metavar="SRC",
        help="full Whisper checkpoint (hub id or folder) for the audio transcripts",
    )
    group.add_argument("--modalities", metavar="LIST", help="comma-separated (image,audio,text)")
    group.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 ... (cpu)")
    group.add_argument(
        "--dtype", choices=DTYPES, metavar="DTYPE", help="float32, float16, bfloat16 (float32)"
    )
    group.add_argument("--torch-threads", type=int, metavar="N", help="torch intra-op threads")
    group.add_argument(
        "--audio-window", choices=WINDOWS, metavar="W", help="Whisper window: full, trimmed"
    )


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    """Where the index is: a local folder, or a PostgreSQL database (which wins if given)."""
    parser.add_argument("--data-dir", type=Path, help="index folder (MMEMBED_DATA_DIR)")
    parser.add_argument(
        "--index-url", metavar="URL", help="postgresql://... index (MMEMBED_INDEX_URL)"
    )


def _inputs_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, help="image or audio files")
    parser.add_argument("--text", action="append", default=[], help="a text (repeatable)")


def _dims_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dims", type=int, choices=MATRYOSHKA_DIMS, default=MATRYOSHKA_DIMS[-1])


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = _command(commands, "serve", "run the HTTP API")
    serve.add_argument("--host", help="interface to bind (MMEMBED_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MMEMBED_PORT, 8000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    _data_dir_option(serve)
    model_options(serve)
    _llm_option(serve)
    serve.set_defaults(func=cmd.cmd_serve)


def _llm_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--llm",
        metavar="SRC",
        help="language model for /describe: folder, .gguf, hub id or 'none' (MMEMBED_LLM; "
        "default: the packaged SmolLM2 of the [llm] extra)",
    )


def _add_describe(commands: argparse._SubParsersAction) -> None:
    describe = _command(
        commands, "describe", "describe audio or image files in words; JSON lines", files=True
    )
    describe.add_argument("files", nargs="+", type=Path, help="audio or image files")
    describe.add_argument("--prompt", help="what to ask (default: the trained prompt)")
    describe.add_argument("--max-tokens", type=int, default=48, help="most tokens to write (48)")
    model_options(describe)
    _llm_option(describe)
    describe.set_defaults(func=cmd.cmd_describe, text=[])


def _add_embed_and_index(commands: argparse._SubParsersAction) -> None:
    embed = _command(commands, "embed", "embed files or texts; JSON lines on stdout", files=True)
    _inputs_options(embed)
    _dims_option(embed)
    model_options(embed)
    embed.set_defaults(func=cmd.cmd_embed)

    index = commands.add_parser("index", help="work on the index (data folder or database)")
    actions = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    add = _command(actions, "add", "embed files, folders or texts and store them", files=True)
    _inputs_options(add)
    add.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="also add the files in subfolders of a folder",
    )
    add.add_argument("--id", help="the item's id (one input only)")
    add.add_argument("--metadata", help="a JSON object stored with every item")
    _data_dir_option(add)
    model_options(add)
    add.set_defaults(func=cmd.cmd_index_add)
    find = _command(actions, "search", "search with a text or a file", files=True)
    _inputs_options(find)
    find.add_argument("--k", type=int, default=10)
    _dims_option(find)
    find.add_argument("--mode", choices=["exact", "adaptive"], default="exact")
    find.add_argument("--modality", choices=MODALITIES)
    _data_dir_option(find)
    model_options(find)
    find.set_defaults(func=cmd.cmd_index_search)
    stats = actions.add_parser("stats", help="item counts and index details")
    _data_dir_option(stats)
    stats.set_defaults(func=cmd.cmd_index_stats)
    export = _command(actions, "export", "write every item as JSON lines (id, modality, ...)")
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    _data_dir_option(export)
    export.set_defaults(func=cmd.cmd_index_export)
    again = actions.add_parser(
        "reembed",
        help="embed every item again with the model given (a new release) into another store",
        description="Reads every item of the index (--data-dir / --index-url) and writes it, "
        "embedded again from its text or its preview, with its id, metadata, text and "
        "preview, to the store --to-data-dir / --to-index-url, bound to the model given "
        "(default: the shipped release). The source is only read.",
    )
    _data_dir_option(again)
    again.add_argument("--to-data-dir", type=Path, help="the new index folder")
    again.add_argument("--to-index-url", metavar="URL", help="the new postgresql://... index")
    model_options(again)
    again.set_defaults(func=cmd.cmd_index_reembed)
    load = actions.add_parser("import", help="add the items of an export file")
    load.add_argument("file", type=Path, help="a JSON-lines file from `mmembed index export`")
    load.add_argument("--replace", action="store_true", help="upsert ids that exist already")
    _data_dir_option(load)
    load.set_defaults(func=cmd.cmd_index_import)


def _add_download(commands: argparse._SubParsersAction) -> None:
    download = _command(
        commands, "download", "fetch the preset's encoder weights into the Hugging Face cache"
    )
    download.add_argument("--cache-dir", type=Path, help="default: HF_HOME / HF_HUB_CACHE")
    model_options(download)
    download.set_defaults(func=cmd.cmd_download)


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = _command(
        commands, "train", "train the alignment model (or the baseline) on cached features"
    )
    train.description = (
        "Fields not given here come from --recipe (a TOML file, see "
        "model/training/recipe.py), else the defaults; --set changes any field."
    )
    run = train.add_argument_group("run (flags beat --set, --set beats the recipe)")
    run.add_argument(
        "--recipe", type=Path, metavar="FILE", help="TOML file: [data] [model] [optim] [run] ..."
    )
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. optim.lr=1e-3"
    )
    run.add_argument("--train", nargs="+", metavar="SPEC", help="training datasets")
    run.add_argument("--val", nargs="+", metavar="SPEC", help="validation datasets")
    run.add_argument("--cache-dir", metavar="DIR", help="feature cache (data/features)")
    run.add_argument("--out", metavar="DIR", help="run folder (runs/train)")
    run.add_argument("--resume", metavar="DIR", help="continue from a run's last/ folder")
    run.add_argument("--baseline", action="store_true", help="train the mean-pool baseline")
    run.add_argument("--epochs", type=int, metavar="N", help="optim.epochs (10)")
    run.add_argument("--max-steps", type=int, metavar="N", help="optim.max_steps (epochs')")
    run.add_argument("--batch-size", type=int, metavar="N", help="optim.batch_size (128)")
    run.add_argument("--lr", type=float, metavar="X", help="optim.lr (5e-4)")
    run.add_argument("--seed", type=int, metavar="N", help="run.seed (0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    model_options(train)
    train.set_defaults(func=cmd.cmd_train)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    evaluate = _command(commands, "eval", "retrieval R@1/5/10 and MRR of a --checkpoint")
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", nargs="+", metavar="SPEC", help="test sets")
    what.add_argument(
        "--recipe",
        metavar="FILE",
        help="a release recipe: speak its test sets alone and check the release (or "
        "--checkpoint) against the figures stored in it; exit 1 if any is off",
    )
    evaluate.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        metavar="X",
        help="with --recipe: how far a figure may be from the stored one (0.01: 5 of 500)",
    )
    evaluate.add_argument("--baseline", metavar="DIR", help="also this mean-pool baseline")
    evaluate.add_argument(
        "--cache-dir", metavar="DIR", help=f"feature cache (default: {cmd.EVAL_CACHE_DIR})"
    )
    evaluate.add_argument("--json", metavar="FILE", help="write the results here")
    evaluate.add_argument("--limit", type=int, metavar="N", help="first N pairs only")
    model_options(evaluate)
    evaluate.set_defaults(func=cmd.cmd_eval)


def _add_data(commands: argparse._SubParsersAction) -> None:
    data = _command(commands, "data", "build datasets and feature caches")
    kinds = data.add_subparsers(dest="data_command", required=True, metavar="KIND")
    spoken = kinds.add_parser("spoken", help="spoken-sentence dataset with espeak-ng")
    spoken.add_argument("--out", required=True, help="output folder (manifests + audio/)")
    spoken.add_argument(
        "--train-text",
        nargs="+",
        metavar="SOURCE",
        help="fortune folder, .dict.dz, WordNet folder or text file; PATH@N samples N, "
        "PATH@N:4-6 samples N of 4 to 6 words (default: fortunes and 20,000 GCIDE sentences)",
    )
    spoken.add_argument(
        "--test-set",
        action="append",
        metavar="NAME=SOURCE",
        help="a held-out test set, repeatable (default: devil=Devil's Dictionary, "
        "wordnet=WordNet usage examples)",
    )
    spoken.add_argument("--train-sentences", type=int, help="default: all")
    spoken.add_argument("--val-sentences", type=int, default=300)
    spoken.add_argument("--test-sentences", type=int, default=500, help="per test set")
    spoken.add_argument("--train-variants", type=int, default=2, help="voices per sentence")
    spoken.add_argument("--test-variants", type=int, default=1)
    spoken.add_argument("--noise-prob", type=float, default=0.3)
    spoken.add_argument("--seed", type=int, default=0)
    spoken.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    spoken.set_defaults(func=cmd.cmd_data_spoken)

    synthetic = kinds.add_parser("synthetic", help="tiny coloured-shapes and tones dataset")
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--per-caption-train", type=int, default=12)
    synthetic.add_argument("--per-caption-test", type=int, default=3)
    synthetic.add_argument("--modalities", default="image,audio", help="comma-separated")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(func=cmd.cmd_data_synthetic)

    shapes = kinds.add_parser(
        "shapes", help="coloured shapes drawn on white, to try image search (red-circle.png ...)"
    )
    shapes.add_argument("--out", required=True, type=Path, help="output folder")
    shapes.add_argument("--colours", default="red,blue,green", help="comma-separated")
    shapes.add_argument("--shapes", default="circle,square,triangle", help="comma-separated")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.set_defaults(func=cmd.cmd_data_shapes)

    for name, func, help_text in (
        ("features", cmd.cmd_data_features, "compute and cache frozen-encoder features"),
        ("compare-windows", cmd.cmd_data_compare_windows, "time full vs trimmed Whisper windows"),
    ):
        kind = _command(kinds, name, help_text)
        kind.add_argument("--data", nargs="+", required=True, metavar="SPEC", help="datasets")
        kind.add_argument("--cache-dir", required=True, metavar="DIR")
        kind.add_argument("--batch-size", type=int, default=16, metavar="N")
        kind.add_argument("--chunk", type=int, default=2000, metavar="N", help="items per chunk")
        kind.add_argument("--limit", type=int, metavar="N", help="first N pairs of each dataset")
        model_options(kind)
        kind.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmembed",
        description="Images, audio and text in one Matryoshka embedding space, with search.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_embed_and_index(commands)
    _add_describe(commands)
    _add_download(commands)
    _add_train(commands)
    _add_eval(commands)
    _add_data(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected failure is one line on stderr and exit status 1 (2: settings)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except cmd.CliError as exc:
        print(f"mmembed: error: {exc}", file=sys.stderr)
        return 2 if str(exc).startswith("invalid settings") else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

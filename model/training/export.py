"""Turn a trained checkpoint into a release: fp16 weights, encoders named by hub ID, metrics.

A release folder (``model/weights/NAME/``) is an ordinary checkpoint that
:meth:`model.Embedder.from_pretrained` loads, with three differences from
what training writes: the trainable tensors are float16 (half the bytes; the
model casts them back to float32 on load), the encoders are named by their
hub IDs rather than the local folders training read them from (the recorded
weight fingerprints still refuse any other weights), and ``metadata`` carries
the release name, version and evaluation results.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_checkpoint_config,
    release_weight_bytes,
    weights_beside,
    write_safetensors,
)

MAX_RELEASE_BYTES = 20 * 1024 * 1024


def export_release(
    checkpoint: str | Path,
    out: str | Path,
    *,
    name: str,
    version: str,
    hub_ids: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    max_bytes: int = MAX_RELEASE_BYTES,
    weights_from: str | Path | None = None,
) -> Path:
    """Write the release of ``checkpoint`` to ``out`` and return ``out``.

    Args:
        hub_ids: {modality: hub ID} for every encoder of the checkpoint.
        extra: more metadata (metrics, recipe, data) for the model card.
        weights_from: the release this one extends. Exported beside it, the folder
            stores only the tensors that are not the base's bit for bit and names it
            (:func:`model.checkpoint.weights_beside`); the size limit counts both.

    Raises:
        ValueError: an encoder has no hub ID, was a random demo encoder, or the
            release would be larger than ``max_bytes``.
    """
    document = read_checkpoint_config(checkpoint)
    encoders = document["encoders"]
    missing = sorted(set(encoders) - set(hub_ids))
    if missing:
        raise ValueError(f"no hub ID given for the {', '.join(missing)} encoder(s)")
    for modality, enc in encoders.items():
        if str(enc["source"]).startswith("random:"):
            raise ValueError(
                f"the {modality} encoder is a random demo network ({enc['source']}); "
                "a release needs real pretrained encoders"
            )
    tensors = {k: v.half() for k, v in load_file(str(Path(checkpoint) / WEIGHTS_FILE)).items()}
    for modality, hub_id in hub_ids.items():
        if modality in encoders:
            encoders[modality]["trained_from"] = encoders[modality]["source"]
            encoders[modality]["source"] = hub_id
            document["config"]["encoders"][modality]["source"] = hub_id
    document["dtype"] = "float16"
    document["metadata"] = {
        **document.get("metadata", {}),
        **dict(extra or {}),
        "release": name,
        "version": version,
        "trained": True,
    }
    document["trained"] = True
    out = Path(out)
    document.pop("weights_from", None)
    if weights_from is not None:
        tensors, shared = weights_beside(tensors, weights_from, out)
        if shared:
            document["weights_from"] = shared
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and moved into place whole: a refused or interrupted
    # export never leaves a folder that would be listed (and served) as a release.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        write_safetensors(tensors, staging / WEIGHTS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        size = sum(p.stat().st_size for p in staging.iterdir())
        if document.get("weights_from"):
            size += release_weight_bytes(out.parent / document["weights_from"])[0]
        if size > max_bytes:
            raise ValueError(
                f"the release is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB"
            )
        for name in (WEIGHTS_FILE, CONFIG_FILE):  # keep anything else there (the model card)
            out.mkdir(exist_ok=True)
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out

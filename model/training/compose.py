"""Compose a blend checkpoint from a two-sided model and a locked-text model (model/blend.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model.blend import blend_config, compose_state
from model.checkpoint import load_model, read_checkpoint_config, save_checkpoint
from model.multimodal import MultimodalModel

log = logging.getLogger(__name__)


def compose_checkpoints(
    main: str | Path,
    locked: str | Path,
    out: str | Path,
    *,
    dims: int,
    text_weight: float,
    media_weight: float,
) -> Path:
    """Write the blend of the checkpoints ``main`` (two-sided) and ``locked`` (locked text
    tower) to ``out``; returns ``out``. Raises ValueError where they cannot be blended."""
    a, b = load_model(main), load_model(locked)
    config = blend_config(
        a.config, b.config, dims=dims, text_weight=text_weight, media_weight=media_weight
    )
    model = MultimodalModel(config)
    state = compose_state(a.trainable_state_dict(), b.trainable_state_dict())
    missing = sorted(set(model.trainable_state_dict()) - set(state))
    if missing:
        raise ValueError(f"the two checkpoints lack tensors the blend needs: {missing[:5]}")
    model.load_state_dict(state, strict=False)
    metadata: dict[str, Any] = {
        "trained": True,
        "blend_of": {
            "main": {"checkpoint": str(main), **_summary(main)},
            "locked": {"checkpoint": str(locked), **_summary(locked)},
        },
    }
    save_checkpoint(model, out, metadata)
    log.info("blend of %s and %s written to %s", main, locked, out)
    return Path(out)


def _summary(checkpoint: str | Path) -> dict[str, Any]:
    meta = read_checkpoint_config(checkpoint).get("metadata", {})
    return {k: meta[k] for k in ("step", "val_score", "train_config") if k in meta}

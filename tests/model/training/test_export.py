"""A release: fp16 weights, encoders named by hub ID, loadable by Embedder.from_pretrained."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import Embedder
from model.checkpoint import save_checkpoint
from model.config import PRESETS
from model.multimodal import MultimodalModel
from model.release import HUB_IDS
from model.training.export import export_release

AUDIO_TEXT = {"audio": HUB_IDS["audio"], "text": HUB_IDS["text"]}


@pytest.mark.real_weights
def test_export_halves_the_weights_and_names_encoders_by_hub_id(
    hub_cache: Path, small_real_checkpoint: Path, shared_encoders: dict[str, str], tmp_path: Path
) -> None:
    out = export_release(
        small_real_checkpoint,
        tmp_path / "rel",
        name="audio-text-test",
        version="1.2.3",
        hub_ids=AUDIO_TEXT,
        extra={"metrics": {"R@1": 0.5}},
    )
    document = json.loads((out / "config.json").read_text())
    assert {m: e["source"] for m, e in document["encoders"].items()} == AUDIO_TEXT
    assert document["encoders"]["audio"]["trained_from"] == shared_encoders["audio"]
    assert document["metadata"]["metrics"] == {"R@1": 0.5}
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "config.json": 0o666 & ~umask,
        "model.safetensors": 0o666 & ~umask,
    }
    tensors = load_file(str(out / "model.safetensors"))
    assert {str(t.dtype) for t in tensors.values()} == {"torch.float16"}
    full = sum(
        t.numel() * 4 for t in load_file(str(small_real_checkpoint / "model.safetensors")).values()
    )
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == full // 2

    released = Embedder.from_pretrained(out)
    original = Embedder.from_checkpoint(small_real_checkpoint)
    assert released.info["model"] == "audio-text-test" and released.info["version"] == "1.2.3"
    texts = ["a quiet walk in the park", "the engine would not start"]
    np.testing.assert_allclose(
        released.embed_texts(texts), original.embed_texts(texts), rtol=0, atol=5e-3
    )


def test_export_refuses_random_encoders_missing_ids_and_oversize(
    tmp_path: Path, small_real_checkpoint: Path
) -> None:
    tiny = save_checkpoint(MultimodalModel(PRESETS["tiny"]), tmp_path / "tiny")
    with pytest.raises(ValueError, match="random demo network"):
        export_release(tiny, tmp_path / "a", name="x", version="1", hub_ids=HUB_IDS)
    with pytest.raises(ValueError, match="no hub ID given for the audio encoder"):
        export_release(
            small_real_checkpoint,
            tmp_path / "b",
            name="x",
            version="1",
            hub_ids={"text": HUB_IDS["text"]},
        )
    with pytest.raises(ValueError, match="the limit is"):
        export_release(
            small_real_checkpoint,
            tmp_path / "c",
            name="x",
            version="1",
            hub_ids=AUDIO_TEXT,
            max_bytes=1000,
        )
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*"))


@pytest.mark.real_weights
def test_a_release_exported_beside_the_one_it_extends_stores_only_what_it_adds(
    hub_cache: Path, tmp_path: Path, small_real_checkpoint: Path
) -> None:
    """As image-audio-text-v2 is exported beside audio-text-v1: the tensors kept bit for
    bit are read from the base's folder (``weights_from``), and the limit counts both."""
    import shutil

    from model.checkpoint import (
        release_weight_bytes,
        trainable_weights,
        weights_beside,
        write_safetensors,
    )

    base = export_release(
        small_real_checkpoint, tmp_path / "base", name="b", version="1", hub_ids=AUDIO_TEXT
    )
    changed = tmp_path / "changed"
    shutil.copytree(small_real_checkpoint, changed)
    tensors = load_file(str(changed / "model.safetensors"))
    tensors["resampler.latents"] = tensors["resampler.latents"] + 1.0
    write_safetensors(tensors, changed / "model.safetensors")

    out = export_release(
        changed, tmp_path / "next", name="n", version="2", hub_ids=AUDIO_TEXT, weights_from=base
    )
    document = json.loads((out / "config.json").read_text())
    assert document["weights_from"] == "base"
    assert list(load_file(str(out / "model.safetensors"))) == ["resampler.latents"]
    total, own = release_weight_bytes(out)
    assert total == own + (base / "model.safetensors").stat().st_size
    full = export_release(
        changed, tmp_path / "elsewhere" / "n", name="n", version="2", hub_ids=AUDIO_TEXT
    )
    merged, whole = trainable_weights(out), load_file(str(full / "model.safetensors"))
    assert set(merged) == set(whole) and all(torch.equal(merged[k], whole[k]) for k in whole)
    texts = ["a quiet walk in the park", "the engine would not start"]
    np.testing.assert_array_equal(
        Embedder.from_pretrained(out).embed_texts(texts),
        Embedder.from_pretrained(full).embed_texts(texts),
    )

    # Not beside it, or not keeping all of its tensors: the folder holds them all.
    away = export_release(
        changed,
        tmp_path / "away" / "n",
        name="n",
        version="2",
        hub_ids=AUDIO_TEXT,
        weights_from=base,
    )
    assert "weights_from" not in json.loads((away / "config.json").read_text())
    assert set(load_file(str(away / "model.safetensors"))) == set(whole)
    lacking = {k: v for k, v in whole.items() if k != "alignment_head.proj.weight"}
    kept, shared = weights_beside(lacking, base, tmp_path / "other")
    assert shared is None and set(kept) == set(lacking)  # else the base's would be read back
    with pytest.raises(ValueError, match="the limit is"):
        export_release(
            changed,
            tmp_path / "small",
            name="n",
            version="2",
            hub_ids=AUDIO_TEXT,
            weights_from=base,
            max_bytes=total - 1,
        )

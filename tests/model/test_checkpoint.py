import dataclasses
import json
import os
import stat

import numpy as np
import pytest
import torch

from model import Embedder
from model.checkpoint import load_model, read_checkpoint_config, save_checkpoint
from model.config import PRESETS
from model.errors import CheckpointMismatch
from model.multimodal import MultimodalModel

TEXTS = ["a cat on a mat", "rain tomorrow"]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny audio+text model with perturbed (not freshly initialised) weights, saved."""
    torch.manual_seed(0)
    model = MultimodalModel(PRESETS["tiny"].with_modalities(["audio", "text"]))
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "run1"
    save_checkpoint(model, path, metadata={"epochs": 3, "trained": True})
    return path, Embedder(model)


def test_files_and_config(trained_dir):
    path, _ = trained_dir
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    doc = read_checkpoint_config(path)
    assert doc["format_version"] == 1 and doc["trained"] is True
    assert doc["metadata"]["epochs"] == 3
    assert set(doc["encoders"]) == {"audio", "text"}
    assert doc["encoders"]["text"]["hidden_size"] == 48
    assert doc["tensors"]["resampler.latents"] == [64, 512]
    assert not any(name.startswith("encoders.") for name in doc["tensors"])
    assert doc["config"]["head"]["llm_dim"] == 128


def test_round_trip_gives_identical_embeddings(trained_dir):
    path, original = trained_dir
    loaded = Embedder.from_checkpoint(path)
    np.testing.assert_array_equal(loaded.embed_texts(TEXTS), original.embed_texts(TEXTS))
    clip = np.sin(np.arange(16_000) / 7).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.embed_audio([clip], 16_000), original.embed_audio([clip], 16_000)
    )
    assert loaded.info["trained"] is True and loaded.info["checkpoint"] == str(path)
    assert loaded.info["preset"] is None
    assert load_model(path).modalities == ("audio", "text")


def test_untrained_flag_is_kept(tmp_path):
    save_checkpoint(
        MultimodalModel(PRESETS["tiny"].with_modalities(["text"])), tmp_path, {"trained": False}
    )
    assert Embedder.from_checkpoint(tmp_path).info["trained"] is False


def _edit_config(src, dst, edit):
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    doc = json.loads((src / "config.json").read_text())
    edit(doc)
    (dst / "config.json").write_text(json.dumps(doc))
    return dst


def test_different_encoder_weights_are_refused(trained_dir, tmp_path):
    path, _ = trained_dir
    bad = _edit_config(
        path, tmp_path / "bad", lambda d: d["config"]["encoders"]["text"].update(seed=7)
    )
    with pytest.raises(
        CheckpointMismatch, match=r"text encoder .* different weights .*: .* expected"
    ):
        load_model(bad)


def test_different_encoder_shape_is_refused(trained_dir, tmp_path):
    path, _ = trained_dir

    def edit(doc):
        text = doc["config"]["encoders"]["text"]
        text["hidden_size"] = 32
        text["random_init"]["hidden_size"] = 32

    bad = _edit_config(path, tmp_path / "bad", edit)
    with pytest.raises(CheckpointMismatch, match="hidden size 32.*hidden size 48"):
        load_model(bad)


def test_different_head_shape_is_refused(trained_dir, tmp_path):
    path, _ = trained_dir
    bad = _edit_config(path, tmp_path / "bad", lambda d: d["config"]["head"].update(llm_dim=64))
    with pytest.raises(
        CheckpointMismatch,
        match=r"llm_projector\.proj\.bias has shape \(128,\) in the checkpoint.*\(64,\)",
    ):
        load_model(bad)


def test_other_format_version_and_missing_files_are_refused(trained_dir, tmp_path):
    path, _ = trained_dir
    bad = _edit_config(path, tmp_path / "bad", lambda d: d.update(format_version=99))
    with pytest.raises(CheckpointMismatch, match="format version 99"):
        load_model(bad)
    with pytest.raises(CheckpointMismatch, match="config.json is missing"):
        load_model(tmp_path / "nothing")


def test_encoder_override_with_the_same_weights_elsewhere(trained_dir, tmp_path):
    path, original = trained_dir
    model = load_model(path)
    text = model.encoders["text"]
    text.model.save_pretrained(tmp_path / "bert")
    text.tokenizer.save_pretrained(tmp_path / "bert")
    moved = Embedder.from_checkpoint(path, encoder_overrides={"text": str(tmp_path / "bert")})
    assert moved.info["encoders"]["text"] == str(tmp_path / "bert")
    np.testing.assert_allclose(moved.embed_texts(TEXTS), original.embed_texts(TEXTS), atol=1e-6)


def test_override_for_a_modality_the_checkpoint_lacks_is_refused(trained_dir):
    path, _ = trained_dir
    with pytest.raises(CheckpointMismatch, match="image"):
        load_model(path, encoder_overrides={"image": "/somewhere"})


def test_audio_frame_pool_is_saved_and_older_configs_default_to_one(tmp_path):
    config = PRESETS["tiny"].with_modalities(["audio", "text"])
    pooled = dataclasses.replace(
        config, adapter=dataclasses.replace(config.adapter, audio_frame_pool=4)
    )
    torch.manual_seed(0)
    model = MultimodalModel(pooled).eval()
    save_checkpoint(model, tmp_path / "pooled", {"trained": True})
    clip = np.sin(np.arange(24_000) / 5).astype(np.float32)
    loaded = Embedder.from_checkpoint(tmp_path / "pooled")
    assert loaded.model.config.adapter.audio_frame_pool == 4
    np.testing.assert_array_equal(
        loaded.embed_audio([clip], 16_000), Embedder(model).embed_audio([clip], 16_000)
    )

    def drop_pool(doc):
        del doc["config"]["adapter"]["audio_frame_pool"]

    older = _edit_config(tmp_path / "pooled", tmp_path / "older", drop_pool)
    assert load_model(older).config.adapter.audio_frame_pool == 1


def test_audio_window_is_saved_and_reported(tmp_path):
    config = PRESETS["tiny"].with_modalities(["audio", "text"])
    trimmed = dataclasses.replace(
        config,
        encoders={
            **config.encoders,
            "audio": dataclasses.replace(config.encoders["audio"], audio_window="trimmed"),
        },
    )
    save_checkpoint(MultimodalModel(trimmed).eval(), tmp_path / "t", {"trained": True})
    info = Embedder.from_checkpoint(tmp_path / "t").info
    assert info["audio_window"] == "trimmed" and info["trained"] is True


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_checkpoint_files_take_their_mode_from_the_umask(tmp_path, umask):
    """safetensors alone writes 0600; a server running as another user must still read it."""
    model = MultimodalModel(PRESETS["tiny"].with_modalities(["text"]))
    previous = os.umask(umask)
    try:
        path = save_checkpoint(model, tmp_path / "ckpt")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {"config.json": 0o666 & ~umask, "model.safetensors": 0o666 & ~umask}


def test_a_release_keeps_only_what_it_adds_to_the_weights_beside_it(trained_dir, tmp_path):
    """``weights_from``: a folder holding one tensor on top of another release's (as
    image-audio-text-v3 and v4 do on v2's) loads the base's tensors, then its own."""
    import shutil

    from safetensors.torch import load_file

    from model.checkpoint import trainable_weights, write_safetensors

    path, _ = trained_dir
    base = tmp_path / "base"
    shutil.copytree(path, base)
    base_tensors = load_file(str(base / "model.safetensors"))
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    doc = read_checkpoint_config(base) | {"weights_from": "base"}
    (overlay / "config.json").write_text(json.dumps(doc))
    changed = torch.full_like(base_tensors["resampler.latents"], 0.5)
    write_safetensors({"resampler.latents": changed}, overlay / "model.safetensors")
    merged = trainable_weights(overlay)
    assert set(merged) == set(base_tensors)
    assert torch.equal(merged["resampler.latents"], changed)
    assert torch.equal(
        merged["alignment_head.proj.weight"], base_tensors["alignment_head.proj.weight"]
    )
    model = load_model(overlay)
    assert torch.equal(model.resampler.latents.detach(), changed)
    shutil.rmtree(base)
    with pytest.raises(
        CheckpointMismatch, match="adds to the weights of base, which is not beside it"
    ):
        load_model(overlay)

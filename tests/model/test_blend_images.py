"""Images on a blend's locked branch, and Matryoshka prefixes drawn from both branches."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.blend import blend_embeddings
from model.checkpoint import load_model, save_checkpoint
from model.config import AdapterConfig, BlendConfig, EncoderConfig, PerceiverConfig, preset
from model.errors import CheckpointMismatch
from model.multimodal import MultimodalModel
from model.training.image_branch import (
    IMAGE_PARTS,
    CachedImages,
    ImageTrainSpec,
    locked_image,
    locked_text,
    report_baseline,
    retrieval_r1,
    train_image_path,
    train_mean_pool_baseline,
)

PREFIX = (32, 64, 128)


def test_the_prefix_layout_is_a_permutation_with_both_branches_in_every_prefix() -> None:
    split = BlendConfig(dims=256, text_weight=0.7, media_weight=0.2)
    mixed = dataclasses.replace(split, prefix_main=PREFIX)
    main, locked = torch.randn(5, 512), torch.randn(5, 512)
    a = blend_embeddings(main, locked, split, modality="text")
    b = blend_embeddings(main, locked, mixed, modality="text")
    torch.testing.assert_close(a @ a.T, b @ b.T)  # 512-dim similarities unchanged
    torch.testing.assert_close(torch.sort(a, dim=1).values, torch.sort(b, dim=1).values)
    head = F.normalize(main[:, :256], dim=-1) * math.sqrt(0.3)
    tail = F.normalize(locked[:, :256], dim=-1) * math.sqrt(0.7)
    torch.testing.assert_close(b[:, :64], torch.cat([head[:, :32], tail[:, :32]], dim=1))
    torch.testing.assert_close(b[:, 64:128], torch.cat([head[:, 32:64], tail[:, 32:64]], dim=1))
    torch.testing.assert_close(b[:, 256:], torch.cat([head[:, 128:], tail[:, 128:]], dim=1))
    assert mixed.prefix_sizes() == [(32, 32), (32, 32), (64, 64), (128, 128)]
    assert split.prefix_sizes() == [(256, 0), (0, 256)]


def test_a_locked_only_modality_has_no_main_part() -> None:
    blend = BlendConfig(dims=256, locked_only=("image",), prefix_main=PREFIX)
    out = blend_embeddings(None, torch.randn(2, 512), blend, modality="image")
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert torch.count_nonzero(out[:, :32]) == 0 and torch.count_nonzero(out[:, 32:64]) > 0


def test_impossible_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        BlendConfig(dims=256, prefix_main=(64, 32, 128))
    with pytest.raises(ValueError, match="one count per prefix"):
        BlendConfig(dims=256, prefix_main=(32, 64))
    with pytest.raises(ValueError, match="media modalities"):
        BlendConfig(locked_only=("text",))


def _image_blend_config():
    """A tiny blend whose images have an (untrained, random) EfficientNet-lite0 and join
    only the locked branch, as the image release's do."""
    config = preset("tiny", modalities=("image", "audio", "text"))
    image = EncoderConfig(
        modality="image",
        source=None,
        hidden_size=1280,
        family="efficientnet",
        random_init={"variant": "efficientnet-lite0"},
    )
    blend = BlendConfig(
        dims=256,
        text_weight=0.7,
        media_weight=0.2,
        perceiver=PerceiverConfig(dim=64, num_latents=8, depth=1, heads=4, ff_mult=2),
        adapter=AdapterConfig(hidden_mult=1),
        locked_only=("image",),
        prefix_main=PREFIX,
    )
    return dataclasses.replace(config, encoders={**config.encoders, "image": image}, blend=blend)


@pytest.fixture(scope="module")
def image_blend() -> MultimodalModel:
    torch.manual_seed(0)
    model = MultimodalModel(_image_blend_config()).eval()
    model.labels.fit(np.random.default_rng(0).normal(size=(1000, 48)))
    model.locked_branch.text_tower.fit(np.random.default_rng(1).normal(size=(200, 48)))
    return model


def _captioned(n: int, seed: int, model: MultimodalModel) -> CachedImages:
    """n random 'images' whose tokens carry their caption (a learnable mapping); 9
    spatial tokens rather than 49 keep the test fast (the branch takes any number)."""
    g = torch.Generator().manual_seed(seed)
    captions = torch.randn(n, 48, generator=g)
    mix = torch.randn(48, 1280, generator=torch.Generator().manual_seed(99))
    spatial = (captions @ mix).unsqueeze(1).repeat(1, 9, 1) + 0.1 * torch.randn(
        n, 9, 1280, generator=g
    )
    logits = torch.zeros(n, 1, 1280)
    tokens = torch.cat([logits, spatial], dim=1).half()
    return CachedImages(tokens, captions, np.arange(n), [f"caption {i}" for i in range(n)])


def test_training_the_image_path_learns_and_moves_nothing_else(
    image_blend: MultimodalModel,
) -> None:
    before = {
        n: t.clone() for n, t in image_blend.state_dict().items() if not n.startswith(IMAGE_PARTS)
    }
    train, val = _captioned(256, 1, image_blend), _captioned(64, 1, image_blend)
    start = retrieval_r1(
        locked_image(image_blend, val.tokens), locked_text(image_blend, val.captions), val.groups
    )
    log = train_image_path(
        image_blend,
        train,
        val,
        ImageTrainSpec(steps=80, batch_size=64, eval_every=20, lr=1e-2, warmup_steps=5),
    )
    assert log["best_val_r1"] >= max(0.3, start + 0.2), (start, log["history"])
    after = image_blend.state_dict()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} changed"
    out = image_blend.forward_features(
        "image", val.tokens[:4].float(), torch.ones(4, 10, dtype=torch.bool)
    )
    assert out.embedding.shape == (4, 512) and out.llm_tokens is None
    assert torch.count_nonzero(out.embedding[:, :32]) == 0  # no main part


def test_the_main_branch_image_path_trains_onto_given_targets() -> None:
    """Images in both branches (no locked_only): the two-sided branch's image path trains
    onto caption targets in its own space, and the image vector has both parts."""
    torch.manual_seed(0)
    config = _image_blend_config()
    config = dataclasses.replace(
        config,
        blend=dataclasses.replace(config.blend, locked_only=(), prefix_main=None),
        perceiver=config.blend.perceiver,  # small, as the locked branch's
        adapter=config.blend.adapter,
    )
    model = MultimodalModel(config).eval()
    model.labels.fit(np.random.default_rng(0).normal(size=(1000, 48)))
    train, val = _captioned(256, 3, model), _captioned(64, 3, model)
    proj = torch.randn(48, 256, generator=torch.Generator().manual_seed(5))
    targets = (
        F.normalize(train.captions @ proj, dim=-1),
        F.normalize(val.captions @ proj, dim=-1),
    )
    locked_before = {
        n: t.clone() for n, t in model.state_dict().items() if n.startswith("locked_branch.")
    }
    log = train_image_path(
        model,
        train,
        val,
        ImageTrainSpec(steps=80, batch_size=64, eval_every=20, lr=1e-2, warmup_steps=5),
        branch="main",
        targets=targets,
    )
    assert log["best_val_r1"] >= 0.3, log["history"]
    for name, tensor in locked_before.items():
        assert torch.equal(model.state_dict()[name], tensor), f"{name} changed"
    out = model.forward_features(
        "image", val.tokens[:4].float(), torch.ones(4, 10, dtype=torch.bool)
    )
    assert torch.count_nonzero(out.embedding[:, :256]) > 0 and out.latents is not None
    with pytest.raises(ValueError, match="branch must be"):
        train_image_path(model, train, val, ImageTrainSpec(steps=1), branch="main")


def test_the_mean_pool_baseline_learns_the_same_task(image_blend: MultimodalModel) -> None:
    train, val = _captioned(256, 4, image_blend), _captioned(64, 4, image_blend)
    spec = ImageTrainSpec(steps=60, batch_size=64, eval_every=20, lr=1e-2)
    baseline, log = train_mean_pool_baseline(image_blend, train, val, spec)
    assert log["best_val_r1"] >= 0.3
    report = report_baseline(image_blend, baseline, val)
    assert set(report) == {"image->text", "text->image"}
    assert report["image->text"]["R@1"] == pytest.approx(log["best_val_r1"])


def test_an_image_checkpoint_refuses_another_image_encoder(
    image_blend: MultimodalModel, tmp_path
) -> None:
    save_checkpoint(image_blend, tmp_path / "ckpt", {"trained": True})
    again = load_model(tmp_path / "ckpt")
    assert again.config.encoders["image"].family == "efficientnet"
    assert again.config.blend.prefix_main == PREFIX and again.config.blend.locked_only == ("image",)
    with pytest.raises(CheckpointMismatch, match="image encoder .* different weights"):
        load_model(tmp_path / "ckpt", encoder_overrides={"image": "efficientnet-lite0"})

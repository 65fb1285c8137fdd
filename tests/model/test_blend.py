"""A blend: a two-sided branch and a locked-text branch in one vector, composed from two models."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import Embedder
from model.blend import blend_embeddings
from model.checkpoint import load_model, save_checkpoint
from model.config import BlendConfig, ModelConfig, preset
from model.multimodal import MultimodalModel
from model.training.compose import compose_checkpoints

TEXTS = ["a cat on a mat", "rain tomorrow", "the cat sat on the mat", "stock prices fell"]


def _perturbed(model: MultimodalModel, seed: int) -> MultimodalModel:
    """A model whose weights are not a fresh initialisation (as if trained)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-sided tiny model, a locked-text tiny model (other shapes), and their blend."""
    root = tmp_path_factory.mktemp("blend")
    config = preset("tiny", modalities=("audio", "text"))
    main = _perturbed(MultimodalModel(config), 0)
    locked_config = config.with_overrides(
        {"text_tower": "locked", "perceiver": {"dim": 64, "num_latents": 8, "depth": 1}}
    )
    locked = _perturbed(MultimodalModel(locked_config), 1)
    locked.text_tower.fit(np.random.default_rng(0).normal(size=(100, 48)))
    save_checkpoint(main, root / "main", {"trained": True, "step": 7})
    save_checkpoint(locked, root / "locked", {"trained": True, "step": 9})
    compose_checkpoints(
        root / "main", root / "locked", root / "blend", dims=256, text_weight=0.7, media_weight=0.1
    )
    return {"main": root / "main", "locked": root / "locked", "blend": root / "blend"}


def _clips() -> list[np.ndarray]:
    t = np.arange(16_000) / 16_000
    return [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220.0, 440.0, 880.0)]


def test_blend_puts_each_part_at_its_weight() -> None:
    blend = BlendConfig(dims=256, text_weight=0.7, media_weight=0.1)
    main, locked = torch.randn(3, 512), torch.randn(3, 512)
    for text, weight in ((True, 0.7), (False, 0.1)):
        out = blend_embeddings(main, locked, blend, modality="text" if text else "audio")
        assert out.shape == (3, 512)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(out[:, 256:].norm(dim=-1), torch.full((3,), math.sqrt(weight)))
        torch.testing.assert_close(
            out[:, :256], F.normalize(main[:, :256], dim=-1) * math.sqrt(1 - weight)
        )
        torch.testing.assert_close(
            out[:, 256:], F.normalize(locked[:, :256], dim=-1) * math.sqrt(weight)
        )


def test_composed_blend_is_the_two_models_side_by_side(parts: dict[str, Path]) -> None:
    blend = Embedder.from_checkpoint(parts["blend"])
    main = Embedder.from_checkpoint(parts["main"])
    locked = Embedder.from_checkpoint(parts["locked"])
    assert blend.model.config.blend.perceiver.dim == 64  # the locked model's own shapes
    clips = _clips()
    for embed, weight in (
        (lambda e: e.embed_texts(TEXTS), 0.7),
        (lambda e: e.embed_audio(clips, 16_000), 0.1),
    ):
        a, b, both = embed(main), embed(locked), embed(blend)
        head = a[:, :256] / np.linalg.norm(a[:, :256], axis=1, keepdims=True)
        tail = b[:, :256] / np.linalg.norm(b[:, :256], axis=1, keepdims=True)
        np.testing.assert_allclose(both[:, :256], head * math.sqrt(1 - weight), atol=1e-5)
        np.testing.assert_allclose(both[:, 256:], tail * math.sqrt(weight), atol=1e-5)
    # Prefixes up to 256 dims are the main model's alone.
    np.testing.assert_allclose(
        blend.embed_texts(TEXTS, dims=64), main.embed_texts(TEXTS, dims=64), atol=1e-5
    )
    assert blend.weights_digest not in (main.weights_digest, locked.weights_digest)
    meta = json.loads((parts["blend"] / "config.json").read_text())["metadata"]
    assert meta["blend_of"]["main"]["step"] == 7 and meta["blend_of"]["locked"]["step"] == 9


def test_text_to_text_similarity_weighs_the_text_encoder(parts: dict[str, Path]) -> None:
    """Text-text cosine = 0.3 * main's (256-d prefix) + 0.7 * the text encoder's own."""
    blend = Embedder.from_checkpoint(parts["blend"])
    main = Embedder.from_checkpoint(parts["main"]).embed_texts(TEXTS, dims=256)
    encoder = blend.model.encoders["text"]
    with torch.inference_mode():
        out = encoder(encoder.preprocess(TEXTS))
    mask = out.mask.unsqueeze(-1).float()
    own = F.normalize((out.tokens * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    vectors = blend.embed_texts(TEXTS)
    # The locked part keeps 256 of the tiny encoder's 48 dims: all of them.
    expected = 0.3 * (main @ main.T) + 0.7 * (own @ own.T)
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-5)


def test_blend_round_trips_and_fp16_keeps_it(parts: dict[str, Path], tmp_path: Path) -> None:
    model = load_model(parts["blend"])
    assert model.config.blend == BlendConfig(
        dims=256,
        text_weight=0.7,
        media_weight=0.1,
        adapter=model.config.adapter,
        perceiver=dataclasses.replace(model.config.perceiver, dim=64, num_latents=8, depth=1),
    )
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config
    assert not any(
        n.startswith("locked_branch.text_tower") for n, _ in model.trainable_named_parameters()
    )
    half = MultimodalModel(model.config)
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    a = Embedder(model).embed_texts(TEXTS)
    b = Embedder(half).embed_texts(TEXTS)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_compose_refuses_what_cannot_be_blended(parts: dict[str, Path], tmp_path: Path) -> None:
    def refused(main: Path, locked: Path, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            compose_checkpoints(
                main, locked, tmp_path / "x", dims=256, text_weight=0.5, media_weight=0.5
            )

    refused(parts["main"], parts["main"], "must have a locked text tower")
    refused(parts["locked"], parts["locked"], "plain two-sided model")
    other = preset("tiny", modalities=("audio", "text")).with_overrides({"text_tower": "locked"})
    text = dataclasses.replace(other.encoders["text"], seed=3)
    other = dataclasses.replace(other, encoders={**other.encoders, "text": text})
    save_checkpoint(MultimodalModel(other), tmp_path / "other", {"trained": True})
    refused(parts["main"], tmp_path / "other", "must share their encoders")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dims": 0}, "blend dims must be between 1 and 511"),
        ({"dims": 512}, "blend dims must be between 1 and 511"),
        ({"text_weight": 1.5}, "blend text_weight must be between 0 and 1"),
        ({"media_weight": -0.1}, "blend media_weight must be between 0 and 1"),
    ],
)
def test_bad_blend_settings_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BlendConfig(**values)


def test_blend_is_set_by_composing_not_by_overrides() -> None:
    with pytest.raises(ValueError, match="cannot override model setting 'blend'"):
        preset("tiny").with_overrides({"blend": {"dims": 128}})
    with pytest.raises(ValueError, match="main branch trains its text tower"):
        dataclasses.replace(preset("tiny"), text_tower="locked", blend=BlendConfig())


def test_a_blend_is_not_trained(parts: dict[str, Path], tmp_path: Path) -> None:
    from model.training.recipe import TrainConfig
    from model.training.train import Trainer

    cfg = TrainConfig().with_values(
        {"model.checkpoint": str(parts["blend"]), "run.out": str(tmp_path / "run")}
    )
    with pytest.raises(ValueError, match="is a blend: it is composed from two trained models"):
        Trainer(cfg)

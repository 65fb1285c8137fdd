"""The prefix rotation (model/prefix_rotation.py) and how it is fitted
(model/training/prefix_rotation.py): every vector of every modality turns by one
orthogonal matrix, 512-dim similarities stay as they were, prefixes change, the matrix
survives a checkpoint in float32, and fitting moves what retrieves into the prefix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.checkpoint import load_model, save_checkpoint
from model.config import preset
from model.multimodal import MultimodalModel
from model.prefix_rotation import PrefixRotation
from model.training.prefix_rotation import (
    Pairs,
    RotationSpec,
    fit_rotation,
    install_rotation,
    prefix_r1,
    rotation_of,
)

SEED = torch.Generator().manual_seed(3)


def _random_rotation(dim: int = 512) -> torch.Tensor:
    return rotation_of(torch.randn(dim, dim, generator=SEED))


def test_the_rotation_refuses_a_matrix_that_is_not_one() -> None:
    rotation = PrefixRotation(4)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        rotation.set(torch.eye(3))
    with pytest.raises(ValueError, match="not orthogonal"):
        rotation.set(2 * torch.eye(4))
    turn = _random_rotation(4)
    rotation.set(turn)
    x = torch.randn(5, 4)
    torch.testing.assert_close(rotation.inverse(rotation(x)), x)
    torch.testing.assert_close(rotation(x), x @ turn.T)


def _inputs() -> dict[str, list]:
    t = np.arange(16_000) / 16_000
    return {
        "text": ["a red circle", "the weather will be cold tomorrow"],
        "image": [
            Image.new("RGB", (64, 64), (200, 30, 30)),
            Image.new("RGB", (64, 64), (20, 40, 220)),
        ],
        "audio": [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220.0, 660.0)],
    }


def test_every_modality_turns_and_512_dim_similarities_stay() -> None:
    config = preset("tiny", modalities=("image", "audio", "text"))
    plain = MultimodalModel(config).eval()
    rotated = MultimodalModel(dataclasses.replace(config, prefix_rotation=True)).eval()
    rotated.load_state_dict(plain.state_dict(), strict=False)
    turn = _random_rotation()
    install_rotation(rotated, turn)
    vectors = {}
    with torch.inference_mode():
        for modality, raw in _inputs().items():
            before = plain(modality, plain.preprocess(modality, raw), with_llm_tokens=False)
            after = rotated(modality, rotated.preprocess(modality, raw), with_llm_tokens=False)
            torch.testing.assert_close(
                after.embedding, before.embedding @ turn.T, atol=1e-5, rtol=0
            )
            vectors[modality] = (before.embedding, after.embedding)
    every_before = torch.cat([b for b, _ in vectors.values()])
    every_after = torch.cat([a for _, a in vectors.values()])
    torch.testing.assert_close(
        every_after @ every_after.T, every_before @ every_before.T, atol=1e-4, rtol=0
    )
    prefix_before = F.normalize(every_before[:, :64], dim=-1)
    prefix_after = F.normalize(every_after[:, :64], dim=-1)
    assert (prefix_after @ prefix_after.T - prefix_before @ prefix_before.T).abs().max() > 0.05


def test_a_checkpoint_keeps_the_rotation_in_float32(tmp_path: Path) -> None:
    config = dataclasses.replace(preset("tiny", modalities=("text",)), prefix_rotation=True)
    model = MultimodalModel(config).eval()
    identity_digest = model.weights_digest()
    turn = _random_rotation()
    install_rotation(model, turn)
    assert model.weights_digest() != identity_digest  # a store stamped before refuses it
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config.prefix_rotation
    assert torch.equal(loaded.prefix_rotation.weight, turn.float())
    assert loaded.weights_digest() == model.weights_digest()
    with torch.inference_mode():
        batch = model.preprocess("text", ["a red circle"])
        torch.testing.assert_close(loaded("text", batch).embedding, model("text", batch).embedding)


def _pairs(n: int, generator: torch.Generator) -> Pairs:
    """Pairs that match only in dims 8 to 16 of 32: dims 0 to 8 are noise."""
    shared = torch.randn(n, 8, generator=generator)
    media = torch.cat(
        [
            torch.randn(n, 8, generator=generator),
            shared,
            0.1 * torch.randn(n, 16, generator=generator),
        ],
        1,
    )
    text = torch.cat(
        [
            torch.randn(n, 8, generator=generator),
            shared,
            0.1 * torch.randn(n, 16, generator=generator),
        ],
        1,
    )
    return Pairs(media, text)


def _spec(**changes: object) -> RotationSpec:
    """A fit of 2,000 synthetic pairs (held out: 300) into an 8- and 16-dim prefix."""
    spec = RotationSpec(
        clips=2300,
        held_out=300,
        steps=200,
        eval_every=50,
        batch_size=256,
        lr=1e-2,
        dims=(8, 16),
        image_weight=0,
    )
    return dataclasses.replace(spec, **changes)


def test_fitting_moves_what_retrieves_into_the_prefix() -> None:
    generator = torch.Generator().manual_seed(0)
    fit, held_out = _pairs(2000, generator), _pairs(300, generator)
    spec = _spec()
    identity = torch.eye(32)
    assert prefix_r1(held_out, identity, 8) < 0.05  # the first 8 dims are noise
    rotation, info = fit_rotation(fit, held_out, spec)
    torch.testing.assert_close(rotation @ rotation.T, identity, atol=1e-4, rtol=0)
    assert prefix_r1(held_out, rotation, 8) > 0.8
    assert info["best_step"] > 0 and info["held_out_r1"] == pytest.approx(
        prefix_r1(held_out, rotation, 8), abs=1e-4
    )
    assert [h["step"] for h in info["history"]] == [0, 50, 100, 150, 200]


def test_a_fit_that_never_helps_keeps_the_identity() -> None:
    """Held-out pairs that match in the first 8 dims, where the fitted ones match in
    the next 8: every step that moves those into the prefix loses on the held-out
    pairs, so the identity is kept."""
    generator = torch.Generator().manual_seed(0)
    fit = _pairs(500, generator)
    shared = torch.randn(50, 8, generator=generator)
    held_out = Pairs(
        torch.cat([shared, 0.1 * torch.randn(50, 24, generator=generator)], 1),
        torch.cat([shared, 0.1 * torch.randn(50, 24, generator=generator)], 1),
    )
    spec = _spec(clips=550, held_out=50, steps=100, eval_every=25, dims=(8,))
    assert prefix_r1(held_out, torch.eye(32), 8) > 0.9
    rotation, info = fit_rotation(fit, held_out, spec)
    assert info["best_step"] == 0 and torch.equal(rotation, torch.eye(32))
    assert all(h["held_out_r1"] < info["held_out_r1"] for h in info["history"][1:])


def test_distractors_make_retrieval_harder_and_can_choose_the_step() -> None:
    """``prefix_r1`` with distractors counts a hit only where the match beats them too;
    ``select_in_pool`` chooses the step on held-out pairs among the fit's."""
    generator = torch.Generator().manual_seed(0)
    fit, held_out = _pairs(2000, generator), _pairs(300, generator)
    identity = torch.eye(32)
    alone, pooled = prefix_r1(held_out, identity, 32), prefix_r1(held_out, identity, 32, fit)
    assert 0 < pooled < alone
    assert prefix_r1(held_out, identity, 32, Pairs(fit.media[:0], fit.text[:0])) == alone
    spec = _spec(steps=100, select_in_pool=True)
    rotation, info = fit_rotation(fit, held_out, spec)
    assert info["held_out_r1"] == pytest.approx(prefix_r1(held_out, rotation, 8, fit), abs=1e-4)
    assert info["held_out_r1"] <= prefix_r1(held_out, rotation, 8)

"""The locked text tower: the text encoder's own geometry, fixed, in every checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import Embedder
from model.checkpoint import load_model, save_checkpoint
from model.config import ModelConfig, preset
from model.locked_text import LockedTextTower
from model.multimodal import MultimodalModel

TEXTS = ["a cat on a mat", "rain tomorrow", "the cat sat on the mat", "stock prices fell"]


def _anisotropic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows with a known order of variance: axis k has scale 1 / (k + 1)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) / (1.0 + np.arange(dim))


def _locked_tiny(modalities: tuple[str, ...] = ("audio", "text")) -> MultimodalModel:
    config = preset("tiny", modalities=modalities).with_overrides({"text_tower": "locked"})
    return MultimodalModel(config).eval()


def test_fit_gives_principal_axes_first_then_zero_padding() -> None:
    tower = LockedTextTower(text_dim=8, embed_dim=12)
    torch.testing.assert_close(tower.rotation, torch.eye(8, 12))  # unfitted: identity, padded
    x = _anisotropic(500, 8)
    tower.fit(x)
    rotation = tower.rotation.double()
    basis = rotation[:, :8]
    torch.testing.assert_close(
        basis.T @ basis, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert torch.count_nonzero(rotation[:, 8:]) == 0
    units = F.normalize(torch.from_numpy(x), dim=-1)
    second_moment = ((units @ basis) ** 2).mean(dim=0)
    assert torch.all(second_moment[:-1] >= second_moment[1:])  # largest axis first
    assert abs(float(basis[0, 0])) > 0.9  # the axis of largest scale leads
    again = LockedTextTower(text_dim=8, embed_dim=12)
    again.fit(x)
    torch.testing.assert_close(again.rotation, tower.rotation)  # signs fixed: refits agree


def test_fewer_sentences_than_dims_still_give_a_complete_basis() -> None:
    tower = LockedTextTower(text_dim=8, embed_dim=8)
    tower.fit(_anisotropic(3, 8))
    basis = tower.rotation.double()
    torch.testing.assert_close(
        basis.T @ basis, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_forward_keeps_every_similarity_and_ignores_padding() -> None:
    tower = LockedTextTower(text_dim=8, embed_dim=12)
    tower.fit(_anisotropic(200, 8))
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = tower(tokens, mask)
    assert out.shape == (3, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    pooled = torch.stack([tokens[i][mask[i]].mean(dim=0) for i in range(3)])
    pooled = F.normalize(pooled, dim=-1)
    torch.testing.assert_close(out @ out.T, pooled @ pooled.T, atol=1e-5, rtol=0)
    padded = tokens.clone()
    padded[~mask] = 100.0
    torch.testing.assert_close(tower(padded, mask), out)


@pytest.mark.parametrize(
    ("data", "message"),
    [(np.zeros((10, 7)), r"need \(N, 8\)"), (np.zeros((0, 8)), "at least one sentence")],
)
def test_fit_refuses_bad_inputs(data: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LockedTextTower(text_dim=8, embed_dim=12).fit(data)


def test_tower_cannot_be_wider_than_the_embedding() -> None:
    with pytest.raises(ValueError, match="cannot hold more dims"):
        LockedTextTower(text_dim=600, embed_dim=512)


def test_unknown_text_tower_is_refused() -> None:
    with pytest.raises(ValueError, match="text_tower must be one of"):
        preset("tiny").with_overrides({"text_tower": "frozen"})


def test_configs_from_before_the_setting_are_trained() -> None:
    data = preset("tiny").to_dict()
    del data["text_tower"]
    assert ModelConfig.from_dict(data).text_tower == "trained"


def test_locked_model_trains_nothing_of_text() -> None:
    model = _locked_tiny()
    assert model.text_locked and "text" not in model.adapters and "audio" in model.adapters
    assert not any(name.startswith("text_tower") for name, _ in model.trainable_named_parameters())
    out = model.forward_features("text", torch.randn(2, 4, 48), torch.ones(2, 4, dtype=torch.bool))
    assert out.embedding.shape == (2, 512)
    assert out.latents is None and out.llm_tokens is None
    assert not out.embedding.requires_grad  # nothing upstream of it can learn
    audio = model.forward_features(
        "audio", torch.randn(2, 8, 64), torch.ones(2, 8, dtype=torch.bool)
    )
    assert audio.embedding.requires_grad and audio.latents is not None


def test_checkpoint_keeps_the_fitted_rotation(tmp_path) -> None:
    model = _locked_tiny()
    before = model.weights_digest()
    model.text_tower.fit(_anisotropic(100, 48))
    assert model.weights_digest() != before  # the rotation decides the vector space
    save_checkpoint(model, tmp_path, {"trained": True})
    loaded = load_model(tmp_path)
    assert loaded.config.text_tower == "locked"
    torch.testing.assert_close(loaded.text_tower.rotation, model.text_tower.rotation)
    embedder = Embedder.from_checkpoint(tmp_path)
    np.testing.assert_array_equal(embedder.embed_texts(TEXTS), Embedder(model).embed_texts(TEXTS))
    assert embedder.info["text_tower"] == "locked"


def test_locked_text_through_the_embedder_ranks_as_the_encoder_does() -> None:
    model = _locked_tiny(("text",))
    model.text_tower.fit(_anisotropic(100, 48))
    embedder = Embedder(model)
    encoder = model.encoders["text"]
    with torch.inference_mode():
        out = encoder(encoder.preprocess(TEXTS))
    mask = out.mask.unsqueeze(-1).float()
    pooled = F.normalize((out.tokens * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    vectors = embedder.embed_texts(TEXTS)
    np.testing.assert_allclose(vectors @ vectors.T, pooled @ pooled.T, atol=1e-5)
    short = embedder.embed_texts(TEXTS, dims=64)
    assert short.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)

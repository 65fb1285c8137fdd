import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import PRESETS, PerceiverConfig
from model.heads import Temperature
from model.matryoshka import truncate
from model.multimodal import MultimodalModel
from model.training.losses import MatryoshkaLoss, alignment_uniformity, clip_loss


def _unit(n: int, d: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_clip_loss_matched_pairs_below_chance_and_shuffled_above():
    a = _unit(16)
    b = F.normalize(a + 0.1 * _unit(16, seed=1), dim=-1)
    scale = 1 / 0.07
    assert clip_loss(a, b, scale) < 0.1 * math.log(16)
    assert clip_loss(a, b.roll(1, dims=0), scale) > math.log(16)


def test_clip_loss_is_symmetric_and_log_n_at_zero_scale():
    a, b = _unit(8), _unit(8, seed=2)
    torch.testing.assert_close(clip_loss(a, b, 14.0), clip_loss(b, a, 14.0))
    torch.testing.assert_close(clip_loss(a, b, 0.0), torch.tensor(math.log(8)))


def test_clip_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        clip_loss(_unit(4), _unit(5), 1.0)


def test_temperature_init_and_clamp():
    t = Temperature(init=0.07, min_temperature=0.01)
    assert t.value == pytest.approx(0.07)
    assert float(t().detach()) == pytest.approx(1 / 0.07)
    with torch.no_grad():
        t.log_scale.fill_(10.0)
    assert float(t().detach()) == pytest.approx(100.0)
    assert t.value == pytest.approx(0.01)


def test_matryoshka_loss_is_the_weighted_sum_over_prefixes():
    a, b = _unit(8), _unit(8, seed=3)
    scale = torch.tensor(10.0)
    expected = sum(clip_loss(truncate(a, d), truncate(b, d), scale) for d in (64, 128, 256, 512))
    torch.testing.assert_close(MatryoshkaLoss()(a, b, scale), expected)
    weighted = MatryoshkaLoss(dims=(512, 64), weights=(2.0, 0.5))
    assert weighted.dims == [64, 512] and weighted.weights == [0.5, 2.0]
    expected_w = 0.5 * clip_loss(truncate(a, 64), truncate(b, 64), scale) + 2 * clip_loss(
        a, b, scale
    )
    torch.testing.assert_close(weighted(a, b, scale), expected_w)
    assert set(weighted.components(a, b, scale)) == {64, 512}


def test_matryoshka_loss_validates_dims():
    with pytest.raises(ValueError, match="dims"):
        MatryoshkaLoss(dims=(64, 100))
    with pytest.raises(ValueError, match="distinct"):
        MatryoshkaLoss(dims=(64, 64))
    with pytest.raises(ValueError, match="weights"):
        MatryoshkaLoss(dims=(64, 128), weights=(1.0,))


def test_alignment_uniformity_values():
    a = _unit(32)
    same = alignment_uniformity(a, a)
    assert same["alignment"] == pytest.approx(0.0, abs=1e-6)
    opposite = alignment_uniformity(a, -a)
    assert opposite["alignment"] == pytest.approx(4.0, rel=1e-5)
    collapsed = alignment_uniformity(a[:1].repeat(32, 1), a)
    assert collapsed["uniformity_a"] == pytest.approx(0.0, abs=1e-5)
    assert -4.0 < same["uniformity"] < -3.0  # random 512-d unit vectors: |x-y|^2 near 2


def test_gradients_reach_trainable_parts_only_and_loss_goes_below_chance():
    # A narrow resampler keeps the test fast; the embedding is still 512-d.
    config = dataclasses.replace(
        PRESETS["tiny"].with_modalities(["audio", "text"]),
        perceiver=PerceiverConfig(dim=64, num_latents=16, depth=1, heads=4, ff_mult=2),
    )
    model = MultimodalModel(config).train()
    texts = [f"caption {i} " + "word " * i for i in range(8)]
    enc = model.encode("text", model.preprocess("text", texts))
    other = model.encode("text", model.preprocess("text", [t.upper() + "!" for t in texts]))
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    loss_fn = MatryoshkaLoss()
    first = None
    for _ in range(10):
        a = model.forward_features("text", enc.tokens, enc.mask).embedding
        b = model.forward_features("text", other.tokens, other.mask).embedding
        loss = clip_loss(a, b, model.temperature())
        optimizer.zero_grad()
        (loss + loss_fn(a, b, model.temperature())).backward()
        if first is None:
            first = float(loss.detach())
            for name, p in model.trainable_named_parameters():
                if name.startswith(("adapters.audio", "llm_projector")):
                    assert p.grad is None, name  # unused modality; LLM head not in this loss
                else:
                    assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert all(p.grad is None for p in model.encoders.parameters())
        optimizer.step()
    assert float(loss.detach()) < math.log(8) < first + 1.0
    assert float(loss.detach()) < first


def test_similarity_distillation_is_zero_for_the_teacher_and_grows_with_disorder() -> None:
    from model.tokens import masked_mean
    from model.training.losses import similarity_distillation

    torch.manual_seed(0)
    teacher = torch.randn(16, 384)
    rotation = torch.linalg.qr(torch.randn(384, 384))[0]
    assert similarity_distillation(teacher @ rotation, teacher).item() == pytest.approx(0, abs=1e-5)
    noisy = teacher + 0.5 * torch.randn_like(teacher)
    unrelated = torch.randn(16, 384)
    small = similarity_distillation(noisy, teacher).item()
    large = similarity_distillation(unrelated, teacher).item()
    assert 0 < small < large
    student = torch.randn(16, 64, requires_grad=True)
    similarity_distillation(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match="student has 3 rows, teacher 16"):
        similarity_distillation(torch.randn(3, 8), teacher)

    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean(tokens, mask).tolist() == [[2.0, 3.0]]

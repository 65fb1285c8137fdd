import dataclasses

import pytest
import torch

from model.adapters import Adapter
from model.config import PRESETS, AdapterConfig, PerceiverConfig
from model.heads import AlignmentHead, LLMProjector
from model.multimodal import MultimodalModel
from model.perceiver import PerceiverResampler
from model.tokens import on_real_tokens, pool_frames

CFG = PerceiverConfig(dim=64, num_latents=8, depth=2, heads=4, ff_mult=2)


@pytest.fixture()
def resampler() -> PerceiverResampler:
    torch.manual_seed(0)
    return PerceiverResampler(config=CFG).eval()


def test_output_shape_is_fixed_whatever_the_length(resampler):
    for length in (1, 7, 300):
        out = resampler(torch.randn(3, length, 64), torch.ones(3, length, dtype=torch.bool))
        assert out.shape == (3, 8, 64)


def test_padding_has_no_influence(resampler):
    tokens = torch.randn(1, 5, 64)
    alone = resampler(tokens, torch.ones(1, 5, dtype=torch.bool))
    padded_tokens = torch.cat([tokens, 100 * torch.randn(1, 20, 64)], dim=1)
    mask = torch.zeros(1, 25, dtype=torch.bool)
    mask[:, :5] = True
    padded = resampler(padded_tokens, mask)
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_valid_tokens_do_matter(resampler):
    tokens = torch.randn(1, 5, 64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    changed = tokens.clone()
    changed[0, 2] = torch.randn(64)  # (a constant offset would vanish in LayerNorm)
    assert not torch.allclose(resampler(tokens, mask), resampler(changed, mask), atol=1e-4)


def test_fully_masked_rows_and_empty_inputs_stay_finite(resampler):
    tokens = torch.randn(2, 4, 64)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    out = resampler(tokens, mask)
    assert torch.isfinite(out).all()
    empty = resampler(torch.randn(2, 0, 64), torch.zeros(2, 0, dtype=torch.bool))
    assert empty.shape == (2, 8, 64) and torch.isfinite(empty).all()
    # A fully masked row reads only the latents, whatever its (padding) tokens hold.
    torch.testing.assert_close(out[1], empty[1], atol=1e-5, rtol=1e-5)


def test_batch_rows_are_independent(resampler):
    a, b = torch.randn(1, 6, 64), torch.randn(1, 6, 64)
    mask = torch.ones(1, 6, dtype=torch.bool)
    both = resampler(torch.cat([a, b]), torch.cat([mask, mask]))
    torch.testing.assert_close(both[:1], resampler(a, mask), atol=1e-5, rtol=1e-5)


def test_gradients_reach_latents_and_every_layer(resampler):
    out = resampler(torch.randn(2, 5, 64), torch.ones(2, 5, dtype=torch.bool))
    out.square().mean().backward()
    for name, p in resampler.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_adapter_and_heads_shapes():
    adapter = Adapter(in_dim=48, out_dim=64, config=AdapterConfig())
    assert adapter(torch.randn(2, 7, 48)).shape == (2, 7, 64)
    assert [type(m).__name__ for m in adapter.net] == [
        "LayerNorm",
        "Linear",
        "GELU",
        "Dropout",
        "Linear",
    ]
    assert adapter.net[1].out_features == 96
    latents = torch.randn(3, 8, 64)
    emb = AlignmentHead(dim=64, embed_dim=512)(latents)
    assert emb.shape == (3, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert LLMProjector(dim=64, llm_dim=96)(latents).shape == (3, 8, 96)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        PerceiverResampler(CFG)  # type: ignore[misc]


def test_llm_projector_gets_gradients_from_an_llm_loss(tiny_model):
    enc = tiny_model.encode("text", tiny_model.preprocess("text", ["hello there"]))
    out = tiny_model.forward_features("text", enc.tokens, enc.mask)
    out.llm_tokens.square().mean().backward()
    try:
        assert tiny_model.llm_projector.proj.weight.grad.abs().sum() > 0
        assert tiny_model.resampler.latents.grad.abs().sum() > 0
        assert tiny_model.alignment_head.proj.weight.grad is None
    finally:
        tiny_model.zero_grad(set_to_none=True)


def test_pool_frames_averages_real_frames_only():
    tokens = torch.arange(10.0).view(1, 5, 2).repeat(2, 1, 1)  # rows [0,1], [2,3], ... [8,9]
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pooled, pooled_mask = pool_frames(tokens, mask, 2)
    assert pooled.shape == (2, 3, 2)
    assert pooled[0].tolist() == [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]  # last group: one frame
    assert pooled[1].tolist() == [[1.0, 2.0], [4.0, 5.0], [0.0, 0.0]]  # padding not averaged in
    assert pooled_mask.tolist() == [[True, True, True], [True, True, False]]
    same, same_mask = pool_frames(tokens, mask, 1)
    assert same is tokens and same_mask is mask


def test_audio_frame_pool_must_be_positive():
    with pytest.raises(ValueError, match="audio_frame_pool"):
        AdapterConfig(audio_frame_pool=0)


def test_pooled_audio_path_ignores_padding_and_differs_from_unpooled():
    torch.manual_seed(0)
    config = PRESETS["tiny"].with_modalities(("audio", "text"))
    pooled_cfg = dataclasses.replace(
        config, adapter=dataclasses.replace(config.adapter, audio_frame_pool=4)
    )
    plain = MultimodalModel(config).eval()
    pooled = MultimodalModel(pooled_cfg).eval()
    pooled.load_state_dict(plain.state_dict())
    clip = torch.randn(1, 13, 64)
    padded = torch.cat([clip, torch.randn(1, 7, 64)], dim=1)
    mask = torch.tensor([[True] * 13 + [False] * 7])
    with torch.no_grad():
        alone = pooled.forward_features("audio", clip, torch.ones(1, 13, dtype=torch.bool))
        in_batch = pooled.forward_features("audio", padded, mask)
        unpooled = plain.forward_features("audio", clip, torch.ones(1, 13, dtype=torch.bool))
    torch.testing.assert_close(alone.embedding, in_batch.embedding, atol=1e-5, rtol=1e-5)
    assert (alone.embedding - unpooled.embedding).abs().max() > 1e-3


def test_on_real_tokens_skips_padding_rows():
    tokens = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    seen = []

    def double(rows):
        seen.append(rows.shape[0])
        return torch.cat([rows, rows], dim=-1) * 2

    out = on_real_tokens(double, tokens, mask)
    assert seen == [3] and out.shape == (2, 3, 4)
    assert out[0, 1].tolist() == [4.0, 6.0, 4.0, 6.0]
    assert out[0, 2].abs().sum() == 0 and out[1, 1:].abs().sum() == 0

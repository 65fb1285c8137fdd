import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from model.config import PRESETS, EncoderConfig
from model.encoders import AudioEncoder, build_encoder, fingerprints_match
from model.errors import CheckpointMismatch, InvalidInput, MissingModality, MissingWeights
from model.multimodal import MultimodalModel


def test_stage_shapes_image(tiny_model):
    batch = tiny_model.preprocess("image", [Image.new("RGB", (300, 200)), Image.new("L", (64, 64))])
    assert batch["pixel_values"].shape == (2, 3, 224, 224)
    enc = tiny_model.encode("image", batch)
    assert enc.tokens.shape == (2, 50, 32) and enc.mask.shape == (2, 50) and enc.mask.all()
    out = tiny_model.forward_features("image", enc.tokens, enc.mask)
    assert out.embedding.shape == (2, 512)
    assert out.latents.shape == (2, 64, 512)
    assert out.llm_tokens.shape == (2, 64, 128)


def test_stage_shapes_text(tiny_model):
    batch = tiny_model.preprocess("text", ["hi", "a much longer sentence here"])
    ids, attn = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == attn.shape and ids.shape[0] == 2
    assert attn[0].sum() == 4  # [CLS] h ##i [SEP]
    assert attn[1].all()
    enc = tiny_model.encode("text", batch)
    assert enc.tokens.shape == (2, ids.shape[1], 48)
    assert torch.equal(enc.mask, attn.bool())
    out = tiny_model.forward_features("text", enc.tokens, enc.mask)
    assert out.embedding.shape == (2, 512) and out.latents.shape == (2, 64, 512)


def test_stage_shapes_audio_mask_counts_valid_frames(tiny_model):
    clips = [np.zeros(48_000, dtype=np.float32), np.ones(16_000, dtype=np.float32) * 0.1]
    batch = tiny_model.preprocess("audio", clips)
    assert batch["input_features"].shape == (2, 80, 3000)
    assert batch["num_frames"].tolist() == [150, 50]
    enc = tiny_model.encode("audio", batch)
    assert enc.tokens.shape == (2, 150, 64)
    assert enc.mask.sum(dim=1).tolist() == [150, 50]
    assert enc.mask[1, :50].all() and not enc.mask[1, 50:].any()
    out = tiny_model.forward_features("audio", enc.tokens, enc.mask)
    assert out.embedding.shape == (2, 512)
    assert out.llm_tokens.shape == (2, 64, 128)


def test_audio_over_30s_joins_window_frames(tiny_model):
    batch = tiny_model.preprocess("audio", [np.zeros(45 * 16_000, dtype=np.float32)])
    assert batch["num_frames"].tolist() == [1500, 750]
    assert batch["window_clip"].tolist() == [0, 0]
    enc = tiny_model.encode("audio", batch)
    assert enc.tokens.shape == (1, 2250, 64) and enc.mask.all()


def test_audio_resampled_inside_preprocess(tiny_model):
    batch = tiny_model.preprocess("audio", [np.zeros((44_100, 2))], sampling_rate=44_100)
    assert batch["num_frames"].tolist() == [50]


def _audio_encoder(window: str) -> AudioEncoder:
    cfg = dataclasses.replace(PRESETS["tiny"].encoders["audio"], audio_window=window)
    encoder = build_encoder(cfg)
    assert isinstance(encoder, AudioEncoder)
    return encoder


def test_trimmed_window_matches_full_on_a_full_window():
    full, trimmed = _audio_encoder("full"), _audio_encoder("trimmed")
    rng = np.random.default_rng(0)
    batch = full.preprocess([rng.normal(scale=0.1, size=30 * 16_000).astype(np.float32)])
    with torch.inference_mode():
        a, b = full(batch), trimmed(batch)
    torch.testing.assert_close(a.tokens, b.tokens, atol=1e-4, rtol=1e-4)


def test_trimmed_window_runs_only_valid_frames_and_ignores_batch_padding():
    trimmed = _audio_encoder("trimmed")
    rng = np.random.default_rng(1)
    short = rng.normal(scale=0.1, size=16_000).astype(np.float32)
    long = rng.normal(scale=0.1, size=5 * 16_000).astype(np.float32)
    with torch.inference_mode():
        alone = trimmed(trimmed.preprocess([short]))
        together = trimmed(trimmed.preprocess([short, long]))
    assert alone.tokens.shape == (1, 50, 64)
    assert together.tokens.shape == (2, 250, 64)
    torch.testing.assert_close(alone.tokens[0], together.tokens[0, :50], atol=1e-5, rtol=1e-5)


def test_encoders_are_frozen_and_stay_in_eval(tiny_model):
    for encoder in tiny_model.encoders.values():
        assert not any(p.requires_grad for p in encoder.parameters())
    tiny_model.train()
    try:
        assert tiny_model.adapters.training and tiny_model.resampler.training
        assert not any(m.training for m in tiny_model.encoders.modules())
    finally:
        tiny_model.eval()
    trainable = {id(p) for p in tiny_model.trainable_parameters()}
    assert not trainable & {id(p) for p in tiny_model.encoders.parameters()}
    assert all(p.requires_grad for p in tiny_model.trainable_parameters())


def test_encode_outputs_can_enter_autograd(tiny_model):
    enc = tiny_model.encode("text", tiny_model.preprocess("text", ["hello"]))
    assert not enc.tokens.is_inference()
    out = tiny_model.forward_features("text", enc.tokens, enc.mask)
    out.embedding.sum().backward()
    assert tiny_model.adapters["text"].net[1].weight.grad is not None
    tiny_model.zero_grad(set_to_none=True)


def test_tiny_encoders_are_the_same_in_every_build():
    a = build_encoder(PRESETS["tiny"].encoders["text"])
    b = build_encoder(PRESETS["tiny"].encoders["text"])
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = build_encoder(dataclasses.replace(PRESETS["tiny"].encoders["text"], seed=1))
    assert a.fingerprint() != other.fingerprint()


def test_text_limits_and_errors(tiny_model):
    encoder = tiny_model.encoder("text")
    assert encoder.max_tokens == 128
    assert encoder.count_tokens(["hi", "abc def"]) == [4, 8]
    with pytest.raises(InvalidInput, match="text 1 is empty"):
        tiny_model.preprocess("text", ["ok", "   "])
    with pytest.raises(InvalidInput, match=r"text 0 is 202 tokens long; the limit is 128"):
        tiny_model.preprocess("text", ["x" * 200])
    with pytest.raises(InvalidInput, match="list of strings"):
        tiny_model.preprocess("text", "not a list")
    with pytest.raises(InvalidInput, match="must be a string"):
        tiny_model.preprocess("text", ["ok", 3])


def test_image_errors(tiny_model):
    with pytest.raises(InvalidInput, match="image 1 must be a PIL image"):
        tiny_model.preprocess("image", [Image.new("RGB", (8, 8)), np.zeros((8, 8, 3))])


def test_model_with_a_subset_of_modalities():
    config = PRESETS["tiny"].with_modalities(["audio", "text"])
    model = MultimodalModel(config)
    assert model.modalities == ("audio", "text")
    assert "image" not in model.adapters
    with pytest.raises(MissingModality, match="no image encoder"):
        model.preprocess("image", [Image.new("RGB", (8, 8))])
    with pytest.raises(MissingModality, match="no image encoder"):
        model.forward_features("image", torch.zeros(1, 50, 32), torch.ones(1, 50, dtype=torch.bool))
    with pytest.raises(InvalidInput, match="unknown modality"):
        model.encode("video", {})


def test_forward_features_checks_shapes(tiny_model):
    with pytest.raises(InvalidInput, match=r"text tokens must be \(B, T, 48\)"):
        tiny_model.forward_features(
            "text", torch.zeros(1, 5, 64), torch.ones(1, 5, dtype=torch.bool)
        )
    with pytest.raises(InvalidInput, match="mask shape"):
        tiny_model.forward_features(
            "text", torch.zeros(1, 5, 48), torch.ones(1, 4, dtype=torch.bool)
        )


def _save_tiny_bert(path, hidden=48):
    cfg = BertConfig(
        vocab_size=256,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        max_position_embeddings=128,
    )
    model = BertModel(cfg, add_pooling_layer=False)
    model.save_pretrained(path)
    from model.encoders import tiny_tokenizer

    tiny_tokenizer().save_pretrained(path)
    return model


def test_missing_weights_are_refused(tmp_path):
    _save_tiny_bert(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = sorted(k for k in weights if "layer.1.output" in k)
    save_file(
        {k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors"
    )
    cfg = EncoderConfig(modality="text", source=str(tmp_path), hidden_size=48)
    with pytest.raises(MissingWeights, match=r"lacks \d+ weights.*layer\.1\.output"):
        build_encoder(cfg)


def test_source_that_does_not_exist_is_refused(tmp_path):
    cfg = EncoderConfig(modality="audio", source=str(tmp_path / "nowhere"), hidden_size=512)
    with pytest.raises(MissingWeights, match="cannot load the audio encoder"):
        build_encoder(cfg)


def test_hidden_size_must_match_the_config(tmp_path):
    _save_tiny_bert(tmp_path, hidden=32)
    cfg = EncoderConfig(modality="text", source=str(tmp_path), hidden_size=48)
    with pytest.raises(CheckpointMismatch, match="hidden size 32.*expects 48"):
        build_encoder(cfg)


def test_whisper_full_checkpoint_layout_loads_through_key_mapping(tmp_path):
    reference = _audio_encoder("full")
    prefixed = {f"encoder.{k}": v.contiguous() for k, v in reference.model.state_dict().items()}
    reference.model.config.save_pretrained(tmp_path)
    save_file(prefixed, tmp_path / "model.safetensors")
    reference.feature_extractor.save_pretrained(tmp_path)
    loaded = build_encoder(EncoderConfig(modality="audio", source=str(tmp_path), hidden_size=64))
    assert loaded.fingerprint() == reference.fingerprint()


def test_fingerprint_survives_half_precision_but_not_other_weights():
    encoder = build_encoder(PRESETS["tiny"].encoders["text"])
    fp32 = encoder.fingerprint()
    encoder.model.to(torch.bfloat16)
    assert fingerprints_match(encoder.fingerprint(), fp32) == (True, "")
    other = build_encoder(dataclasses.replace(PRESETS["tiny"].encoders["text"], seed=1))
    same, why = fingerprints_match(other.fingerprint(), fp32)
    assert not same and "expected" in why


def test_missing_tokenizer_files_are_refused(tmp_path):
    _save_tiny_bert(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).unlink(missing_ok=True)
    cfg = EncoderConfig(modality="text", source=str(tmp_path), hidden_size=48)
    with pytest.raises(MissingWeights, match="cannot load the text tokenizer"):
        build_encoder(cfg)

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from model import MATRYOSHKA_DIMS, Embedder
from model.errors import InvalidInput, MissingModality
from model.matryoshka import truncate

TEXTS = [
    "a dog barks at the mailman",
    "short",
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun",
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit_rows(x: np.ndarray, n: int, dims: int) -> None:
    assert x.shape == (n, dims)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.normal(size=int(seconds * 16_000))).astype(np.float32)


@pytest.mark.parametrize("dims", MATRYOSHKA_DIMS)
def test_text_output_contract(tiny_embedder, dims):
    _unit_rows(tiny_embedder.embed_texts(TEXTS, dims=dims), 3, dims)


def test_image_and_audio_output_contract(tiny_embedder):
    images = [
        Image.new("RGB", (320, 240), "red"),
        Image.new("RGBA", (50, 90)),
        Image.new("L", (9, 9)),
    ]
    _unit_rows(tiny_embedder.embed_images(images, dims=128), 3, 128)
    clips = [_clip(1.5, 0), np.zeros((22_050, 2), dtype=np.float32)]
    _unit_rows(tiny_embedder.embed_audio(clips, sampling_rate=22_050, dims=256), 2, 256)


def test_truncation_equals_prefix_of_full_embedding(tiny_embedder):
    full = tiny_embedder.embed_texts(TEXTS)
    small = tiny_embedder.embed_texts(TEXTS, dims=64)
    np.testing.assert_allclose(small, truncate(full, 64), atol=1e-6)
    head = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(small, head, atol=1e-6)


def test_text_padding_invariance(tiny_embedder):
    alone = tiny_embedder.embed_texts([TEXTS[1]])[0]
    in_batch = tiny_embedder.embed_texts(TEXTS)[1]
    assert _cos(alone, in_batch) > 0.9999


def test_outputs_follow_input_order(tiny_embedder):
    batch = tiny_embedder.embed_texts(TEXTS)
    singles = np.stack([tiny_embedder.embed_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert _cos(batch[0], batch[2]) < 0.9999  # different texts, different rows


@pytest.mark.parametrize("window", ["full", "trimmed"])
def test_audio_padding_invariance(window):
    embedder = Embedder.from_preset("tiny", modalities=["audio"])
    if window == "trimmed":
        import dataclasses

        from model.multimodal import MultimodalModel

        cfg = embedder.model.config
        audio = dataclasses.replace(cfg.encoders["audio"], audio_window="trimmed")
        trimmed_cfg = dataclasses.replace(cfg, encoders={"audio": audio})
        model = MultimodalModel(trimmed_cfg)
        model.load_state_dict(embedder.model.state_dict())
        embedder = Embedder(model)
    clip = _clip(2.0, 1)
    alone = embedder.embed_audio([clip], 16_000)[0]
    with_longer = embedder.embed_audio([_clip(7.0, 2), clip, _clip(4.0, 3)], 16_000)[1]
    assert _cos(alone, with_longer) > 0.9999


def test_batching_inside_gives_the_same_rows(tiny_model):
    small_batches = Embedder(tiny_model, max_batch_size=2)
    big_batch = Embedder(tiny_model, max_batch_size=32)
    texts = [f"sentence number {i} {'x' * i}" for i in range(7)]
    np.testing.assert_allclose(
        small_batches.embed_texts(texts), big_batch.embed_texts(texts), atol=1e-5
    )


def test_silence_gets_a_regular_embedding(tiny_embedder):
    out = tiny_embedder.embed_audio([np.zeros(16_000, dtype=np.float32)], 16_000)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out), 1.0, rtol=1e-5)


def test_long_audio_is_windowed(tiny_embedder):
    out = tiny_embedder.embed_audio([_clip(40.0, 4)], 16_000)
    _unit_rows(out, 1, 512)
    first_30s = tiny_embedder.embed_audio([_clip(40.0, 4)[: 30 * 16_000]], 16_000)
    assert _cos(out[0], first_30s[0]) < 0.9999  # the last 10 s count


def test_empty_lists_give_empty_arrays(tiny_embedder):
    assert tiny_embedder.embed_texts([], dims=64).shape == (0, 64)
    assert tiny_embedder.embed_images([]).shape == (0, 512)
    assert tiny_embedder.embed_audio([], 16_000).shape == (0, 512)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.embed_texts(["ok", ""]), "text 1 is empty"),
        (lambda e: e.embed_texts(["ok"], dims=100), "dims must be one of"),
        (lambda e: e.embed_texts(["word " * 200]), "tokens long; the limit is 128"),
        (lambda e: e.embed_texts("not a list"), "list of strings"),
        (lambda e: e.embed_images(["nope"]), "image 0 must be a PIL image"),
        (lambda e: e.embed_audio([np.zeros(0)], 16_000), "clip 0 is empty"),
        (lambda e: e.embed_audio([np.full(10, np.nan)], 16_000), "NaN"),
        (
            lambda e: e.embed_audio([np.zeros(601 * 8_000)], 8_000),
            "601.0 s long; the limit is 600 s",
        ),
        (lambda e: e.embed_audio(np.zeros(100), 16_000), "list of numpy arrays"),
        (lambda e: e.embed_audio([np.zeros(100)], -1), "sampling_rate"),
    ],
)
def test_bad_inputs_are_invalid_input(tiny_embedder, call, message):
    with pytest.raises(InvalidInput, match=message):
        call(tiny_embedder)


def test_missing_modality_and_info():
    embedder = Embedder.from_preset("tiny", modalities=("audio", "text"))
    assert embedder.modalities == ("audio", "text")
    with pytest.raises(MissingModality, match="no image encoder"):
        embedder.embed_images([Image.new("RGB", (8, 8))])
    info = embedder.info
    assert info["preset"] == "tiny" and info["checkpoint"] is None
    assert info["trained"] is False and info["demo"] is True
    assert set(info["encoders"]) == {"audio", "text"}
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["embed_dim"] == 512 and info["dims"] == [64, 128, 256, 512]
    import json

    json.dumps(info)


def test_count_tokens_and_limit(tiny_embedder):
    assert tiny_embedder.max_text_tokens == 128
    assert tiny_embedder.count_tokens(["hi", "abc def"]) == [4, 8]


def test_half_precision_needs_cuda(tiny_model):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Embedder(tiny_model, dtype="float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        Embedder(tiny_model, dtype="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_cuda_without_cuda_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="CUDA is not available"):
        Embedder(tiny_model, device="cuda")


def test_presets_are_handed_out_as_copies():
    from model.config import PRESETS, preset

    config = preset("tiny")
    config.encoders["text"].random_init["hidden_size"] = 7
    assert PRESETS["tiny"].encoders["text"].random_init["hidden_size"] == 48


def test_unknown_preset_and_bad_overrides():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        Embedder.from_preset("huge")
    with pytest.raises(ValueError, match="does not have"):
        Embedder.from_preset("tiny", modalities=["text"], encoders={"audio": "/x"})


def test_concurrent_calls_for_different_modalities(tiny_embedder):
    clip = _clip(1.0, 5)
    expected_text = tiny_embedder.embed_texts(TEXTS)
    expected_audio = tiny_embedder.embed_audio([clip], 16_000)
    results: dict[str, list[np.ndarray]] = {"text": [], "audio": [], "tokens": []}

    def texts():
        for _ in range(3):
            results["text"].append(tiny_embedder.embed_texts(TEXTS))

    def audio():
        for _ in range(3):
            results["audio"].append(tiny_embedder.embed_audio([clip], 16_000))

    def tokens():
        for _ in range(30):
            results["tokens"].append(np.array(tiny_embedder.count_tokens(TEXTS)))

    threads = [threading.Thread(target=f) for f in (texts, audio, tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results["text"]) == 3 and len(results["audio"]) == 3 and len(results["tokens"]) == 30
    for out in results["text"]:
        np.testing.assert_allclose(out, expected_text, atol=1e-5)
    for out in results["audio"]:
        np.testing.assert_allclose(out, expected_audio, atol=1e-5)

"""Encoder runtimes: ONNX Runtime gives float32 PyTorch's results, its int8 variant close
ones, and the setting reaches the encoders.

Exporting an encoder to ONNX takes seconds on a small CPU, so each exported
model here is built once per module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import subprocess
import sys
import typing
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model import Embedder
from model.checkpoint import save_checkpoint
from model.config import PRESETS, preset
from model.encoders import build_encoder
from model.errors import RuntimeUnavailable
from model.multimodal import MultimodalModel
from model.runtime import ENCODER_RUNTIMES, _quiet_exporter, cache_key, onnx_runtimes
from model.training.spoken import read_source
from service.app import load_embedder
from service.settings import Settings

TEXTS = [
    "a dog",
    "Two dogs are playing with a red ball in the park.",
    "The train to Edinburgh departs from platform four, twenty minutes late.",
]


def _clips(speech) -> tuple[list[np.ndarray], int]:
    samples, rate = speech
    long = np.tile(samples, int(np.ceil(32 * rate / len(samples))))  # over 30 s: two windows
    return [samples, samples[: rate // 2], long], rate


def _tiny(
    seed: int, runtime: str, window: str = "full", modalities: tuple[str, ...] = ("audio", "text")
) -> Embedder:
    config = PRESETS["tiny"].with_modalities(modalities)
    audio = dataclasses.replace(config.encoders["audio"], audio_window=window)
    config = dataclasses.replace(config, encoders={**config.encoders, "audio": audio})
    torch.manual_seed(seed)  # the same random heads for both runtimes
    return Embedder(MultimodalModel(config), encoder_runtime=runtime)


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[Embedder, Embedder]:
    """(torch, onnx) tiny audio+text embedders with the same weights, audio in full windows."""
    return _tiny(0, "torch"), _tiny(0, "onnx")


def test_onnx_embeddings_match_torch_on_tiny(tiny_pair, speech):
    ref, fast = tiny_pair
    assert ref.info["encoder_runtime"] == {"audio": "torch", "text": "torch"}
    assert fast.info["encoder_runtime"] == {"audio": "onnx", "text": "onnx"}
    np.testing.assert_allclose(fast.embed_texts(TEXTS), ref.embed_texts(TEXTS), atol=1e-5)
    clips, rate = _clips(speech)
    np.testing.assert_allclose(
        fast.embed_audio(clips, rate), ref.embed_audio(clips, rate), atol=1e-5
    )


def test_onnx_trimmed_window_matches_torch(speech):
    ref, fast = (_tiny(1, runtime, "trimmed", ("audio",)) for runtime in ("torch", "onnx"))
    clips, rate = _clips(speech)
    batch = ref.model.preprocess("audio", clips, sampling_rate=rate)
    with torch.inference_mode():
        want = ref.model.encoders["audio"](batch)
        got = fast.model.encoders["audio"](batch)
    assert torch.equal(got.mask, want.mask)
    assert got.tokens.shape == want.tokens.shape  # (3, frames of the 32 s clip, 64)
    torch.testing.assert_close(got.tokens, want.tokens, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        fast.embed_audio(clips, rate), ref.embed_audio(clips, rate), atol=1e-5
    )


def test_checkpoint_saved_and_loaded_across_runtimes(tiny_pair, tmp_path):
    # Fingerprints come from the PyTorch weights, which the ONNX runtime leaves in place:
    # a model running in ONNX saves a checkpoint that loads in either runtime.
    ref, fast = tiny_pair
    save_checkpoint(fast.model, tmp_path / "ckpt")
    loaded = Embedder.from_checkpoint(tmp_path / "ckpt", encoder_runtime="torch")
    np.testing.assert_allclose(loaded.embed_texts(TEXTS), ref.embed_texts(TEXTS), atol=1e-5)


def _real_minilm_pair(minilm_dir: Path, int8: bool):
    """Pooled float32 PyTorch and ONNX outputs of real MiniLM on 64 fortunes, and the
    token outputs: ((64, 384), (64, 384), EncoderOutput, EncoderOutput)."""
    config = preset("base", encoders={"text": str(minilm_dir)}, modalities=["text"])
    ref = build_encoder(config.encoders["text"])
    fast = build_encoder(config.encoders["text"])
    fast.use_onnx(threads=torch.get_num_threads(), int8=int8)
    sentences = read_source("/usr/share/games/fortunes")[:64]
    batch = ref.preprocess(sentences)
    with torch.inference_mode():
        want, got = ref(batch), fast(batch)
    mask = want.mask.unsqueeze(-1).float()
    pooled_want = (want.tokens * mask).sum(1) / mask.sum(1)  # (64, 384)
    pooled_got = (got.tokens * mask).sum(1) / mask.sum(1)
    return pooled_want, pooled_got, want, got


@pytest.mark.real_weights
def test_real_minilm_in_onnx_keeps_its_neighbourhoods(minilm_dir):
    pooled_want, pooled_got, want, got = _real_minilm_pair(minilm_dir, int8=False)
    cos = torch.nn.functional.cosine_similarity(pooled_got, pooled_want)
    assert cos.min() > 0.99999, cos.min()
    assert (got.tokens - want.tokens)[want.mask].abs().max() < 1e-3


@pytest.mark.real_weights
def test_real_minilm_in_onnx_int8_stays_close(minilm_dir):
    # Measured here (AVX2, no VNNI): pooled cosine mean 0.99499, min 0.98180. Per-tensor
    # int8 on every linear layer gave a minimum near 0.87 on 300 other fortunes.
    pooled_want, pooled_got, _, _ = _real_minilm_pair(minilm_dir, int8=True)
    cos = torch.nn.functional.cosine_similarity(pooled_got, pooled_want)
    assert cos.mean() > 0.99 and cos.min() > 0.97, (cos.mean(), cos.min())


def test_auto_runtime_puts_only_the_real_text_encoder_in_onnx_int8_on_cpu():
    tiny, base = PRESETS["tiny"].encoders, PRESETS["base"].encoders
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert onnx_runtimes("auto", cpu, base) == {"text": "onnx-int8"}
    assert onnx_runtimes("auto", cuda, base) == {}
    assert onnx_runtimes("auto", cpu, tiny) == {}
    assert onnx_runtimes("auto", cpu, {"audio": base["audio"]}) == {}
    assert onnx_runtimes("torch", cpu, base) == {}
    assert onnx_runtimes("onnx", cpu, tiny) == {"text": "onnx", "audio": "onnx"}
    assert onnx_runtimes("onnx-int8", cpu, tiny) == {"text": "onnx-int8", "audio": "onnx-int8"}
    assert onnx_runtimes("onnx", cpu, {"image": tiny["image"], "audio": tiny["audio"]}) == {
        "audio": "onnx"
    }


def test_bad_runtimes_are_refused_with_the_reason(monkeypatch):
    base = PRESETS["base"].encoders
    with pytest.raises(
        ValueError, match=r"one of \['auto', 'torch', 'onnx', 'onnx-int8'\]; got 'int8'"
    ):
        onnx_runtimes("int8", torch.device("cpu"), base)
    with pytest.raises(RuntimeUnavailable, match="CPU only; on cuda use 'torch'"):
        onnx_runtimes("onnx", torch.device("cuda"), base)
    with pytest.raises(RuntimeUnavailable, match="'onnx-int8' runs on the CPU only"):
        onnx_runtimes("onnx-int8", torch.device("cuda"), base)
    monkeypatch.setattr("model.runtime.onnxruntime_available", lambda: False)
    with pytest.raises(RuntimeUnavailable, match="pip install onnxruntime onnxscript"):
        onnx_runtimes("onnx", torch.device("cpu"), base)
    with pytest.raises(RuntimeUnavailable, match="'onnx-int8' needs the onnxruntime"):
        onnx_runtimes("onnx-int8", torch.device("cpu"), base)
    assert onnx_runtimes("auto", torch.device("cpu"), base) == {}


def test_embedder_refuses_a_bad_runtime_before_any_export():
    with pytest.raises(ValueError, match="'onnx-int8'\\]; got 'fast'"):
        Embedder.from_preset("tiny", modalities=["text"], encoder_runtime="fast")
    with pytest.raises(ValueError, match="got 'onnx_int8'"):
        Embedder.from_preset("tiny", modalities=["text"], encoder_runtime="onnx_int8")


def test_setting_reaches_the_encoders(monkeypatch):
    monkeypatch.delenv("MMEMBED_ENCODER_RUNTIME", raising=False)
    assert Settings(preset="tiny").encoder_runtime == "auto"
    monkeypatch.setenv("MMEMBED_ENCODER_RUNTIME", "onnx")
    settings = Settings(preset="tiny", modalities=["text", "image"])
    assert settings.encoder_runtime == "onnx"
    embedder = load_embedder(settings)
    # images stay in PyTorch
    assert embedder.info["encoder_runtime"] == {"image": "torch", "text": "onnx"}
    monkeypatch.setenv("MMEMBED_ENCODER_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="encoder_runtime"):
        Settings()
    # The setting takes exactly the runtimes the model knows.
    field = Settings.model_fields["encoder_runtime"].annotation
    assert typing.get_args(field) == ENCODER_RUNTIMES


def test_exported_encoders_are_cached_per_weights(tmp_path, caplog):
    config = PRESETS["tiny"].encoders["text"]
    first, again = build_encoder(config), build_encoder(config)
    first.use_onnx(threads=1, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("text-*.onnx")
    with caplog.at_level("INFO", logger="model.runtime"):
        again.use_onnx(threads=1, cache_dir=tmp_path)
    assert f"read from {cached}" in caplog.text
    batch = first.preprocess(TEXTS)
    with torch.inference_mode():
        torch.testing.assert_close(again(batch).tokens, first(batch).tokens)
    # Other weights (another seed) or another input layout make another file.
    other = build_encoder(dataclasses.replace(config, seed=1))
    example = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    axes = {"input_ids": (0, 1), "attention_mask": (0, 1)}
    key = cache_key(first.model, example, axes)
    assert key == cache_key(again.model, example, axes)
    assert key != cache_key(other.model, example, axes)
    assert key != cache_key(first.model, example, {"input_ids": (0,), "attention_mask": (0,)})


def test_cached_exports_take_their_mode_from_the_umask(tmp_path):
    """A cache folder shared by several users (a compose volume, a team's cache) must stay
    readable: the cached model is not left 0600 by a private temp file."""
    previous = os.umask(0o022)
    try:
        build_encoder(PRESETS["tiny"].encoders["text"]).use_onnx(threads=1, cache_dir=tmp_path)
    finally:
        os.umask(previous)
    (cached,) = tmp_path.iterdir()
    assert cached.suffix == ".onnx"
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644


# ------------------------------------------------------------------------- onnx-int8


def _op_types(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def test_onnx_int8_embeddings_stay_close_to_float32(tiny_pair, speech):
    # Measured on these tiny random encoders: cosine to float32 at least 0.99999 (text)
    # and 0.9997 (audio); the thresholds leave room for other CPUs' int8 kernels.
    ref, float32 = tiny_pair
    fast = _tiny(0, "onnx-int8")
    assert fast.info["encoder_runtime"] == {"audio": "onnx-int8", "text": "onnx-int8"}
    clips, rate = _clips(speech)
    for got, exact, want in (
        (fast.embed_texts(TEXTS), float32.embed_texts(TEXTS), ref.embed_texts(TEXTS)),
        (
            fast.embed_audio(clips, rate),
            float32.embed_audio(clips, rate),
            ref.embed_audio(clips, rate),
        ),
    ):
        cos = (got * want).sum(1)  # unit rows
        assert cos.min() > 0.999, cos
        # and int8 really ran: it strays from PyTorch further than float32 ONNX does (by
        # how much depends on the CPU's int8 kernels: 3e-5 with VNNI, over 1e-4 without).
        assert np.abs(got - want).max() > 2 * np.abs(exact - want).max()


def test_int8_models_are_cached_apart_from_float32_and_reused(tmp_path, caplog, monkeypatch):
    config = PRESETS["tiny"].encoders["text"]
    first = build_encoder(config)
    first.use_onnx(threads=1, cache_dir=tmp_path, int8=True)
    assert first.runtime == "onnx-int8"
    (int8,) = tmp_path.glob("text-int8-*.onnx")
    (float32,) = set(tmp_path.glob("text-*.onnx")) - {int8}
    assert _op_types(int8)["MatMulInteger"] > 0
    assert _op_types(float32)["MatMulInteger"] == 0

    def refuse(*args, **kwargs):
        raise AssertionError("exported or quantised again despite the cache")

    monkeypatch.setattr("model.runtime.export_onnx", refuse)
    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", refuse)
    again = build_encoder(config)
    with caplog.at_level("INFO", logger="model.runtime"):
        again.use_onnx(threads=1, cache_dir=tmp_path, int8=True)
    assert f"read from {int8}" in caplog.text
    assert again.runtime == "onnx-int8"
    batch = first.preprocess(TEXTS)
    with torch.inference_mode():
        torch.testing.assert_close(again(batch).tokens, first(batch).tokens)
    # The float32 runtime reads the float32 export kept beside it, not the int8 model.
    plain = build_encoder(config)
    caplog.clear()
    with caplog.at_level("INFO", logger="model.runtime"):
        plain.use_onnx(threads=1, cache_dir=tmp_path)
    assert f"read from {float32}" in caplog.text
    assert plain.runtime == "onnx"
    assert len(list(tmp_path.glob("*.onnx"))) == 2


EXPORT_A_LINEAR = """
import logging
logging.basicConfig(level=logging.INFO)  # as a server's log is
import torch
from model.runtime import export_onnx
print(len(export_onnx(torch.nn.Linear(4, 3), {"input": torch.zeros(2, 4)}, {"input": [0]})))
"""


def test_a_first_export_prints_nothing_but_its_own_output():
    """torch.onnx's torchvision notices and pytree FutureWarning, and onnx_ir's pass-by-pass
    INFO records, stay off a first start's log."""
    result = subprocess.run(
        [sys.executable, "-c", EXPORT_A_LINEAR],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 100  # a serialised model came back
    assert result.stderr == ""


def test_the_quiet_exporter_still_shows_warnings_that_may_matter(caplog):
    caplog.set_level(logging.DEBUG, logger="model.runtime")
    with pytest.warns(UserWarning, match="the trace may be wrong"):
        with _quiet_exporter():
            warnings.warn("deprecated inside torch", FutureWarning, stacklevel=1)
            warnings.warn("the trace may be wrong", UserWarning, stacklevel=1)
    assert "FutureWarning: deprecated inside torch" in caplog.text

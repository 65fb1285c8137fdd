"""The transcript release's own logic (model/training/transcript_release.py): its recipe,
and choosing the mixing on validation vectors. The release itself was made and checked
with real clips (its card; `mmembed eval --recipe` reproduces every figure)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.multimodal import MultimodalModel
from model.training.transcript_release import (
    TranscriptRecipe,
    choose,
    mixed,
    read_transcript_recipe,
)
from tests.conftest import tiny_with_transcripts

RECIPE = """
[transcript_release]
name = "x"
version = "1.0.0"
base = "b"
base_recipe = "r.toml"
image_recipe = "i.toml"
runs = "runs/x"
out = "out"
weights = [0.0, 0.5, 1.0]
no_speech = [0.9, 1.0]
"""


def _recipe(runs: str) -> TranscriptRecipe:
    """A recipe whose paths lead nowhere but its runs folder."""
    return TranscriptRecipe(
        name="x", version="1", base="b", base_recipe="r", image_recipe="i", runs=runs, out="o"
    )


def test_the_recipe_reads_and_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    recipe = read_transcript_recipe(path)
    assert recipe.weights == (0.0, 0.5, 1.0) and recipe.no_speech == (0.9, 1.0)
    assert recipe.source == RECIPE
    path.write_text(RECIPE + 'colour = "red"\n')
    with pytest.raises(ValueError, match="colour"):
        read_transcript_recipe(path)


def test_the_recipe_reads_its_rotation(tmp_path: Path) -> None:
    from model.training.prefix_rotation import RotationSpec

    path = tmp_path / "r.toml"
    path.write_text(RECIPE + "[rotation]\nclips = 100\nheld_out = 10\ndims = [32, 64]\n")
    recipe = read_transcript_recipe(path)
    assert recipe.rotation == RotationSpec(clips=100, held_out=10, dims=(32, 64))
    path.write_text(RECIPE)
    assert read_transcript_recipe(path).rotation is None
    path.write_text(RECIPE + "[rotation]\nangle = 3\n")
    with pytest.raises(ValueError, match="angle"):
        read_transcript_recipe(path)
    path.write_text(RECIPE + "[rotation]\nclips = 10\nheld_out = 10\n")
    with pytest.raises(ValueError, match="held_out"):
        read_transcript_recipe(path)
    path.write_text(RECIPE + "[rotation]\nmore_clips = -1\n")
    with pytest.raises(ValueError, match="more_clips must be >= 0"):
        read_transcript_recipe(path)


def test_validation_chooses_the_weights_that_retrieve_best() -> None:
    """Speech vectors that are noise and transcripts that are right: validation gives the
    transcript weight; where a transcript is flagged as no speech it is not used."""
    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    torch.manual_seed(0)
    texts = F.normalize(torch.randn(40, 512), dim=-1)
    val = {
        "speech": F.normalize(torch.randn(40, 512), dim=-1),
        "text": texts.clone(),
        "heard": ["words"] * 40,
        "no_speech": torch.full((40,), 0.95),
        "sentences": [f"s{i}" for i in range(40)],
    }
    recipe = dataclasses.replace(_recipe("r"), weights=(0.0, 0.5, 1.0), no_speech=(0.9, 1.0))
    config, choice = choose(model, recipe, val, texts.numpy())
    assert config.main_weight == 0.5  # noise plus half the right text finds every sentence
    assert config.locked_weight == 0.0  # no blend, no locked part: a tie, to the smaller
    assert config.no_speech_threshold == 1.0  # at 0.9 every transcript would be dropped
    assert choice["val_mean_r1"] == 1.0
    unchanged = mixed(model, val, dataclasses.replace(config, no_speech_threshold=0.9))
    torch.testing.assert_close(unchanged, val["speech"])


@pytest.mark.parametrize("rotated", [False, True])
def test_cached_clip_vectors_mix_into_what_the_model_serves(tmp_path: Path, rotated: bool) -> None:
    """The vectors the weights are chosen on, mixed with a config, are the ones a model
    with that config embeds (what the release's export check asserts on real clips);
    with a prefix rotation too, whose cached vectors stay in the branches' layout."""
    import numpy as np
    import soundfile as sf

    from model.training.prefix_rotation import install_rotation, rotation_of
    from model.training.transcript_release import clip_vectors

    config = tiny_with_transcripts(("audio", "text"), main_weight=0.3)
    model = MultimodalModel(config).eval()
    if rotated:
        install_rotation(
            model, rotation_of(torch.randn(512, 512, generator=torch.Generator().manual_seed(1)))
        )
    rows = []
    for i, hz in enumerate((220.0, 550.0, 880.0)):
        t = np.arange(16_000 + 4_000 * i) / 16_000
        sf.write(
            tmp_path / f"{i}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16_000
        )
        rows.append({"audio": str(tmp_path / f"{i}.wav"), "text": f"clip {i}"})
    found = clip_vectors(model, rows, batch_size=2)
    assert found["speech"].shape == (3, 512) and found["text"].shape == (3, 512)
    assert found["sentences"] == ["clip 0", "clip 1", "clip 2"] and all(found["heard"])
    clips = [sf.read(r["audio"], dtype="float32")[0] for r in rows]
    with torch.inference_mode():
        served = model("audio", model.preprocess("audio", clips), with_llm_tokens=False)
    torch.testing.assert_close(mixed(model, found, config.transcript), served.embedding)
    if rotated:
        plain = MultimodalModel(config).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        with torch.inference_mode():
            before = plain("audio", plain.preprocess("audio", clips), with_llm_tokens=False)
        torch.testing.assert_close(
            served.embedding, before.embedding @ model.prefix_rotation.weight.T, atol=1e-5, rtol=0
        )


@pytest.mark.real_weights
def test_a_refit_names_the_release_it_refits_so_its_stores_turn_exactly(
    tmp_path: Path, shared_encoders: dict[str, str]
) -> None:
    """``turned``: 4.0.0 is 3.0.0's model under a rotation, so a release that refits the
    rotation lists it with ``turned_by`` (`index reembed` undoes 4.0.0's rotation); a
    release of another model is refused."""
    from model import Embedder
    from model.training.transcript_release import turned_releases

    path = tmp_path / "r.toml"
    path.write_text(
        RECIPE.replace(
            "[transcript_release]",
            "[transcript_release]\nturned = ['model/weights/image-audio-text-v4']",
        )
    )
    recipe = read_transcript_recipe(path)
    assert recipe.turned == ("model/weights/image-audio-text-v4",)
    v3 = Embedder.from_pretrained("image-audio-text-v3", encoders=shared_encoders)
    v4 = Embedder.from_pretrained("image-audio-text-v4", encoders=shared_encoders)
    [entry] = turned_releases(recipe, shared_encoders, v3.info["weights_digest"])
    assert entry == {
        "name": "image-audio-text-v4 4.0.0",
        "fingerprint": v4.info["weights_digest"],
        "modalities": ["image", "audio", "text"],
        "turned_by": "image-audio-text-v4",
    }
    with pytest.raises(ValueError, match="not this release's model under another rotation"):
        turned_releases(recipe, shared_encoders, "0" * 64)


def test_the_rotation_fits_on_clips_as_served_decoding_each_chunk_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``transcripts``: the first ``clips`` drawn are the vectors a server gives them
    (speech mixed with the transcript), decoded once a chunk and resumed from the
    cache; ``more_clips`` join the fit only, and the held-out ones stay in the middle."""
    import json

    import numpy as np
    import soundfile as sf

    from model.training import transcript_release
    from model.training.prefix_rotation import RotationSpec, drawn_clips, split_pairs
    from model.training.transcript_release import served_training_vectors

    config = tiny_with_transcripts(("audio", "text"), main_weight=0.3)
    model = MultimodalModel(config).eval()
    lines = []
    for i in range(7):
        t = np.arange(16_000 + 2_000 * i) / 16_000
        tone = (0.3 * np.sin(2 * np.pi * (200.0 + 90 * i) * t)).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", tone, 16_000)
        lines.append(json.dumps({"audio": f"{i}.wav", "text": f"clip {i}"}))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    spec = RotationSpec(clips=5, held_out=2, more_clips=1, transcripts=True)
    drawn = drawn_clips(manifest, spec)
    assert len(drawn) == 6 and len({p.text for p in drawn}) == 6
    recipe = _recipe(runs=str(tmp_path / "runs"))
    monkeypatch.setattr(transcript_release, "CLIPS_PER_CHUNK", 2)
    served = served_training_vectors(model, recipe, manifest, spec)
    clips = [sf.read(p.path, dtype="float32")[0] for p in drawn[:5]]
    with torch.inference_mode():
        expected = model("audio", model.preprocess("audio", clips), with_llm_tokens=False)
    torch.testing.assert_close(served, expected.embedding, atol=1e-5, rtol=0)
    chunks = sorted(p.name for p in (tmp_path / "runs" / "train-clips").iterdir())
    assert chunks == ["chunk-00000.pt", "chunk-00002.pt", "chunk-00004.pt"]

    def decoded_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached chunk was decoded again")

    monkeypatch.setattr(transcript_release, "clip_vectors", decoded_again)
    torch.testing.assert_close(served_training_vectors(model, recipe, manifest, spec), served)

    rows = torch.arange(6.0)[:, None]
    fit, held = split_pairs(rows, rows + 10, spec)
    assert fit.media[:, 0].tolist() == [0, 1, 2, 5] and held.media[:, 0].tolist() == [3, 4]
    assert fit.text[:, 0].tolist() == [10, 11, 12, 15]
    with pytest.raises(ValueError, match="the rotation wants 8"):
        drawn_clips(manifest, RotationSpec(clips=5, held_out=2, more_clips=3))

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
    choose_prefix,
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


def _refused(path: Path, text: str, match: str) -> None:
    """The recipe ``text``, written to ``path``, is refused with an error matching ``match``."""
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_transcript_recipe(path)


def test_the_recipe_reads_and_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    recipe = read_transcript_recipe(path)
    assert recipe.weights == (0.0, 0.5, 1.0) and recipe.no_speech == (0.9, 1.0)
    assert recipe.source == RECIPE
    _refused(path, RECIPE + 'colour = "red"\n', "colour")


def test_the_recipe_reads_its_rotation(tmp_path: Path) -> None:
    from model.training.prefix_rotation import RotationSpec

    path = tmp_path / "r.toml"
    path.write_text(RECIPE + "[rotation]\nclips = 100\nheld_out = 10\ndims = [32, 64]\n")
    recipe = read_transcript_recipe(path)
    assert recipe.rotation == RotationSpec(clips=100, held_out=10, dims=(32, 64))
    path.write_text(RECIPE)
    assert read_transcript_recipe(path).rotation is None
    _refused(path, RECIPE + "[rotation]\nangle = 3\n", "angle")
    _refused(path, RECIPE + "[rotation]\nclips = 10\nheld_out = 10\n", "held_out")
    _refused(path, RECIPE + "[rotation]\nmore_clips = -1\n", "more_clips must be >= 0")


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


def test_the_recipe_reads_how_the_mixing_is_chosen(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    plain = read_transcript_recipe(path)
    assert (plain.choose_dims, plain.choose_under, plain.choose_pool) == ((512,), "", 0)
    path.write_text(RECIPE + "choose_dims = [512, 64]\nchoose_pool = 8000\n")
    recipe = read_transcript_recipe(path)
    assert recipe.choose_dims == (512, 64) and recipe.choose_pool == 8000
    _refused(path, RECIPE + "choose_pool = -1\n", "choose_pool must be >= 0")
    _refused(path, RECIPE + "choose_dims = [100]\n", "dims must be one of")
    _refused(path, RECIPE + "choose_dims = []\n", "names no dims")


def test_a_recipe_may_decode_short_clips_from_more_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``min_decode_seconds`` reaches the model the clips are heard with, every mixing
    chosen among, and the card; 0 (every release up to 6.0.0) says nothing of it."""
    from model.checkpoint import save_checkpoint
    from model.config import TRANSCRIPTS
    from model.training import transcript_release
    from model.training.transcript_card import decode_window

    path = tmp_path / "r.toml"
    path.write_text(RECIPE)
    assert read_transcript_recipe(path).min_decode_seconds == 0.0
    path.write_text(RECIPE + "min_decode_seconds = 2.0\n")
    recipe = read_transcript_recipe(path)
    assert recipe.min_decode_seconds == 2.0
    _refused(path, RECIPE + "min_decode_seconds = 45.0\n", "between 0 and 30")
    base = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    release = tmp_path / "base"
    save_checkpoint(base, release, {"trained": True})
    heard_with = []
    monkeypatch.setattr(
        transcript_release, "with_transcript", lambda m, c: heard_with.append(c) or m
    )
    model, _ = transcript_release.load_base(
        dataclasses.replace(recipe, base=str(release)), {TRANSCRIPTS: "a decoder"}
    )
    assert heard_with[0].min_decode_seconds == 2.0 and heard_with[0].source == "a decoder"
    torch.manual_seed(0)
    texts = F.normalize(torch.randn(4, 512), dim=-1)
    val = {
        "speech": texts.clone(),
        "text": texts.clone(),
        "heard": ["words"] * 4,
        "no_speech": torch.zeros(4),
        "sentences": [f"s{i}" for i in range(4)],
    }
    config, _ = choose(model, dataclasses.replace(recipe, weights=(0.0,)), val, texts.numpy())
    assert config.min_decode_seconds == 2.0
    assert "shorter than 2 s is decoded from its first 2 s" in decode_window(
        {"min_decode_seconds": 2.0}
    )
    assert decode_window({"min_decode_seconds": 0.0}) == decode_window({}) == ""


def test_a_release_keeps_another_releases_rotation(tmp_path: Path) -> None:
    """``rotation_from``: that release's rotation is installed instead of fitting one,
    with its record; a store it filled is taken over for what both embed alike."""
    from model.checkpoint import trainable_weights
    from model.training.transcript_release import kept_rotation, same_vectors

    path = tmp_path / "r.toml"
    v5 = "model/weights/image-audio-text-v5"
    _refused(path, RECIPE + f"rotation_from = '{v5}'\n", "must be listed in turned")
    path.write_text(RECIPE + f"rotation_from = '{v5}'\nturned = ['{v5}']\n")
    assert read_transcript_recipe(path).rotation_from == v5
    _refused(path, path.read_text() + "[rotation]\nclips = 100\nheld_out = 10\n", "not both")

    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    info = kept_rotation(model, Path(v5))
    assert info["kept_from"] == "image-audio-text-v5 5.0.0" and info["best_step"] == 1800
    assert model.config.prefix_rotation
    torch.testing.assert_close(
        model.prefix_rotation.weight, trainable_weights(Path(v5))["prefix_rotation.weight"]
    )
    with pytest.raises(ValueError, match="has no prefix rotation"):
        kept_rotation(model, Path("model/weights/image-audio-text-v3"))
    entries = [
        {"name": "r 4", "fingerprint": "a", "modalities": ["image", "text"], "turned_by": "r4"},
        {"name": "image-audio-text-v5 5.0.0", "fingerprint": "b", "modalities": ["text"]},
    ]
    assert same_vectors(info, entries) == [entries[1]]
    assert same_vectors({"best_step": 1}, entries) == []


def test_pooled_r1_counts_the_distractors_both_ways() -> None:
    """Without distractors it is the evaluation's R@1 (clips that share a sentence
    included); a distractor text nearer a clip, or a distractor clip nearer a text,
    is a miss."""
    import numpy as np

    from model.training.transcript_release import audio_text, pooled_r1

    torch.manual_seed(0)
    texts = F.normalize(torch.randn(6, 512), dim=-1)
    sentences = ["a", "b", "c", "a", "d", "e"]
    groups = torch.tensor([0, 1, 2, 0, 3, 4])
    clips = F.normalize(texts[groups] + 0.9 * torch.randn(6, 512), dim=-1)
    report = audio_text(clips.numpy(), sentences, texts[:5].numpy())
    expected = (report["audio->text"]["512"]["R@1"] + report["text->audio"]["512"]["R@1"]) / 2
    assert pooled_r1(clips, texts[:5], groups, 512) == pytest.approx(expected)

    exact = texts[:3].clone()
    three = torch.arange(3)
    assert pooled_r1(exact, texts[:3], three, 512) == 1.0
    near_text = F.normalize(exact[0] + 0.01 * texts[5], dim=-1)  # nearer clip 0 than its own?
    pool_texts = torch.cat([texts[:3], exact[0:1] * 1.0 + 0.0, near_text[None]])
    pool_clips = torch.cat([exact + 0.2 * texts[3:6], near_text[None], texts[4:5]])
    pool_clips = F.normalize(pool_clips, dim=-1)
    score = pooled_r1(pool_clips, pool_texts, three, 512)
    clip_hits = ((pool_clips[:3] @ pool_texts.T).argmax(1) == three).float().mean()
    owner = torch.tensor([0, 1, 2, -1, -1])
    text_hits = (owner[(pool_texts[:3] @ pool_clips.T).argmax(1)] == three).float().mean()
    assert score == pytest.approx(float(clip_hits + text_hits) / 2) and score < 1.0
    assert np.isclose(pooled_r1(pool_clips[:3], pool_texts[:3], three, 512), 1.0)


def _unit_noise(n: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, 512), dim=-1)


def test_a_pool_tells_apart_weights_that_validation_alone_ties() -> None:
    """Among its own 40 sentences every weight finds each clip (a tie, kept at the
    smallest weight); with near-duplicate training sentences as distractors, only the
    transcript tells them apart, and the choice follows."""
    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    torch.manual_seed(0)

    def clips_of(texts: torch.Tensor, heard_as: torch.Tensor, name: str) -> dict[str, object]:
        """Clips of ``texts`` whose speech path hears ``heard_as``; Whisper is right."""
        n = texts.shape[0]
        return {
            "speech": F.normalize(heard_as + 0.1 * _unit_noise(n), dim=-1),
            "text": texts.clone(),
            "heard": ["words"] * n,
            "no_speech": torch.zeros(n),
            "sentences": [f"{name} {i}" for i in range(n)],
        }

    texts = F.normalize(torch.randn(40, 512), dim=-1)
    near = F.normalize(texts + 0.3 * _unit_noise(40), dim=-1)  # near-duplicate sentences
    val = clips_of(texts, heard_as=near, name="validation")
    pool = clips_of(near, heard_as=near, name="training")
    recipe = dataclasses.replace(_recipe("r"), weights=(0.0, 0.5, 1.0), no_speech=(1.0,))
    alone, choice = choose(model, recipe, val, texts.numpy())
    assert alone.main_weight == 0.0 and choice["val_mean_r1"] == 1.0 and choice["pool"] == 0
    config, choice = choose(model, recipe, val, texts.numpy(), pool, near.numpy())
    assert config.main_weight > 0.0 and choice["pool"] == 40 and choice["dims"] == [512]
    assert choice["trials"]["0/0/1"] < 0.6 and choice["val_mean_r1"] == 1.0
    named = dataclasses.replace(recipe, choose_under="model/weights/image-audio-text-v3")
    with pytest.raises(ValueError, match="has no prefix rotation"):
        choose(model, named, val, texts.numpy())


@pytest.mark.parametrize(("rotated", "prefix"), [(False, False), (True, False), (True, True)])
def test_cached_clip_vectors_mix_into_what_the_model_serves(
    tmp_path: Path, rotated: bool, prefix: bool
) -> None:
    """The vectors the weights are chosen on, mixed with a config, are the ones a model
    with that config embeds (what the release's export check asserts on real clips);
    with a prefix rotation too, whose cached vectors stay in the branches' layout, and
    with a transcript prefix after it."""
    import numpy as np
    import soundfile as sf

    from model.training.prefix_rotation import install_rotation, rotation_of
    from model.training.transcript_release import clip_vectors

    config = tiny_with_transcripts(
        ("audio", "text"),
        main_weight=0.3,
        **({"prefix_dims": 64, "prefix_weight": 0.3} if prefix else {}),
    )
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
    if rotated and not prefix:
        plain = MultimodalModel(config).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        with torch.inference_mode():
            before = plain("audio", plain.preprocess("audio", clips), with_llm_tokens=False)
        torch.testing.assert_close(
            served.embedding, before.embedding @ model.prefix_rotation.weight.T, atol=1e-5, rtol=0
        )


@pytest.mark.real_weights
def test_a_refit_names_the_releases_whose_stores_turn_exactly(
    tmp_path: Path, shared_encoders: dict[str, str]
) -> None:
    """``turned``: 4.0.0 is 3.0.0's model under a rotation, so a release that refits the
    rotation lists it with ``turned_by`` (`index reembed` undoes 4.0.0's rotation), and
    3.0.0 itself with none. A release that mixes transcripts otherwise keeps their image
    and text vectors only; a release of another model is refused."""
    from model import Embedder
    from model.checkpoint import load_model
    from model.training.transcript_release import turned_releases, with_decoder

    path = tmp_path / "r.toml"
    folders = "['model/weights/image-audio-text-v3', 'model/weights/image-audio-text-v4']"
    path.write_text(
        RECIPE.replace("[transcript_release]", f"[transcript_release]\nturned = {folders}")
    )
    recipe = read_transcript_recipe(path)
    assert recipe.turned == (
        "model/weights/image-audio-text-v3",
        "model/weights/image-audio-text-v4",
    )
    v3 = Embedder.from_pretrained("image-audio-text-v3", encoders=shared_encoders)
    v4 = Embedder.from_pretrained("image-audio-text-v4", encoders=shared_encoders)
    mixing = v3.model.config.transcript
    assert turned_releases(recipe, shared_encoders, v3.info["weights_digest"], mixing) == [
        {
            "name": "image-audio-text-v3 3.0.0",
            "fingerprint": v3.info["weights_digest"],
            "modalities": ["image", "audio", "text"],
        },
        {
            "name": "image-audio-text-v4 4.0.0",
            "fingerprint": v4.info["weights_digest"],
            "modalities": ["image", "audio", "text"],
            "turned_by": "image-audio-text-v4",
        },
    ]
    other = dataclasses.replace(mixing, locked_weight=0.5)
    remixed = load_model(
        "model/weights/image-audio-text-v3", encoder_overrides=with_decoder(recipe, shared_encoders)
    )
    remixed.config = dataclasses.replace(remixed.config, transcript=other)
    entries = turned_releases(recipe, shared_encoders, remixed.weights_digest(), other)
    assert [e["modalities"] for e in entries] == [["image", "text"], ["image", "text"]]
    assert [e["fingerprint"] for e in entries] == [
        v3.info["weights_digest"],
        v4.info["weights_digest"],
    ]
    with pytest.raises(ValueError, match="not this release's model under another rotation"):
        turned_releases(recipe, shared_encoders, "0" * 64, mixing)


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


def _espeak_and_a_person(
    model: MultimodalModel, noise: float
) -> tuple[torch.Tensor, dict, torch.Tensor, dict]:
    """Seeded clip vectors of two voices (as :func:`clip_vectors` caches them, in the
    branches' layout) and their sentences' vectors as served: (texts, 40 espeak clips
    whose speech path is right up to ``noise`` and whose transcripts are wrong, the
    person's texts, 30 clips of a person whose speech path hears nothing and whose
    transcripts are right)."""
    torch.manual_seed(0)
    texts = _unit_noise(40)
    val = {
        "speech": model.unrotated(F.normalize(texts + noise * _unit_noise(40), dim=-1)),
        "text": _unit_noise(40),  # Whisper is wrong on every espeak clip
        "heard": ["words"] * 40,
        "no_speech": torch.zeros(40),
        "sentences": [f"s{i}" for i in range(40)],
    }
    said = _unit_noise(30)
    person = {
        "speech": _unit_noise(30),  # the speech path hears nothing of a person
        "text": model.unrotated(said),
        "heard": ["words"] * 30,
        "no_speech": torch.zeros(30),
        "sentences": [f"p{i}" for i in range(30)],
    }
    return texts, val, said, person


def test_people_recordings_bound_the_choice_before_the_pool_counts() -> None:
    """Espeak clips whose speech path is right and transcripts noisy favour no transcript;
    people's clips, whose speech path hears nothing and transcripts are right, need some
    of it to reach the cascade. The choice meets the cascade there first, then takes the
    best validation score among the mixings that do."""
    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    texts, val, said, people_clips = _espeak_and_a_person(model, noise=0.2)
    recipe = dataclasses.replace(_recipe("r"), weights=(0.0, 0.3, 0.5, 1.0), no_speech=(1.0,))
    alone, _ = choose(model, recipe, val, texts.numpy())
    assert alone.main_weight == 0.0
    people = {"found": people_clips, "texts": said.numpy(), "cascade": 1.0}
    config, choice = choose(model, recipe, val, texts.numpy(), people=people)
    heard = choice["people"]["trials"]
    assert heard["0/0/1"] < 0.2 and heard["0.3/0/1"] == heard["0.5/0/1"] == 1.0
    assert config.main_weight == 0.3  # the least transcript that finds every person's sentence
    assert choice["people"]["r1"] == 1.0 and choice["people"]["cascade_r1"] == 1.0
    assert choice["people"]["clips"] == 30
    assert choice["val_mean_r1"] == choice["trials"]["0.3/0/1"]
    assert choice["trials"]["1/0/1"] < choice["trials"]["0/0/1"]  # validation wants less
    easy = {**people, "cascade": 0.0}  # a bar every mixing meets: validation decides
    assert choose(model, recipe, val, texts.numpy(), people=easy)[0] == alone


def test_people_recordings_choose_a_transcript_prefix_that_espeak_alone_would_not() -> None:
    """The prefix weight: espeak clips heard right by the speech path and wrongly by
    Whisper want none; a person's clips, the other way round, want it. With both, the
    mean of the two scores decides, and the record says what each set scored."""
    from model.training.prefix_rotation import install_rotation, rotation_of

    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    install_rotation(
        model, rotation_of(torch.randn(512, 512, generator=torch.Generator().manual_seed(2)))
    )
    texts, val, said, people_clips = _espeak_and_a_person(model, noise=0.3)
    config = model.config.transcript
    assert config is not None and config.main_weight == 0.2
    recipe = dataclasses.replace(_recipe("r"), prefix_dims=64, prefix_weights=(0.0, 0.5, 1.0))
    alone, record = choose_prefix(model, recipe, config, val, texts.numpy())
    assert alone.prefix_weight == 0.0 and alone.prefix_dims == 64
    assert record["trials"]["0"]["val"] > record["trials"]["1"]["val"]
    assert record["people"] is False and record["pool"] == 0
    people = {"found": people_clips, "texts": said.numpy(), "cascade": 1.0}
    pool = _unit_noise(200).numpy()
    chosen, record = choose_prefix(model, recipe, config, val, texts.numpy(), pool, people)
    assert chosen.prefix_weight > 0.0
    assert dataclasses.replace(chosen, prefix_weight=0.0, prefix_dims=0) == config
    trials = record["trials"]
    assert trials["0"]["people"] < trials[f"{chosen.prefix_weight:g}"]["people"]
    assert record["weight"] == chosen.prefix_weight and record["pool"] == 200
    best = trials[f"{chosen.prefix_weight:g}"]
    assert record["score"] == pytest.approx((best["val"] + best["people"]) / 2, abs=1e-4)
    assert all(record["score"] >= (t["val"] + t["people"]) / 2 - 1e-4 for t in trials.values())


def test_a_release_keeps_another_releases_mixing(tmp_path: Path) -> None:
    """``mixing_from``: that release's weights, threshold and decode window, with its
    record of how they were chosen; refused beside a choice of its own, unlisted in
    ``turned``, for a release that mixes nothing, or for clips decoded otherwise."""
    from model.training.transcript_release import kept_mixing, same_vectors

    v7 = "model/weights/image-audio-text-v7"
    path = tmp_path / "r.toml"
    _refused(path, RECIPE + f"mixing_from = '{v7}'\n", "must be listed in turned")
    kept = RECIPE + f"mixing_from = '{v7}'\nturned = ['{v7}']\nmin_decode_seconds = 2.0\n"
    _refused(path, kept + "choose_pool = 100\n", "not both")
    _refused(path, kept + "prefix_dims = 65\n", "dims must be one of")
    _refused(path, kept + "prefix_dims = 64\nprefix_weights = []\n", "names no weight")
    _refused(path, kept + "prefix_dims = 64\nprefix_weights = [2.0]\n", "prefix_weight")
    path.write_text(kept + "prefix_dims = 64\nprefix_weights = [0, 0.25]\nprefix_pool = 10\n")
    recipe = read_transcript_recipe(path)
    assert recipe.prefix_weights == (0.0, 0.25) and recipe.prefix_pool == 10
    config, record = kept_mixing(recipe)
    assert (config.main_weight, config.locked_weight, config.no_speech_threshold) == (
        0.2,
        0.6,
        0.95,
    )
    assert config.min_decode_seconds == 2.0 and config.prefix_weight == 0.0
    assert record["kept_from"] == "image-audio-text-v7 7.0.0" and record["people"]["clips"] == 291
    with pytest.raises(ValueError, match="decodes short clips from 2 s"):
        kept_mixing(dataclasses.replace(recipe, min_decode_seconds=0.0))
    v2 = "model/weights/image-audio-text-v2"
    with pytest.raises(ValueError, match="mixes in no transcripts"):
        kept_mixing(dataclasses.replace(recipe, mixing_from=v2, turned=(v2,)))
    entries = [
        {"name": "r 6", "fingerprint": "a", "modalities": ["image", "text"], "turned_by": "r6"},
        {"name": "r 7", "fingerprint": "b", "modalities": ["image", "text"], "same_rotation": True},
        {"name": "r 5", "fingerprint": "c", "modalities": ["image"], "turned_by": "r5"},
    ]
    names = [e["name"] for e in same_vectors({"kept_from": "r 6"}, entries)]
    assert names == ["r 6", "r 7"]  # every release under this rotation, not r 5's
    assert "same_rotation" not in same_vectors({"kept_from": "r 6"}, entries)[1]


def test_the_cascade_misses_a_clip_heard_as_nothing() -> None:
    """Speech recognition + MiniLM on clips whose transcripts are their sentences, but
    one heard as nothing and one heard as another clip's sentence."""
    from model.training.transcript_release import cascade_report

    model = MultimodalModel(tiny_with_transcripts(("audio", "text")))
    sentences = ["a red circle", "a blue square", "the green bird sings", "a small dog runs"]
    heard = ["a red circle", "", "a small dog runs", "a small dog runs"]
    report = cascade_report(model, {"sentences": sentences, "heard": heard})
    assert report["R@1"] == pytest.approx(0.5)  # the first and the last
    heard[1] = sentences[1]
    assert cascade_report(model, {"sentences": sentences, "heard": heard})["R@1"] == 0.75

"""The model card says what the release's own records say, and which targets it meets."""

from __future__ import annotations

from typing import Any

from model.training.card import render_model_card, worst_case


def direction(r1_512: float, r1_64: float) -> dict[str, dict[str, float]]:
    return {
        "512": {"R@1": r1_512, "R@5": min(1.0, r1_512 + 0.1)},
        "64": {"R@1": r1_64, "R@5": min(1.0, r1_64 + 0.1)},
    }


def scores(a2t: tuple[float, float], t2a: tuple[float, float]) -> dict[str, Any]:
    return {"audio->text": direction(*a2t), "text->audio": direction(*t2a)}


def document(devil: dict[str, Any], wordnet: dict[str, Any], keep: float) -> dict[str, Any]:
    return {
        "encoders": {
            "audio": {"source": "openai/whisper-base"},
            "text": {"source": "sentence-transformers/all-MiniLM-L6-v2"},
        },
        "config": {"perceiver": {"num_latents": 16, "dim": 256, "depth": 2}},
        "metadata": {
            "release": "audio-text-v1",
            "version": "1.0.0",
            "recipe": '[release]\nname = "audio-text-v1"\n',
            "spoken": {
                "train_sources": ["/usr/share/games/fortunes", "/x/gcide.dict.dz@20000"],
                "test_sets": {"devil": ["/x/devil.dict.dz"], "wordnet": ["/usr/share/wordnet"]},
                "n_train": 18000,
                "n_val": 300,
                "n_test": 500,
                "train_variants": 1,
                "noise_prob": 0.3,
            },
            "eval": {
                "test_sets": {"devil": devil, "wordnet": wordnet},
                "text_neighbourhood": {"sentences": 1000, "k": 10, "64": keep - 0.1, "512": keep},
            },
        },
    }


def test_worst_case_takes_each_measure_from_its_worst_set() -> None:
    doc = document(
        {"pairs": 500, "model": scores((0.8, 0.78), (0.7, 0.69))},
        {"pairs": 500, "model": scores((0.76, 0.6), (0.9, 0.9))},
        keep=0.65,
    )
    worst = worst_case(doc["metadata"]["eval"])
    assert worst == {"audio->text R@1": 0.76, "text->audio R@1": 0.7, "64-d share": 0.789}


def test_the_card_reports_every_set_and_marks_targets_met_or_not() -> None:
    doc = document(
        {
            "pairs": 500,
            "model": scores((0.81, 0.79), (0.8, 0.78)),
            "baseline": scores((0.5, 0.4), (0.5, 0.4)),
        },
        {
            "pairs": 500,
            "model": scores((0.62, 0.6), (0.66, 0.64)),
            "baseline": scores((0.7, 0.6), (0.7, 0.6)),
        },
        keep=0.612,
    )
    speed = {
        "release_texts_per_s": 180.0,
        "minilm_texts_per_s": 240.0,
        "ratio": 0.75,
        "sentences": 1000,
        "batch_size": 32,
        "threads": 2,
    }
    card = render_model_card(doc, size_bytes=6 * 2**20, stages={"the model": 3600.0}, speed=speed)
    assert card.startswith("# audio-text-v1 1.0.0")
    assert "6.0 MiB of float16 weights" in card
    assert "| devil | 500 | **resampler (this release)** | 0.810 / 0.790 |" in card
    assert "| wordnet | 500 | mean-pool baseline | 0.700 / 0.600 |" in card
    assert "| audio->text R@1, 512-d | >= 0.75 | 0.620 | **not met** |" in card
    # The resampler loses to the baseline on wordnet, so "beats the baseline" is not met.
    assert "| on every set | no | **not met** |" in card
    assert "| MiniLM top-10 neighbourhoods kept, 512-d | >= 0.6 | 0.612 | met |" in card
    # The measured cascade: a row per set in the quality table, and a target per set.
    cascade = "| speech recognition + MiniLM (cascade) | 0.714 / - | - | 0.680 / - |"
    assert f"| devil | 500 {cascade}" in card
    assert "cascade, audio->text R@1 on devil | >= 0.714 | 0.810 | met |" in card
    assert "cascade, audio->text R@1 on wordnet | >= 0.658 | 0.620 | **not met** |" in card
    assert "**180.0** for this release against 240.0 for plain MiniLM (0.75x" in card
    assert "| the model | 60.0 |" in card
    assert "GPL-3.0-or-later" in card and "public domain" in card
    assert "| train + val (drawn from the sources together) | 18000 + 300 |" in card
    assert "spoken once by a random training voice" in card
    assert '```toml\n[release]\nname = "audio-text-v1"\n```' in card
    assert "`mmembed train --recipe model/training/recipes/audio-text-v1.toml`" in card


def test_voice_ranges_are_written_as_runs() -> None:
    from model.training.card import _ranges

    assert _ranges([116, 112, 114, 202, 204]) == "112-116 and 202-204"
    assert _ranges([50]) == "50"

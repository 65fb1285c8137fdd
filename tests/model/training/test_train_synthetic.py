"""The synthetic CI recipe trains the tiny preset far above chance; training mechanics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.training.augment import augment_tokens, stretch_frames
from model.training.pairs import unique_group_batches
from model.training.recipe import AugmentPart, TrainConfig
from model.training.synthetic import build_synthetic_dataset, run_recipe
from model.training.train import lr_lambda, train

CHANCE = 1 / 32


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("synthetic")
    summary = build_synthetic_dataset(
        root / "data", per_caption_train=10, per_caption_test=2, seed=0
    )
    assert summary == {"train": 640, "test": 128, "captions_per_modality": 32, "chance_r1": CHANCE}
    # 20 epochs, not the recipe's 12: at 10 the image path ended at 9.75x chance on one
    # CPU and above 10x on another (float kernels differ); at 20 it reaches 15x.
    result = run_recipe(root / "data", root / "out", **{"optim.epochs": 20})
    result["root"] = root
    return result


@pytest.mark.slow
def test_recipe_retrieves_far_above_chance(recipe: dict) -> None:
    test = recipe["test"]
    assert set(test) == {"image->text", "text->image", "audio->text", "text->audio"}
    for media in ("image", "audio"):
        r1 = (test[f"{media}->text"]["512"]["R@1"] + test[f"text->{media}"]["512"]["R@1"]) / 2
        assert r1 >= 10 * CHANCE, f"{media}: R@1 {r1:.3f} is below 10x chance ({10 * CHANCE:.3f})"
    summary = recipe["summary"]
    assert summary["train_pairs"] == 640 and summary["val_pairs"] == 128
    best = Path(summary["checkpoint"])
    config = json.loads((best / "config.json").read_text())
    assert config["trained"] is True and config["metadata"]["val_score"] > 10 * CHANCE


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(recipe: dict) -> None:
    root = recipe["root"]
    first = json.loads((root / "out" / "run" / "train_config.json").read_text())
    cfg = TrainConfig.from_dict(first).with_values(
        {
            "run.out": str(root / "resumed"),
            "run.resume": str(root / "out" / "run" / "last"),
            "optim.max_steps": recipe["summary"]["steps"] + 2,
        }
    )
    summary = train(cfg)
    assert summary["steps"] == recipe["summary"]["steps"] + 2
    assert summary["feature_timing"]["image"]["items"] == 0  # every feature came from the cache
    assert summary["feature_timing"]["audio"]["items"] == 0


def test_batches_never_repeat_a_group() -> None:
    groups = np.repeat(np.arange(50), 3)  # three clips per sentence
    batches = unique_group_batches(groups, 16, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(150))
    for batch in batches:
        assert len(set(groups[batch].tolist())) == len(batch) <= 16


def test_warmup_then_cosine() -> None:
    values = [lr_lambda(s, warmup=10, total=110, min_ratio=0.1) for s in (0, 9, 10, 60, 110, 500)]
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0) and values[3] == pytest.approx(0.55)
    assert values[4] == pytest.approx(0.1) and values[5] == pytest.approx(0.1)


def test_augmentation_drops_frames_and_keeps_at_least_one() -> None:
    cfg = AugmentPart(frame_drop=0.5, time_masks=2, time_mask_frac=0.2, feature_noise=0.1)
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float16)
    out = augment_tokens(x, cfg, rng)
    assert 10 < out.shape[0] < 80 and out.shape[1] == 8
    one = augment_tokens(x[:1], AugmentPart(frame_drop=1.0), rng)
    assert one.shape == (1, 8)
    text = augment_tokens(x[:2], cfg, rng, text=True)
    assert text.shape == (2, 8)  # captions of two tokens are never thinned


@pytest.mark.slow
def test_distillation_adds_its_weighted_term_to_the_batch_loss(recipe: dict) -> None:
    """The same batch with the same augmentation draws: the loss grows by exactly
    ``distill_weight * distill_loss(text, MiniLM teacher)`` (+ the media term)."""
    import torch

    from model.checkpoint import load_model
    from model.tokens import masked_mean
    from model.training.train import batch_loss, distill_loss, prepare_data

    root = recipe["root"]
    cfg = TrainConfig.from_dict(
        json.loads((root / "out" / "run" / "train_config.json").read_text())
    )
    cfg = cfg.with_values({"run.progress": False})
    model = load_model(recipe["summary"]["checkpoint"]).eval()
    prepared = prepare_data(cfg, model, torch.device("cpu"))
    data, caches = prepared.train, prepared.caches
    batch = np.arange(16)

    def loss(text_weight: float, media_weight: float) -> float:
        c = cfg.with_values(
            {"optim.distill_weight": text_weight, "optim.distill_audio_weight": media_weight}
        )
        rng = np.random.default_rng(0)
        with torch.no_grad():
            return float(batch_loss(model, data, caches, batch, c, None, rng, torch.device("cpu")))

    clean = [caches["text"].get(data.text_ids[i]) for i in batch]
    from model.training.features import collate

    tokens, mask = collate(clean)
    teacher = masked_mean(tokens.float(), mask)
    rng = np.random.default_rng(0)
    aug = [augment_tokens(t, cfg.augment, rng, text=True) for t in clean]
    a_tokens, a_mask = collate(aug)
    with torch.no_grad():
        text_emb = model.forward_features("text", a_tokens, a_mask, with_llm_tokens=False).embedding
        expected = float(distill_loss(text_emb, teacher, cfg))
    assert expected > 0
    assert loss(2.0, 0.0) - loss(0.0, 0.0) == pytest.approx(2.0 * expected, rel=1e-4, abs=1e-6)
    assert loss(0.0, 1.0) > loss(0.0, 0.0)


@pytest.mark.slow
def test_neighbour_distillation_adds_its_weighted_term_and_draws_its_own_batches(
    recipe: dict,
) -> None:
    """``neighbour_distill_weight`` adds exactly its weighted term, computed on a text
    batch of seeds and their teacher neighbours that the augmentation never sees."""
    import torch

    from model.checkpoint import load_model
    from model.training.features import mean_tokens
    from model.training.train import (
        batch_loss,
        fit_neighbours,
        neighbour_distill_loss,
        prepare_data,
    )

    root = recipe["root"]
    cfg = TrainConfig.from_dict(
        json.loads((root / "out" / "run" / "train_config.json").read_text())
    ).with_values({"run.progress": False, "optim.neighbour_seeds": 4, "optim.neighbour_k": 3})
    model = load_model(recipe["summary"]["checkpoint"]).eval()
    prepared = prepare_data(cfg, model, torch.device("cpu"))
    data, caches = prepared.train, prepared.caches
    sentences = list(dict.fromkeys(data.text_ids))
    neighbours = fit_neighbours(data, caches["text"], k=3, seed=5)
    assert neighbours.ids == sentences
    np.testing.assert_allclose(neighbours.teacher, mean_tokens(caches["text"], sentences))
    batch = np.arange(16)

    def loss(weight: float) -> float:
        c = cfg.with_values({"optim.neighbour_distill_weight": weight})
        drawn = fit_neighbours(data, caches["text"], k=3, seed=5)
        with torch.no_grad():
            return float(
                batch_loss(
                    model,
                    data,
                    caches,
                    batch,
                    c,
                    None,
                    np.random.default_rng(0),
                    torch.device("cpu"),
                    neighbours=drawn,
                )
            )

    with torch.no_grad():
        expected = float(neighbour_distill_loss(model, caches["text"], neighbours, cfg, "cpu"))
    assert expected > 0
    assert loss(2.0) - loss(0.0) == pytest.approx(2.0 * expected, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="needs the neighbour batches"):
        batch_loss(
            model,
            data,
            caches,
            batch,
            cfg.with_values({"optim.neighbour_distill_weight": 1.0}),
            None,
            np.random.default_rng(0),
            torch.device("cpu"),
        )


def test_time_stretch_resamples_frames_between_neighbours() -> None:
    ramp = np.arange(11, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    fast = stretch_frames(ramp, 2.0)  # twice as fast: half the frames, the same path
    np.testing.assert_allclose(fast[:, 0], np.linspace(0, 10, 6), atol=1e-6)
    slow = stretch_frames(ramp, 0.5)
    assert slow.shape == (22, 3)
    np.testing.assert_allclose(slow[:, 1], np.linspace(0, 10, 22), atol=1e-5)
    assert stretch_frames(ramp[:1], 0.5).shape == (1, 3)
    assert stretch_frames(ramp, 1000.0).shape == (1, 3)


def test_time_stretch_augmentation_stays_in_its_rate_range() -> None:
    cfg = AugmentPart(
        time_masks=0, frame_drop=0.0, channel_mask=0.0, feature_noise=0.0, time_stretch=0.25
    )
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float16)
    lengths = {augment_tokens(x, cfg, rng).shape[0] for _ in range(200)}
    assert min(lengths) >= round(200 / 1.25) and max(lengths) <= round(200 * 1.25)
    assert min(lengths) < 175 and max(lengths) > 230  # both faster and slower are drawn
    text = augment_tokens(x[:5], cfg, rng, text=True)
    assert text.shape[0] <= 5  # text is never stretched
    off = AugmentPart(time_masks=0, frame_drop=0.0, channel_mask=0.0, feature_noise=0.0)
    np.testing.assert_array_equal(augment_tokens(x, off, rng).numpy(), x.astype(np.float32))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 3.0])
def test_time_stretch_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="augment.time_stretch"):
        AugmentPart(time_stretch=bad)


def test_locked_text_refuses_text_only_loss_terms() -> None:
    from model.config import preset
    from model.multimodal import MultimodalModel
    from model.training.train import check_locked_text

    model = MultimodalModel(preset("tiny").with_overrides({"text_tower": "locked"}))
    cfg = TrainConfig().with_values({"optim.distill_weight": 1.0})
    with pytest.raises(ValueError, match=r"optim.distill_weight = 1.0 would train nothing"):
        check_locked_text(model, cfg)
    cfg = TrainConfig().with_values({"optim.neighbour_distill_weight": 0.5})
    with pytest.raises(ValueError, match="optim.neighbour_distill_weight = 0.5"):
        check_locked_text(model, cfg)
    check_locked_text(model, TrainConfig().with_values({"optim.distill_audio_weight": 1.0}))
    check_locked_text(MultimodalModel(preset("tiny")), cfg)  # a trained text tower may


@pytest.mark.slow
def test_locked_text_trains_media_onto_the_text_encoders_own_space(recipe: dict) -> None:
    """A run with ``text_tower = "locked"`` fits the rotation to its training sentences,
    leaves text exactly where the text encoder puts it, and still teaches the media
    paths to find their captions."""
    import torch

    from model.checkpoint import load_model
    from model.locked_text import LockedTextTower
    from model.training.evaluate import embed_cached, neighbourhood_recall
    from model.training.features import mean_tokens
    from model.training.train import batch_loss, prepare_data

    root = recipe["root"]
    result = run_recipe(
        root / "data",
        root / "out",
        **{
            "model.overrides": {
                "text_tower": "locked",
                "perceiver": {"dim": 128, "num_latents": 16},
                "head": {"llm_dim": 64},
            },
            "run.out": str(root / "locked"),
            "optim.epochs": 12,
        },
    )
    summary, test = result["summary"], result["test"]
    assert summary["feature_timing"]["audio"]["items"] == 0  # the recipe's cache, reused
    for media in ("image", "audio"):
        r1 = test[f"{media}->text"]["512"]["R@1"]
        assert r1 >= 5 * CHANCE, f"{media}->text R@1 {r1:.3f} is below 5x chance"
    model = load_model(summary["checkpoint"]).eval()
    assert model.text_locked
    cfg = TrainConfig.from_dict(json.loads((root / "locked" / "train_config.json").read_text()))
    prepared = prepare_data(cfg.with_values({"run.progress": False}), model, torch.device("cpu"))
    data, caches = prepared.train, prepared.caches
    sentences = list(dict.fromkeys(data.text_ids))
    fresh = LockedTextTower(text_dim=48, embed_dim=512)
    fresh.fit(mean_tokens(caches["text"], sentences))
    torch.testing.assert_close(model.text_tower.rotation, fresh.rotation)
    embedded = embed_cached(model, "text", caches["text"], sentences, torch.device("cpu"))
    teacher = mean_tokens(caches["text"], sentences)
    assert neighbourhood_recall(embedded, teacher, k=5) == 1.0

    def loss(token_drop: float) -> float:
        c = cfg.with_values({"augment.text_token_drop": token_drop})
        with torch.no_grad():
            return float(
                batch_loss(
                    model, data, caches, np.arange(16), c, None, np.random.default_rng(0), "cpu"
                )
            )

    assert loss(0.9) == loss(0.0)  # locked text is never augmented: it is the target


@pytest.mark.slow
def test_the_bag_of_words_term_adds_its_weight_and_resumes_with_its_head(recipe: dict) -> None:
    """``bag_of_words_weight`` adds exactly its weighted term on the media latents; the
    head is saved with the trainer's state, never in the checkpoint, and resumes."""
    import torch

    from model.checkpoint import load_model
    from model.training.bag_of_words import BagOfWords
    from model.training.train import TRAINER_STATE, batch_loss, prepare_data

    root = recipe["root"]
    first = json.loads((root / "out" / "run" / "train_config.json").read_text())
    cfg = TrainConfig.from_dict(first).with_values({"run.progress": False})
    model = load_model(recipe["summary"]["checkpoint"]).eval()
    prepared = prepare_data(cfg, model, torch.device("cpu"))
    data, caches = prepared.train, prepared.caches
    batch = np.arange(16)
    bag = BagOfWords(model.config.perceiver.dim, model.encoder("text").tokenizer)

    def loss(weight: float) -> float:
        c = cfg.with_values({"optim.bag_of_words_weight": weight})
        rng = np.random.default_rng(0)
        with torch.no_grad():
            return float(batch_loss(model, data, caches, batch, c, None, rng, "cpu", None, bag))

    # the bag term on its own: the audio rows' latents, with their texts, and the share
    # of the batch they are (the same augmentation draws as batch_loss makes)
    from model.training.features import collate

    modalities = [data.pairs[i].modality for i in batch]
    rng = np.random.default_rng(0)
    for i in batch:  # the text augmentation draws come first
        augment_tokens(caches["text"].get(data.text_ids[i]), cfg.augment, rng, text=True)
    expected = 0.0
    with torch.no_grad():
        for modality in sorted(set(modalities)):
            rows = [k for k, m in enumerate(modalities) if m == modality]
            feats = [
                augment_tokens(caches[modality].get(data.media_ids[batch[k]]), cfg.augment, rng)
                for k in rows
            ]
            tokens, mask = collate(feats)
            out = model.forward_features(modality, tokens, mask, with_llm_tokens=False)
            term = bag.loss(out.latents, [data.pairs[batch[k]].text for k in rows])
            expected += float(term) * len(rows) / len(batch)
    assert expected > 0
    assert loss(0.5) - loss(0.0) == pytest.approx(0.5 * expected, rel=1e-4, abs=1e-6)

    resumed = TrainConfig.from_dict(first).with_values(
        {
            "run.out": str(root / "bag"),
            "run.resume": str(root / "out" / "run" / "last"),
            "optim.max_steps": recipe["summary"]["steps"] + 2,
            "optim.bag_of_words_weight": 0.5,
        }
    )
    summary = train(resumed)
    assert summary["steps"] == recipe["summary"]["steps"] + 2
    state = torch.load(root / "bag" / "last" / TRAINER_STATE, weights_only=False)
    head = state["bag_of_words"]
    assert head["proj.weight"].shape == (bag.vocab_size, model.config.perceiver.dim)
    from safetensors.torch import load_file

    from model.checkpoint import WEIGHTS_FILE

    plain = load_file(root / "out" / "run" / "last" / WEIGHTS_FILE)
    assert load_file(root / "bag" / "last" / WEIGHTS_FILE).keys() == plain.keys()
    again = train(
        resumed.with_values(
            {
                "run.out": str(root / "bag2"),
                "run.resume": str(root / "bag" / "last"),
                "optim.max_steps": recipe["summary"]["steps"] + 3,
            }
        )
    )
    assert again["steps"] == recipe["summary"]["steps"] + 3
    resumed_head = torch.load(root / "bag2" / "last" / TRAINER_STATE, weights_only=False)
    assert not torch.equal(resumed_head["bag_of_words"]["proj.weight"], head["proj.weight"])

"""Retrieval metrics on hand-made similarity matrices, with exact expected values."""

from __future__ import annotations

import numpy as np
import pytest

from model.matryoshka import truncate
from model.training.evaluate import (
    chance_r1,
    first_relevant_ranks,
    format_table,
    metrics_from_ranks,
    retrieval_report,
)


def test_ranks_count_items_scoring_above_the_best_relevant_one() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.0],  # correct item 0 is first -> rank 0
            [0.8, 0.5, 0.9],  # correct item 1 is third -> rank 2
            [0.2, 0.7, 0.3],  # correct item 2 is second -> rank 1
        ]
    )
    ranks = first_relevant_ranks(sim, np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert ranks.tolist() == [0, 2, 1]
    m = metrics_from_ranks(ranks, ks=(1, 2, 3))
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@2"] == pytest.approx(2 / 3)
    assert m["R@3"] == pytest.approx(1.0)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_any_item_of_the_group_counts_and_ties_favour_the_query() -> None:
    # query of group 7; gallery: group 3 (0.5), group 7 (0.4), group 7 (0.6)
    sim = np.array([[0.5, 0.4, 0.6]])
    assert first_relevant_ranks(sim, np.array([7]), np.array([3, 7, 7])).tolist() == [0]
    tie = np.array([[0.5, 0.5]])
    assert first_relevant_ranks(tie, np.array([1]), np.array([0, 1])).tolist() == [0]


def test_query_without_relevant_item_is_an_error() -> None:
    with pytest.raises(ValueError, match="query 1 has no relevant item"):
        first_relevant_ranks(np.zeros((2, 2)), np.array([0, 5]), np.array([0, 1]))


def test_chance_level() -> None:
    assert chance_r1(np.array([0, 1]), np.array([0, 1, 2, 3])) == pytest.approx(0.25)
    assert chance_r1(np.array([0]), np.array([0, 0, 1, 2])) == pytest.approx(0.5)


def test_report_both_directions_at_each_dim() -> None:
    rng = np.random.default_rng(0)
    texts = truncate(rng.normal(size=(4, 512)), 512)
    # Two clips per caption: media 0,1 -> caption 0; 2,3 -> 1; ... exact copies of the caption.
    media = np.repeat(texts, 2, axis=0)
    groups_media = np.repeat(np.arange(4), 2)
    report = retrieval_report(
        media, texts, groups_media, np.arange(4), media_name="audio", dims=(64, 512)
    )
    assert set(report) == {"audio->text", "text->audio"}
    for direction in report.values():
        assert set(direction) == {"64", "512"}
        for m in direction.values():
            assert m == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "MRR": 1.0}
    table = format_table(report, title="t")
    assert "| audio->text | 64 | 1.000 | 1.000 | 1.000 | 1.000 |" in table


def test_truncate_renormalises() -> None:
    """Evaluation uses the model's one truncate: the first dims, renormalised."""
    x = np.zeros((1, 512))
    x[0, :2], x[0, 100] = (3.0, 4.0), 12.0
    np.testing.assert_allclose(truncate(x, 64)[0, :2], [0.6, 0.8])


def test_neighbourhood_recall_is_one_for_the_same_space_and_near_chance_for_noise() -> None:
    from model.training.evaluate import neighbourhood_recall

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 384)).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(384, 384)))[0].astype(np.float32)
    # float32 rounding may swap a near-tie at the 10th place
    assert neighbourhood_recall(reference @ rotation, reference, k=10) > 0.995
    noise = rng.normal(size=(300, 64)).astype(np.float32)
    assert neighbourhood_recall(noise, reference, k=10) < 0.1
    with pytest.raises(ValueError, match="k must be between 1 and 299"):
        neighbourhood_recall(noise, reference, k=300)

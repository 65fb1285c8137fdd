"""The measures of model/training/describe_eval.py and the card's rows."""

from __future__ import annotations

import numpy as np
import pytest

from model.training.describe_card import describe_figures, targets
from model.training.describe_eval import normalise, recall_at_1, word_error_rate


def test_normalise_ignores_case_and_punctuation_but_keeps_apostrophes():
    assert normalise("The dog's bone, “gone”!") == "the dog's bone gone"
    assert normalise("  It’s   OK.  ") == "it's ok"


def test_word_error_rate_counts_edits_over_reference_words():
    assert word_error_rate(["a b c d"], ["a b c d"]) == 0.0
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)  # 1 sub + 1 del
    assert word_error_rate(["A, b."], ["a b"]) == 0.0
    # corpus-level: 1 edit over 6 words, not the mean of per-sentence rates
    assert word_error_rate(["a b", "c d e f"], ["a", "c d e f"]) == pytest.approx(1 / 6)
    assert word_error_rate(["one two"], [""]) == 1.0


def test_recall_at_1():
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0, 0.2, 0.9], [0.1, 0.8, 0]], dtype=np.float32)
    assert recall_at_1(queries, gallery, [0, 1, 1]) == pytest.approx(2 / 3)


def test_card_rows_and_targets():
    split = {
        "clips": 100,
        "gallery": 500,
        "release_r1": 0.8,
        "describe": {"wer": 0.5, "meaning_r1": 0.6, "meaning_share": 0.75, "wer_vs_whisper": 2.5},
        "whisper_greedy": {"wer": 0.25, "meaning_r1": 0.7},
        "whisper_beam5": {"wer": 0.2, "meaning_r1": 0.72},
    }
    results = {
        "test-devil": split,
        "images-test_emoji": {"clips": 50, "gallery": 373, "describe": {"meaning_r1": 0.1}},
    }
    rows = describe_figures(results)
    assert (
        "| devil (Devil's Dictionary) | 100 | 50.0% | 25.0% / 20.0% | 2.5x | 0.600 | 0.800 | 0.75 |"
        in rows
    )
    assert any(r.startswith("| emoji") and "chance 0.003" in r for r in rows)
    reached = targets(results)
    assert "| at most 2x | 2.5x | **not met** |" in reached[2]
    assert "| at least 0.8 | 0.75 | **not met** |" in reached[3]

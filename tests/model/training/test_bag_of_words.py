"""The bag-of-words auxiliary objective (issue 32): its targets, its loss, and that its
head learns which tokens a sentence holds from the latents, with MiniLM's tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer

from model.training.bag_of_words import BagOfWords, bag_of_words_loss, bag_targets


def test_targets_are_normalised_counts_without_the_ignored_ids() -> None:
    targets = bag_targets([[5, 5, 7, 0], [0], []], vocab_size=10, ignore={0})
    expected = torch.zeros(3, 10)
    expected[0, 5], expected[0, 7] = 2 / 3, 1 / 3
    torch.testing.assert_close(targets, expected)


def test_the_loss_is_the_cross_entropy_against_the_bag() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])  # the second row is empty
    log_p = F.log_softmax(logits[0], dim=-1)
    expected = -(0.5 * log_p[0] + 0.5 * log_p[1]) / 2  # mean over both rows
    assert float(bag_of_words_loss(logits, targets)) == pytest.approx(float(expected))
    uniform = bag_of_words_loss(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    assert float(uniform) == pytest.approx(math.log(3))


def test_the_head_learns_which_words_each_clip_holds(minilm_dir) -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    bag = BagOfWords(dim=16, tokenizer=tokenizer)
    assert bag.vocab_size == len(tokenizer) and tokenizer.cls_token_id in bag.ignore
    texts = ["red circle", "a barking dog", "the violin plays softly"]
    latents = torch.randn(3, 4, 16)  # one fixed set of latents per "clip"
    optimizer = torch.optim.Adam(bag.head.parameters(), lr=0.05)
    with torch.no_grad():
        first = float(bag.loss(latents, texts))
    for _ in range(150):
        optimizer.zero_grad()
        loss = bag.loss(latents, texts)
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
    with torch.no_grad():
        logits = bag.head(latents)
    for row, text in enumerate(texts):
        words = set(tokenizer(text, add_special_tokens=False)["input_ids"])
        top = set(logits[row].topk(len(words)).indices.tolist())
        assert top == words, (text, tokenizer.convert_ids_to_tokens(sorted(top)))

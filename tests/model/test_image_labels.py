"""The label prior: an ImageNet classifier's logits as a sentence embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.image_labels import LabelPrior, imagenet_class_names, label_embeddings


def test_a_confident_classifier_gives_its_class_names_embedding() -> None:
    prior = LabelPrior(num_labels=4, text_dim=3, top_k=2)
    prior.fit(np.array([[2.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    logits = torch.tensor([[20.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = prior(logits)
    torch.testing.assert_close(out[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    # Uniform logits: the top two of four tie; the mix is their normalised mean.
    assert out.norm(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_only_the_top_k_classes_count() -> None:
    prior = LabelPrior(num_labels=3, text_dim=3, top_k=1)
    prior.fit(np.eye(3))
    out = prior(torch.tensor([[1.0, 0.9, 0.8]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0]]))


def test_wrong_shapes_and_k_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        LabelPrior(num_labels=3, text_dim=2, top_k=4)
    with pytest.raises(ValueError, match=r"need \(3, 2\) label embeddings"):
        LabelPrior(num_labels=3, text_dim=2, top_k=2).fit(np.zeros((2, 2)))


def test_the_imagenet_names_are_readable_and_in_the_classifiers_order() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
    embedded = label_embeddings(names[:3], lambda texts: np.ones((len(texts), 4)) * 3.0)
    assert np.allclose(np.linalg.norm(embedded, axis=1), 1.0)

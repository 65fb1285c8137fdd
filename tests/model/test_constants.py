"""The shared constants, and the copies kept where `model` must not be imported."""

from __future__ import annotations

from typing import get_args

import index
import index.vectors
from model import constants
from service.schemas import Modality
from service.settings import Settings


def test_matryoshka_dims_end_at_the_embedding_size():
    assert constants.MATRYOSHKA_DIMS == tuple(sorted(constants.MATRYOSHKA_DIMS))
    assert constants.MATRYOSHKA_DIMS[-1] == constants.EMBED_DIM


def test_index_copy_equals_the_model_constants():
    # index/ stores plain 512-d vectors and must not import model/, so it keeps a copy.
    assert index.vectors.EMBED_DIM == constants.EMBED_DIM
    assert index.vectors.MATRYOSHKA_DIMS == constants.MATRYOSHKA_DIMS
    assert index.MATRYOSHKA_DIMS == constants.MATRYOSHKA_DIMS


def test_service_modalities_are_the_model_modalities():
    assert get_args(Modality) == constants.MODALITIES
    assert tuple(Settings(_env_file=None).modalities) == constants.MODALITIES

"""Matryoshka truncation: the first d dims of an embedding, renormalised.

An embedding from the alignment head is a unit vector of ``EMBED_DIM`` dims
whose first 64, 128 or 256 dims, once renormalised, are themselves usable
embeddings (Kusupati et al. 2022). The sizes are in :mod:`model.constants`.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from model.constants import MATRYOSHKA_DIMS
from model.errors import InvalidInput

_EPS = 1e-12

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def check_dims(dims: object) -> int:
    """Return ``dims`` as an int if it is one of :data:`MATRYOSHKA_DIMS`, else raise InvalidInput."""
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer):
        raise InvalidInput(f"dims must be an integer, one of {list(MATRYOSHKA_DIMS)}; got {dims!r}")
    if int(dims) not in MATRYOSHKA_DIMS:
        raise InvalidInput(f"dims must be one of {list(MATRYOSHKA_DIMS)}; got {int(dims)}")
    return int(dims)


def truncate(embeddings: ArrayT, dims: int) -> ArrayT:
    """Keep the first ``dims`` components of each row and renormalise to unit length.

    Args:
        embeddings: (..., D) numpy array or torch tensor, D >= dims.
        dims: one of :data:`MATRYOSHKA_DIMS`.

    Returns:
        (..., dims) of the same kind (numpy arrays come back float32 and C-contiguous).
        A row that is all zeros in its first ``dims`` components stays zero.
    """
    dims = check_dims(dims)
    if embeddings.shape[-1] < dims:
        raise InvalidInput(f"cannot truncate {embeddings.shape[-1]}-d embeddings to {dims} dims")
    if isinstance(embeddings, torch.Tensor):
        return F.normalize(embeddings[..., :dims], dim=-1, eps=_EPS)
    head = np.asarray(embeddings[..., :dims], dtype=np.float32)
    norms = np.linalg.norm(head, axis=-1, keepdims=True)
    return np.ascontiguousarray(head / np.maximum(norms, _EPS), dtype=np.float32)

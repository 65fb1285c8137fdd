"""mmembed's model: frozen encoders, adapters, a shared Perceiver Resampler, Matryoshka heads.

Public entry point: :class:`Embedder`. Lower level: :mod:`model.config`,
:mod:`model.multimodal`, :mod:`model.checkpoint`. Training lives apart, in
:mod:`model.training`.
"""

from model.config import ModelConfig
from model.constants import EMBED_DIM, MATRYOSHKA_DIMS
from model.embedder import Embedder

__all__ = ["EMBED_DIM", "MATRYOSHKA_DIMS", "Embedder", "ModelConfig"]

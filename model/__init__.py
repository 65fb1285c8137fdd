"""mmembed's model: frozen encoders, adapters, a shared Perceiver Resampler, Matryoshka heads.

Public entry point: :class:`Embedder`. Lower level: :mod:`model.config`,
:mod:`model.multimodal`, :mod:`model.checkpoint`. Training lives apart, in
:mod:`model.training`.

``Embedder`` and ``ModelConfig`` are imported on first use, so that importing
:mod:`model.constants` (the service's settings, the command line) does not load
torch and transformers.
"""

from typing import TYPE_CHECKING, Any

from model.constants import EMBED_DIM, MATRYOSHKA_DIMS

if TYPE_CHECKING:
    from model.config import ModelConfig
    from model.embedder import Embedder

__all__ = ["EMBED_DIM", "MATRYOSHKA_DIMS", "Embedder", "ModelConfig"]


def __getattr__(name: str) -> Any:
    if name == "Embedder":
        from model.embedder import Embedder

        return Embedder
    if name == "ModelConfig":
        from model.config import ModelConfig

        return ModelConfig
    raise AttributeError(f"module 'model' has no attribute {name!r}")

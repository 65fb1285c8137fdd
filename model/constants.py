"""The numbers every part of mmembed agrees on.

``index/vectors.py`` keeps its own copy of the two dims constants because the
index must not import ``model`` (it stores any 512-d unit vectors); a test
asserts the two copies are equal.
"""

from __future__ import annotations

EMBED_DIM = 512
"""Size of a full embedding (the alignment head's output)."""

MATRYOSHKA_DIMS: tuple[int, ...] = (64, 128, 256, 512)
"""The prefix sizes that are themselves usable embeddings, smallest first."""

SAMPLE_RATE = 16_000
"""Audio sampling rate the audio encoder expects (Hz); other rates are resampled."""

MODALITIES: tuple[str, ...] = ("image", "audio", "text")
"""Every modality, in the order they are listed everywhere."""

"""Training, datasets and evaluation for the alignment model.

Nothing in :mod:`model` outside this package imports from it: the inference
side (encoders, adapters, resampler, heads, checkpoints, :class:`model.Embedder`)
installs and runs without it. The ``mmembed train``, ``eval`` and ``data``
commands load it lazily.
"""

"""Errors raised by the model package.

Every error derives from :class:`ModelError`; the ones a caller should turn
into a 4xx answer also derive from :class:`ValueError`.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error the model package raises on purpose."""


class InvalidInput(ModelError, ValueError):
    """Bad user input: empty text, text over the token limit, empty or non-finite
    audio, audio too long, an unsupported ``dims`` and the like. The message
    names the problem and the offending value."""


class MissingModality(ModelError, ValueError):
    """The model has no encoder for the requested modality."""


class CheckpointMismatch(ModelError, ValueError):
    """A checkpoint does not fit the encoders or shapes it is being loaded against."""


class MissingWeights(ModelError, RuntimeError):
    """An encoder's weights are missing from its source; loading would leave them random."""


class RuntimeUnavailable(ModelError, RuntimeError):
    """An encoder runtime was asked for that cannot run here (package missing, wrong device)."""

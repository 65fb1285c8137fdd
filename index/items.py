"""The records the store takes and gives back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Preview:
    """What a person can look at or listen to for an item: a thumbnail or a short clip.

    data: the encoded file (e.g. WebP, MP3); media_type: its MIME type ("image/webp").
    """

    data: bytes = field(repr=False)
    media_type: str


@dataclass(frozen=True)
class NewItem:
    """An item to add.

    vector: (512,) array-like; stored L2-normalised as float32.
    id: None lets the store generate one (32 hex characters).
    preview: stored with the item, in the same transaction; None stores none.
    text: the item's document (a text item's text, a caption or title of an image or
        a clip), at most `validation.MAX_TEXT_CHARS` characters; None stores none.
    """

    vector: Any
    modality: str
    metadata: dict[str, Any] | None = None
    id: str | None = None
    preview: Preview | None = None
    text: str | None = None


@dataclass(frozen=True)
class Item:
    """A stored item. Timestamps are Unix seconds (UTC), `vector` is (512,) float32, unit norm.

    `text` is its document, None when it was stored without one (or before stores kept them).
    """

    id: str
    modality: str
    metadata: dict[str, Any]
    vector: np.ndarray = field(repr=False)
    created_at: float
    updated_at: float
    text: str | None = None


@dataclass(frozen=True)
class SearchHit:
    """One search result; `score` is the cosine similarity at the dims that ranked it.

    `text` is the item's document (None if it has none, or the search was asked for none).
    """

    id: str
    score: float
    modality: str
    metadata: dict[str, Any]
    text: str | None = None


@dataclass(frozen=True)
class ModelStamp:
    """Which model made a store's vectors: `name` for people (release and version, or
    checkpoint or preset), `fingerprint` a digest of the weights that decide the space.

    Vectors of two models are not comparable even when both are 512-d unit rows, so a
    store records the stamp of the model that fills it (`VectorBackend.bind_model`).
    """

    name: str
    fingerprint: str
    # Earlier models whose stored vectors are this model's too, each (fingerprint, the
    # modalities whose vectors changed since): a store one filled is taken over as it is
    # when it holds no item of those modalities (none changed: always; a release that
    # added images kept audio and text, one that added transcripts kept images and text).
    # Not stored: a property of the model, not of the store.
    adopts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "fingerprint": self.fingerprint})

    @classmethod
    def from_json(cls, text: str) -> ModelStamp:
        data = json.loads(text)
        return cls(name=str(data["name"]), fingerprint=str(data["fingerprint"]))

    def __str__(self) -> str:
        return f"{self.name} (weights {self.fingerprint[:12]})"

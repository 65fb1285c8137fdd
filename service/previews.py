"""Previews a person can look at or listen to: image thumbnails and short audio clips.

An image item keeps a WebP thumbnail no larger than `preview_image_px` on its
longer side; an audio item keeps its first `preview_audio_seconds` as mono MP3
(libsndfile's LAME encoder, which every browser plays). Text needs none: the
page shows the text itself, kept in the item's metadata by the caller.

Previews are made from what the request already decoded (the EXIF-rotated RGB
image) or from the uploaded bytes (audio, re-read at its own sample rate so
music keeps more than the 16 kHz the model hears). A preview that cannot be
made, or comes out over `preview_max_bytes`, is logged and left out: it never
fails the request that stores the item.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
from PIL import Image

from index import Preview
from service.settings import Settings

logger = logging.getLogger("mmembed.service")

IMAGE_MEDIA_TYPE = "image/webp"
AUDIO_MEDIA_TYPE = "audio/mpeg"
# Sample rates MPEG audio layer III can carry; a preview uses the source's rate when it is
# one of these and at most AUDIO_MAX_RATE (enough for a preview; halves a 44.1 kHz file).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
AUDIO_MAX_RATE = 22050
# libsndfile's 0..1 scale, 1 smallest: about 40 kbit/s at 22.05 kHz, ~146 KiB for 30 s.
AUDIO_COMPRESSION = 0.9


@dataclass(frozen=True)
class PreviewLimits:
    """How large previews may be; from `Settings` (`MMEMBED_PREVIEW_*`)."""

    image_px: int = 320
    image_quality: int = 80
    audio_seconds: float = 30.0
    max_bytes: int = 512 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> PreviewLimits:
        return cls(
            image_px=settings.preview_image_px,
            image_quality=settings.preview_image_quality,
            audio_seconds=settings.preview_audio_seconds,
            max_bytes=settings.preview_max_bytes,
        )


def image_preview(image: Image.Image, limits: PreviewLimits) -> Preview:
    """A WebP thumbnail, at most `limits.image_px` on its longer side (never enlarged)."""
    thumb = image.convert("RGB")  # a copy: thumbnail() works in place
    thumb.thumbnail((limits.image_px, limits.image_px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, "WEBP", quality=limits.image_quality, method=4)
    return Preview(data=buf.getvalue(), media_type=IMAGE_MEDIA_TYPE)


def preview_rate(source_rate: int) -> int:
    """The MP3 sample rate for a source rate: the source's own when MP3 has it, up to 22.05 kHz."""
    wanted = min(source_rate, AUDIO_MAX_RATE)
    return next((rate for rate in MP3_RATES if rate >= wanted), AUDIO_MAX_RATE)


def audio_preview(data: bytes, limits: PreviewLimits) -> Preview:
    """The first `limits.audio_seconds` of an audio file, as mono MP3.

    Raises soundfile's errors for audio libsndfile cannot read (the caller has
    already decoded the same bytes once, so that means a libsndfile fault).
    """
    with sf.SoundFile(io.BytesIO(data)) as source:
        rate = source.samplerate
        # Block by block, each mixed to mono: 30 s of 16 channels at 384 kHz would be
        # 740 MB read at once.
        blocks, left = [], int(limits.audio_seconds * rate)
        while left > 0:
            block = source.read(min(left, 1 << 16), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            blocks.append(block.mean(axis=1, dtype=np.float32))
            left -= block.shape[0]
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    target = preview_rate(rate)
    if target != rate:
        mono = soxr.resample(mono, rate, target)
    if mono.size == 0:
        mono = np.zeros(target // 10, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(
        buf,
        np.clip(mono, -1.0, 1.0),
        target,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=AUDIO_COMPRESSION,
    )
    return Preview(data=buf.getvalue(), media_type=AUDIO_MEDIA_TYPE)


def make_preview(
    modality: str, value: object, data: bytes | None, limits: PreviewLimits, *, label: str = ""
) -> Preview | None:
    """The preview of one decoded input, or None (text, or a preview that failed or is too big).

    `value` is the decoded input (a PIL image for images); `data` the uploaded bytes.
    Blocking (encoding takes milliseconds to tens of them): run it off the event loop.
    """
    try:
        if modality == "image" and isinstance(value, Image.Image):
            preview = image_preview(value, limits)
        elif modality == "audio" and data is not None:
            preview = audio_preview(data, limits)
        else:
            return None
    except (OSError, RuntimeError, ValueError) as exc:
        logger.warning("no preview for %s: %s", label or modality, exc)
        return None
    if len(preview.data) > limits.max_bytes:
        logger.warning(
            "no preview for %s: %d bytes is over MMEMBED_PREVIEW_MAX_BYTES=%d",
            label or modality,
            len(preview.data),
            limits.max_bytes,
        )
        return None
    return preview

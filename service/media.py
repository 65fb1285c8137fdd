"""Uploaded files: tell images from audio by their bytes, decode them safely.

The file name and the client's Content-Type are never trusted: the first bytes
decide. Images are decoded with Pillow (size checked before any pixel is
decoded, EXIF rotation applied, RGB); audio with libsndfile through soundfile,
mixed to mono and resampled to 16 kHz, the rate every audio batch runs at.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageOps, UnidentifiedImageError

from model.constants import SAMPLE_RATE
from service.errors import CorruptMedia, InvalidRequest, PayloadTooLarge, UnsupportedMedia

SUPPORTED_IMAGES = "PNG, JPEG, GIF, BMP, TIFF, WebP"
SUPPORTED_AUDIO = "WAV, FLAC, OGG (Vorbis/Opus), MP3, AIFF"
SUPPORTED = f"images ({SUPPORTED_IMAGES}) and audio ({SUPPORTED_AUDIO})"

Modality = Literal["image", "audio"]


@dataclass(frozen=True)
class AudioClip:
    """Mono float32 samples at `SAMPLE_RATE`; shape (samples,)."""

    samples: np.ndarray
    sampling_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sampling_rate


@dataclass(frozen=True)
class DecodedMedia:
    modality: Modality
    value: Image.Image | AudioClip


def _is_mpeg_audio(head: bytes) -> bool:
    # An MPEG audio frame: 11 sync bits, and a layer field that is not 0 (0 is AAC's ADTS).
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0


def sniff(data: bytes) -> Modality | None:
    """'image' or 'audio' from the leading bytes; None when no signature matches.

    Raises UnsupportedMedia for recognised containers this service cannot decode
    (MP4/M4A/AAC, Matroska/WebM, HEIC/AVIF, WMA, AMR).
    """
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"BM"):
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "audio"
    if head[:4] in (b"fLaC", b"OggS") or head.startswith(b"ID3") or _is_mpeg_audio(head):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
            raise UnsupportedMedia(
                f"HEIC/AVIF images are not supported; send one of: {SUPPORTED_IMAGES}"
            )
        raise UnsupportedMedia(
            f"MP4/M4A/AAC audio (or video) is not supported; send one of: {SUPPORTED_AUDIO}"
        )
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        raise UnsupportedMedia(f"WebM/Matroska is not supported; send one of: {SUPPORTED_AUDIO}")
    if head.startswith(b"\x30\x26\xb2\x75") or head.startswith(b"#!AMR"):
        raise UnsupportedMedia(f"WMA/AMR audio is not supported; send one of: {SUPPORTED_AUDIO}")
    if _is_adts(head):
        raise UnsupportedMedia(f"AAC audio is not supported; send one of: {SUPPORTED_AUDIO}")
    return None


def _is_adts(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """An RGB image, EXIF-rotated; the pixel count is checked before pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                fmt = probe.format or "unknown"
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"image is {width}x{height} = {width * height} pixels; "
                        f"the limit is {max_pixels}"
                    )
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)
                img.load()
                rgb = ImageOps.exif_transpose(img).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise CorruptMedia(
            "corrupt image: the bytes look like an image but cannot be read"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise CorruptMedia(f"corrupt image: {exc}") from exc
    if fmt not in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "MPO"):
        raise UnsupportedMedia(f"{fmt} images are not supported; send one of: {SUPPORTED_IMAGES}")
    return rgb


def decode_audio(data: bytes) -> AudioClip:
    """Mono float32 at 16 kHz from any format libsndfile reads."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise CorruptMedia(f"corrupt or unreadable audio: {exc}") from exc
    if samples.shape[0] == 0:
        raise InvalidRequest("audio clip is empty (0 samples)")
    mono = samples.mean(axis=1, dtype=np.float32)  # (samples,)
    if not np.isfinite(mono).all():
        raise InvalidRequest("audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return AudioClip(np.ascontiguousarray(mono, dtype=np.float32))


def decode_media(data: bytes, *, max_pixels: int) -> DecodedMedia:
    """Detect the modality from the bytes and decode; 4xx service errors for bad files."""
    if not data:
        raise InvalidRequest("uploaded file is empty")
    kind = sniff(data)
    if kind == "image":
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    if kind == "audio":
        return DecodedMedia("audio", decode_audio(data))
    # No known signature: formats without one (e.g. TGA, PPM, AU) may still decode.
    try:
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    except (CorruptMedia, UnsupportedMedia):
        pass
    try:
        return DecodedMedia("audio", decode_audio(data))
    except (CorruptMedia, InvalidRequest):
        pass
    raise UnsupportedMedia(f"unrecognised file type; supported: {SUPPORTED}")

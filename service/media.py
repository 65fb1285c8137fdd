"""Uploaded files: tell images from audio by their bytes, decode them safely.

The file name and the client's Content-Type are never trusted: the first bytes
decide. Images are decoded with Pillow (size checked before any pixel is
decoded, EXIF rotation applied, RGB); audio with libsndfile through soundfile,
mixed to mono and resampled to 16 kHz, the rate every audio batch runs at.

Audio that would embed as something other than what was sent is refused: a WAV
whose header promises more sample data than the file holds (truncated), and clips
shorter than the minimum the model can use. A file whose tail cannot be decoded
(a cut or damaged MP3, FLAC or Ogg stream) is embedded from what did decode, with
a warning that names how much that was.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageOps, UnidentifiedImageError

from model.constants import SAMPLE_RATE
from model.imaging import on_white
from service.errors import (
    AudioTooShort,
    CorruptMedia,
    InvalidRequest,
    PayloadTooLarge,
    TruncatedMedia,
    UnsupportedMedia,
)

MIN_AUDIO_SECONDS = 0.1
READ_BLOCK_FRAMES = 1 << 16
# Data sizes written by tools that stream a WAV before knowing its length
# (0 and 0xFFFFFFFF by convention, 0x7FFFF000 by espeak-ng --stdout): not a promise.
STREAMING_WAV_SIZES = (0, 0xFFFFFFFF, 0x7FFFF000)
SUPPORTED_IMAGES = "PNG, JPEG, GIF, BMP, TIFF, WebP"
SUPPORTED_AUDIO = "WAV, FLAC, OGG (Vorbis/Opus), MP3, AIFF"
SUPPORTED = f"images ({SUPPORTED_IMAGES}) and audio ({SUPPORTED_AUDIO})"

Modality = Literal["image", "audio"]


@dataclass(frozen=True)
class AudioClip:
    """Mono float32 samples at `SAMPLE_RATE`; shape (samples,).

    `warnings` say what could not be decoded, when the clip is only part of its file.
    """

    samples: np.ndarray
    sampling_rate: int = SAMPLE_RATE
    warnings: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sampling_rate


@dataclass(frozen=True)
class DecodedMedia:
    modality: Modality
    value: Image.Image | AudioClip

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.value.warnings if isinstance(self.value, AudioClip) else ()


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
    """An RGB image, EXIF-rotated, transparency on white (model/imaging.py); the pixel
    count is checked before pixels are decoded."""
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
                rgb = on_white(ImageOps.exif_transpose(img))
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


def check_wav_length(data: bytes) -> None:
    """TruncatedMedia when a WAV's data chunk promises more bytes than the file holds.

    libsndfile quietly reads what is there (a 60-byte file whose header promises
    1 s yields 8 samples), so the chunk sizes are checked here first.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        held = len(data) - offset - 8
        if chunk == b"data":
            if size > held and size not in STREAMING_WAV_SIZES:
                raise TruncatedMedia(
                    f"truncated WAV: its header promises {size} bytes of sample data but the "
                    f"file holds {held} (cut off at {100 * held / size:.0f}%); send the whole file"
                )
            return
        offset += 8 + size + (size & 1)  # chunks are padded to an even size


def _read_frames(data: bytes) -> tuple[np.ndarray, int, int, str | None]:
    """(samples (N, channels), rate, frames the header announces, why the tail failed)."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        rate, announced = f.samplerate, f.frames
        blocks: list[np.ndarray] = []
        while True:
            try:
                block = f.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                if not blocks:
                    raise
                return np.concatenate(blocks), rate, announced, str(exc) or type(exc).__name__
            if block.shape[0] == 0:
                break
            blocks.append(block)
    samples = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    return samples, rate, announced, None


def decode_audio(data: bytes, *, min_seconds: float = MIN_AUDIO_SECONDS) -> AudioClip:
    """Mono float32 at 16 kHz from any format libsndfile reads.

    Refuses truncated WAVs and clips under `min_seconds`; a tail that does not decode
    (or a stream shorter than its header announces) gives a clip with a warning.
    """
    check_wav_length(data)
    try:
        samples, rate, announced, tail_error = _read_frames(data)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise CorruptMedia(f"corrupt or unreadable audio: {exc}") from exc
    if samples.shape[0] == 0:
        raise InvalidRequest("audio clip is empty (0 samples)")
    seconds = samples.shape[0] / rate
    if seconds < min_seconds:
        raise AudioTooShort(
            f"audio clip is {seconds:.4f} s long ({samples.shape[0]} samples at {rate} Hz); "
            f"the shortest this service embeds is {min_seconds:g} s (MMEMBED_MIN_AUDIO_SECONDS)"
        )
    clip_warnings = []
    if tail_error is not None:
        clip_warnings.append(
            f"audio is corrupt after {seconds:.2f} s ({tail_error}); embedded the first "
            f"{seconds:.2f} s"
        )
    elif announced > samples.shape[0] + rate // 100:  # more than 10 ms missing
        clip_warnings.append(
            f"audio ends early: its header announces {announced / rate:.2f} s but only "
            f"{seconds:.2f} s decoded; embedded the {seconds:.2f} s"
        )
    mono = samples.mean(axis=1, dtype=np.float32)  # (samples,)
    if not np.isfinite(mono).all():
        raise InvalidRequest("audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return AudioClip(np.ascontiguousarray(mono, dtype=np.float32), warnings=tuple(clip_warnings))


def decode_media(
    data: bytes, *, max_pixels: int, min_audio_seconds: float = MIN_AUDIO_SECONDS
) -> DecodedMedia:
    """Detect the modality from the bytes and decode; 4xx service errors for bad files."""
    if not data:
        raise InvalidRequest("uploaded file is empty")
    kind = sniff(data)
    if kind == "image":
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    if kind == "audio":
        return DecodedMedia("audio", decode_audio(data, min_seconds=min_audio_seconds))
    # No known signature: formats without one (e.g. TGA, PPM, AU) may still decode.
    try:
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    except (CorruptMedia, UnsupportedMedia):
        pass
    try:
        return DecodedMedia("audio", decode_audio(data, min_seconds=min_audio_seconds))
    except (CorruptMedia, InvalidRequest):
        pass
    raise UnsupportedMedia(f"unrecognised file type; supported: {SUPPORTED}")

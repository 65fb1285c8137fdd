"""Uploaded files: tell images from audio by their bytes, decode them safely.

The file name and the client's Content-Type are never trusted: the first bytes
decide. Images are decoded with Pillow (size checked before any pixel is
decoded, EXIF rotation applied, RGB); audio with libsndfile through soundfile,
mixed to mono and resampled to 16 kHz, the rate every audio batch runs at.

Memory is bounded before any decoding: `probe_media` reads only a file's header
(an image's size and mode, an audio file's frames, rate and channels) and says
what decoding it will hold, so a request can be refused (413) or made to wait for
room (service.budget) first. Audio over `max_seconds`, at a rate outside
1 kHz..384 kHz or with over 16 channels is refused from its header; the rest is
decoded block by block, mixed to mono and resampled as it streams, and stopped at
the limit whatever the header said. An image is reduced by a whole factor right
after decoding (JPEGs while decoding) to about `WORK_PIXELS`, so that what is kept
and what the model and the preview read stay small whatever the upload's size.

Audio that would embed as something other than what was sent is refused: a WAV
whose header promises more sample data than the file holds (truncated), and clips
shorter than the minimum the model can use. A file whose tail cannot be decoded
(a cut or damaged MP3, FLAC or Ogg stream) is embedded from what did decode, with
a warning that names how much that was.
"""

from __future__ import annotations

import io
import math
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
    AudioTooLong,
    AudioTooShort,
    CorruptMedia,
    InvalidRequest,
    PayloadTooLarge,
    TruncatedMedia,
    UnsupportedMedia,
)

MIN_AUDIO_SECONDS = 0.1
MAX_AUDIO_SECONDS = 300.0
# The most memory decoding one image may take (413 above): a 6300 x 6300 PNG takes
# 170 MB, a WebP of the same size three times that (libwebp decodes to a buffer that
# Pillow then copies), so a WebP is held to about 16 M pixels.
MAX_IMAGE_DECODE_BYTES = 256 * 2**20
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000  # the model's own bounds (model/audio.py)
MAX_CHANNELS = 16
READ_BLOCK_FRAMES = 1 << 16
# Images are reduced by a whole factor to no fewer than this many pixels right after
# decoding: far more than the model (224 x 224) or a preview (320 px) reads.
WORK_PIXELS = 2_000_000
# Bytes per pixel as Pillow holds each mode in memory.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
# Modes Image.reduce() takes; others are converted first.
_REDUCIBLE = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F")
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


@dataclass(frozen=True)
class MediaCost:
    """What decoding one file will take, from its header alone.

    `pixels` and `seconds` count against a request's limits; `decode_bytes` is the
    most memory its decoding holds at once and `held_bytes` what stays held after it
    (the reduced image, the 16 kHz clip), against the server's bytes in flight.
    """

    modality: Modality | None
    pixels: int = 0
    seconds: float = 0.0
    decode_bytes: int = 0
    held_bytes: int = 0


def _shrink_factor(width: int, height: int) -> int:
    """The whole factor an image of this size is reduced by (1: kept as it is)."""
    return max(1, math.isqrt(width * height // WORK_PIXELS))


def _image_decode_bytes(width: int, height: int, mode: str, fmt: str) -> int:
    """Peak bytes decoding an image holds: its pixels as decoded (a JPEG at its draft
    scale), a converted copy where its mode cannot be reduced as it is, and the result."""
    pixels = width * height
    factor = _shrink_factor(width, height)
    if fmt == "JPEG":  # libjpeg decodes at 1/2, 1/4 or 1/8 directly
        pixels //= min(8, 1 << (factor.bit_length() - 1)) ** 2
    held = pixels * _MODE_BYTES.get(mode, 4)
    if fmt == "WEBP":  # libwebp's own RGBA buffer, and Pillow's copy of it (measured)
        held += pixels * 12
    if mode not in _REDUCIBLE:
        held += pixels * 4
    return held + _image_held_bytes(width, height)


def _image_held_bytes(width: int, height: int) -> int:
    return width * height * 4 // _shrink_factor(width, height) ** 2


def image_cost(data: bytes, *, max_pixels: int) -> MediaCost:
    """An image's size from its header (no pixel is decoded); 413 over `max_pixels`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                mode, fmt = probe.mode, probe.format or "unknown"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise CorruptMedia(
            "corrupt image: the bytes look like an image but cannot be read"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise CorruptMedia(f"corrupt image: {exc}") from exc
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(MMEMBED_MAX_IMAGE_PIXELS)"
        )
    decode_bytes = _image_decode_bytes(width, height, mode, fmt)
    if decode_bytes > MAX_IMAGE_DECODE_BYTES:
        raise PayloadTooLarge(
            f"a {width}x{height} {fmt} image takes about {decode_bytes // 2**20} MiB to decode; "
            f"the limit is {MAX_IMAGE_DECODE_BYTES // 2**20} MiB per image (send it smaller, "
            "or as PNG or JPEG)"
        )
    return MediaCost(
        "image",
        pixels=width * height,
        decode_bytes=decode_bytes,
        held_bytes=_image_held_bytes(width, height),
    )


def _decoded_small(img: Image.Image) -> Image.Image:
    """Frame 0 of an opened image, decoded and reduced to about WORK_PIXELS (EXIF kept)."""
    img.seek(0)
    width, height = img.size
    factor = _shrink_factor(width, height)
    if factor > 1 and img.format == "JPEG":
        img.draft(img.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    img.load()
    factor = _shrink_factor(*img.size)
    if factor == 1:
        return img
    info = img.info
    if img.mode not in _REDUCIBLE:
        has_alpha = img.mode in ("PA",) or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    small = img.reduce(factor)
    small.info = dict(info)  # the EXIF orientation, read next
    return small


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """An RGB image, EXIF-rotated, transparency on white (model/imaging.py), reduced to
    about WORK_PIXELS; the pixel count is checked before pixels are decoded."""
    image_cost(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or "unknown"
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                rgb = on_white(ImageOps.exif_transpose(_decoded_small(img)))
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


def audio_cost(data: bytes, *, max_seconds: float = MAX_AUDIO_SECONDS) -> MediaCost:
    """An audio file's length from its header alone; refused before any decoding when
    it is over `max_seconds` (413), at a rate outside 1..384 kHz or over 16 channels."""
    check_wav_length(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise CorruptMedia(f"corrupt or unreadable audio: {exc}") from exc
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidRequest(
            f"audio sample rate is {rate} Hz; this service takes {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidRequest(f"audio has {channels} channels; the most is {MAX_CHANNELS}")
    seconds = frames / rate
    _check_length(seconds, max_seconds, "its header says")
    held = math.ceil(min(seconds, max_seconds) * SAMPLE_RATE) * 4
    block = READ_BLOCK_FRAMES * channels * 4 * 2  # a block as read, and mixed to mono
    # While decoding: the 16 kHz chunks, then the clip they are joined into.
    return MediaCost("audio", seconds=seconds, decode_bytes=2 * held + block, held_bytes=held)


def _check_length(seconds: float, max_seconds: float, how: str) -> None:
    if seconds > max_seconds:
        raise AudioTooLong(
            f"audio is {seconds:.1f} s long ({how}); the limit is {max_seconds:g} s "
            "(MMEMBED_MAX_AUDIO_SECONDS)"
        )


def _read_mono_16k(data: bytes, max_seconds: float) -> tuple[np.ndarray, int, int, int, str | None]:
    """Decode block by block, each mixed to mono and resampled to 16 kHz as it streams,
    stopping past `max_seconds` whatever the header said.

    Returns (samples at 16 kHz, source rate, frames read, frames the header announces,
    why the tail failed or None).
    """
    with sf.SoundFile(io.BytesIO(data)) as f:
        rate, announced = f.samplerate, f.frames
        limit = math.ceil(max_seconds * rate)
        stream = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            if rate != SAMPLE_RATE
            else None
        )
        parts: list[np.ndarray] = []
        frames, tail_error = 0, None
        while True:
            try:
                block = f.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                if not frames:
                    raise
                tail_error = str(exc) or type(exc).__name__
                break
            if block.shape[0] == 0:
                break
            frames += block.shape[0]
            if frames > limit:
                _check_length(frames / rate, max_seconds, "while decoding")
            mono = block.mean(axis=1, dtype=np.float32)  # (frames,)
            if not np.isfinite(mono).all():
                raise InvalidRequest("audio contains NaN or infinite samples")
            parts.append(stream.resample_chunk(mono) if stream is not None else mono)
    if stream is not None and frames:
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return samples, rate, frames, announced, tail_error


def decode_audio(
    data: bytes, *, min_seconds: float = MIN_AUDIO_SECONDS, max_seconds: float = MAX_AUDIO_SECONDS
) -> AudioClip:
    """Mono float32 at 16 kHz from any format libsndfile reads.

    Refuses from the header alone audio over `max_seconds` and odd rates or channel
    counts (`audio_cost`), then truncated WAVs and clips under `min_seconds`; a tail
    that does not decode (or a stream shorter than its header announces) gives a clip
    with a warning.
    """
    audio_cost(data, max_seconds=max_seconds)
    try:
        mono, rate, frames, announced, tail_error = _read_mono_16k(data, max_seconds)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise CorruptMedia(f"corrupt or unreadable audio: {exc}") from exc
    if frames == 0:
        raise InvalidRequest("audio clip is empty (0 samples)")
    seconds = frames / rate
    if seconds < min_seconds:
        raise AudioTooShort(
            f"audio clip is {seconds:.4f} s long ({frames} samples at {rate} Hz); "
            f"the shortest this service embeds is {min_seconds:g} s (MMEMBED_MIN_AUDIO_SECONDS)"
        )
    clip_warnings = []
    if tail_error is not None:
        clip_warnings.append(
            f"audio is corrupt after {seconds:.2f} s ({tail_error}); embedded the first "
            f"{seconds:.2f} s"
        )
    elif announced > frames + rate // 100:  # more than 10 ms missing
        clip_warnings.append(
            f"audio ends early: its header announces {announced / rate:.2f} s but only "
            f"{seconds:.2f} s decoded; embedded the {seconds:.2f} s"
        )
    return AudioClip(np.ascontiguousarray(mono, dtype=np.float32), warnings=tuple(clip_warnings))


def probe_media(
    data: bytes, *, max_pixels: int, max_audio_seconds: float = MAX_AUDIO_SECONDS
) -> MediaCost:
    """What decoding `data` will take, from its header; raises the same 4xx errors the
    header alone shows (over the limits, odd audio). A file no header reader knows
    costs nothing here: `decode_media` then refuses it."""
    if not data:
        raise InvalidRequest("uploaded file is empty")
    kind = sniff(data)
    if kind == "image":
        return image_cost(data, max_pixels=max_pixels)
    if kind == "audio":
        return audio_cost(data, max_seconds=max_audio_seconds)
    try:
        return image_cost(data, max_pixels=max_pixels)
    except CorruptMedia:
        pass
    try:
        return audio_cost(data, max_seconds=max_audio_seconds)
    except CorruptMedia:
        return MediaCost(None)


def decode_media(
    data: bytes,
    *,
    max_pixels: int,
    min_audio_seconds: float = MIN_AUDIO_SECONDS,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
) -> DecodedMedia:
    """Detect the modality from the bytes and decode; 4xx service errors for bad files."""
    if not data:
        raise InvalidRequest("uploaded file is empty")
    kind = sniff(data)
    audio_limits = {"min_seconds": min_audio_seconds, "max_seconds": max_audio_seconds}
    if kind == "image":
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    if kind == "audio":
        return DecodedMedia("audio", decode_audio(data, **audio_limits))
    # No known signature: formats without one (e.g. TGA, PPM, AU) may still decode.
    try:
        return DecodedMedia("image", decode_image(data, max_pixels=max_pixels))
    except (CorruptMedia, UnsupportedMedia):
        pass
    try:
        return DecodedMedia("audio", decode_audio(data, **audio_limits))
    except (CorruptMedia, InvalidRequest):
        pass
    raise UnsupportedMedia(f"unrecognised file type; supported: {SUPPORTED}")

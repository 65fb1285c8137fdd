"""Media detection from bytes (never names) and safe decoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from model.constants import SAMPLE_RATE
from service.errors import CorruptMedia, InvalidRequest, PayloadTooLarge, UnsupportedMedia
from service.media import AudioClip, decode_media, sniff

MAX_PIXELS = 4_000_000


def test_png_and_jpeg_decode_to_rgb_images(png_bytes, jpeg_bytes):
    for data in (png_bytes, jpeg_bytes):
        media = decode_media(data, max_pixels=MAX_PIXELS)
        assert media.modality == "image"
        assert isinstance(media.value, Image.Image) and media.value.mode == "RGB"
    assert decode_media(png_bytes, max_pixels=MAX_PIXELS).value.size == (96, 80)


def test_palette_and_alpha_images_become_rgb():
    buf = io.BytesIO()
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(buf, "PNG")
    assert decode_media(buf.getvalue(), max_pixels=MAX_PIXELS).value.mode == "RGB"


def test_speech_wav_decodes_to_16k_mono(wav_bytes):
    media = decode_media(wav_bytes, max_pixels=MAX_PIXELS)
    assert media.modality == "audio"
    clip = media.value
    assert isinstance(clip, AudioClip) and clip.sampling_rate == SAMPLE_RATE
    samples, rate = sf.read(io.BytesIO(wav_bytes))
    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32
    assert abs(clip.seconds - len(samples) / rate) < 0.01
    assert np.abs(clip.samples).max() > 0.05, "real speech, not silence"


def test_stereo_flac_is_mixed_and_resampled(flac_bytes, wav_bytes):
    clip = decode_media(flac_bytes, max_pixels=MAX_PIXELS).value
    reference = decode_media(wav_bytes, max_pixels=MAX_PIXELS).value
    assert clip.samples.ndim == 1
    assert abs(clip.seconds - reference.seconds) < 0.01


def test_ogg_vorbis_is_audio(wav_bytes):
    samples, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="OGG", subtype="VORBIS")
    assert decode_media(buf.getvalue(), max_pixels=MAX_PIXELS).modality == "audio"


def test_detection_uses_bytes_not_names(png_bytes, wav_bytes):
    assert sniff(png_bytes) == "image"
    assert sniff(wav_bytes) == "audio"


def test_truncated_png_is_corrupt(png_bytes):
    with pytest.raises(CorruptMedia, match="corrupt image"):
        decode_media(png_bytes[: len(png_bytes) // 2], max_pixels=MAX_PIXELS)


def test_png_with_garbage_body_is_corrupt():
    with pytest.raises(CorruptMedia):
        decode_media(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, max_pixels=MAX_PIXELS)


def test_wav_header_with_garbage_is_corrupt():
    data = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40
    with pytest.raises(CorruptMedia, match="audio"):
        decode_media(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 32,  # M4A
        b"\x1a\x45\xdf\xa3" + b"\x00" * 32,  # WebM
        b"\x00\x00\x00\x1cftypheic" + b"\x00" * 32,  # HEIC
        b"#!AMR\n" + b"\x00" * 32,
        b"just some text that is not media at all",
    ],
    ids=["m4a", "webm", "heic", "amr", "text"],
)
def test_unsupported_formats_are_415_naming_what_is_supported(data):
    with pytest.raises(UnsupportedMedia) as info:
        decode_media(data, max_pixels=MAX_PIXELS)
    assert info.value.status_code == 415
    assert "WAV" in info.value.message or "PNG" in info.value.message


def test_empty_file_is_refused():
    with pytest.raises(InvalidRequest, match="empty"):
        decode_media(b"", max_pixels=MAX_PIXELS)


def test_empty_audio_is_refused():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(InvalidRequest, match="empty"):
        decode_media(buf.getvalue(), max_pixels=MAX_PIXELS)


def test_nan_audio_is_refused():
    buf = io.BytesIO()
    samples = np.zeros(1600, dtype=np.float32)
    samples[10] = np.nan
    sf.write(buf, samples, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(InvalidRequest, match="NaN"):
        decode_media(buf.getvalue(), max_pixels=MAX_PIXELS)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [3000, 50_000])
def test_oversized_images_are_refused_before_decoding(side):
    with pytest.raises(PayloadTooLarge, match="pixels|too large"):
        decode_media(_png_header_only(side, side), max_pixels=MAX_PIXELS)

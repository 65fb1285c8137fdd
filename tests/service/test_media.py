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
from service.errors import (
    AudioTooShort,
    CorruptMedia,
    InvalidRequest,
    PayloadTooLarge,
    TruncatedMedia,
    UnsupportedMedia,
)
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


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_a_wav_cut_short_of_what_its_header_promises_is_refused():
    whole = _wav(1.0)  # header: 32000 bytes of samples
    tiny = whole[:60]  # 44-byte header + 8 samples: libsndfile alone reads the 8 samples
    assert len(sf.read(io.BytesIO(tiny))[0]) == 8
    for cut in (tiny, whole[: len(whole) // 2]):
        with pytest.raises(TruncatedMedia, match=r"truncated WAV: .*promises 32000 bytes"):
            decode_media(cut, max_pixels=MAX_PIXELS)
    assert TruncatedMedia.error_type == "truncated_media" and TruncatedMedia.status_code == 400


def test_a_streamed_wav_with_a_placeholder_length_is_not_truncated():
    data = bytearray(_wav(0.5))
    data[40:44] = struct.pack("<I", 0x7FFFF000)  # what `espeak-ng --stdout` writes
    data[4:8] = struct.pack("<I", 0x7FFFF024)
    clip = decode_media(bytes(data), max_pixels=MAX_PIXELS).value
    assert abs(clip.seconds - 0.5) < 0.01 and clip.warnings == ()


def test_clips_shorter_than_the_minimum_are_refused_with_their_length():
    with pytest.raises(AudioTooShort, match=r"0\.0500 s long.*shortest .* is 0\.1 s"):
        decode_media(_wav(0.05), max_pixels=MAX_PIXELS)
    with pytest.raises(AudioTooShort, match="shortest .* is 0.5 s"):
        decode_media(_wav(0.3), max_pixels=MAX_PIXELS, min_audio_seconds=0.5)
    assert decode_media(_wav(0.1), max_pixels=MAX_PIXELS).value.warnings == ()


def test_an_mp3_whose_tail_is_cut_is_embedded_with_a_warning():
    t = np.arange(32_000, dtype=np.float32) / 16_000
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), 16_000, format="MP3")
    data = buf.getvalue()
    whole = decode_media(data, max_pixels=MAX_PIXELS).value
    assert whole.warnings == () and abs(whole.seconds - 2.0) < 0.1
    cut = decode_media(data[: len(data) * 2 // 3], max_pixels=MAX_PIXELS).value
    assert 0.5 < cut.seconds < 1.9
    (warning,) = cut.warnings
    assert "ends early" in warning and "announces 2.00 s" in warning

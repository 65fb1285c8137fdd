import numpy as np
import pytest

from model.audio import (
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    prepare_clip,
    split_windows,
    valid_frames,
)
from model.errors import InvalidInput


def test_resamples_to_16k_keeping_the_tone():
    t = np.arange(44_100) / 44_100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = prepare_clip(tone, 44_100)
    assert out.dtype == np.float32 and out.shape == (16_000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == 440  # 1 s at 16 kHz: bin k is k Hz


def test_16k_input_is_passed_through():
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    np.testing.assert_array_equal(prepare_clip(x, SAMPLE_RATE), x)


def test_stereo_is_averaged_to_mono():
    left = np.full(800, 0.5, dtype=np.float32)
    right = np.full(800, -0.1, dtype=np.float32)
    out = prepare_clip(np.stack([left, right], axis=1), SAMPLE_RATE)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)


def test_int16_is_scaled_to_unit_range():
    x = np.array([0, 16_384, -32_767, 32_767], dtype=np.int16)
    np.testing.assert_allclose(prepare_clip(x, SAMPLE_RATE), [0, 0.5, -1, 1], atol=1e-4)


def test_uint8_is_centred_and_scaled():
    x = np.array([128, 255, 0, 192], dtype=np.uint8)
    np.testing.assert_allclose(prepare_clip(x, SAMPLE_RATE), [0, 127 / 128, -1, 0.5], atol=1e-6)


def test_silence_is_accepted():
    out = prepare_clip(np.zeros(16_000, dtype=np.float32), SAMPLE_RATE)
    assert out.shape == (16_000,) and not out.any()


@pytest.mark.parametrize(
    ("clip", "rate", "message"),
    [
        (np.zeros(0, dtype=np.float32), 16_000, "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), 16_000, "NaN or infinite"),
        (np.array([0.1, np.inf], dtype=np.float32), 16_000, "NaN or infinite"),
        (np.zeros((2, 48_000), dtype=np.float32), 48_000, "channels"),
        (np.zeros((2, 2, 2), dtype=np.float32), 16_000, "1-D or 2-D"),
        (np.array(["a", "b"]), 16_000, "dtype"),
        (np.zeros(100, dtype=np.float32), 0, "sampling_rate"),
        (np.zeros(100, dtype=np.float32), 16_000.0, "sampling_rate"),
        ([0.1, 0.2], 16_000, "numpy array"),
    ],
)
def test_bad_clips_are_refused(clip, rate, message):
    with pytest.raises(InvalidInput, match=message):
        prepare_clip(clip, rate)


def test_too_long_is_refused_with_length_and_limit():
    with pytest.raises(InvalidInput, match=r"clip 3 is 61\.0 s long; the limit is 60 s"):
        prepare_clip(np.zeros(61 * 8_000, dtype=np.float32), 8_000, max_seconds=60, index=3)


def test_windows_and_valid_frames():
    samples = np.zeros(WINDOW_SAMPLES * 2 + 3_200, dtype=np.float32)
    windows = split_windows(samples)
    assert [len(w) for w in windows] == [WINDOW_SAMPLES, WINDOW_SAMPLES, 3_200]
    assert [valid_frames(len(w)) for w in windows] == [FRAMES_PER_WINDOW, FRAMES_PER_WINDOW, 10]
    assert valid_frames(48_000) == 150  # 3 s
    assert valid_frames(1) == 1
    assert valid_frames(321) == 2

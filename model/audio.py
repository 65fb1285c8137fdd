"""Audio input handling: validation, mono mix-down, resampling to 16 kHz, 30 s windows.

Whisper sees 30 s at a time: 480,000 samples at 16 kHz, 3,000 log-mel frames
(hop 160), 1,500 encoder frames after its stride-2 convolution, so one encoder
frame per 320 samples.

Policy (documented for users in docs/limits.md):
- any sampling rate is accepted and resampled to 16 kHz with soxr; 2-D input is
  (samples, channels) and is averaged to mono;
- a clip longer than 30 s is split into consecutive 30 s windows, each encoded
  on its own; their valid frames are joined along the token axis so the
  resampler attends to the whole clip; clips longer than ``max_seconds``
  (600 s by default) are refused with :class:`InvalidInput`;
- empty clips (no samples) and clips with NaN or infinite samples are refused;
- digital silence is a valid input and is embedded like any other clip (its
  log-mel is constant; the embedding is whatever the model makes of silence).
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from model.constants import SAMPLE_RATE
from model.errors import InvalidInput

WINDOW_SECONDS = 30
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS  # 480,000
SAMPLES_PER_FRAME = 320  # mel hop 160, then Whisper's stride-2 conv
FRAMES_PER_WINDOW = WINDOW_SAMPLES // SAMPLES_PER_FRAME  # 1,500
MAX_CHANNELS = 16


def prepare_clip(
    clip: np.ndarray, sampling_rate: int, *, max_seconds: float = 600.0, index: int = 0
) -> np.ndarray:
    """Validate one clip and return it as float32 mono at 16 kHz.

    Args:
        clip: (samples,) or (samples, channels) array of floats (integer PCM, signed
            or unsigned, is scaled from its full range to [-1, 1]).
        sampling_rate: the clip's sampling rate in Hz.
        max_seconds: longest accepted duration.
        index: position of the clip in the caller's list, for error messages.

    Returns:
        (samples_16k,) float32, C-contiguous.
    """
    check_sampling_rate(sampling_rate)
    if not isinstance(clip, np.ndarray):
        raise InvalidInput(f"audio clip {index} must be a numpy array; got {type(clip).__name__}")
    if clip.ndim == 2:
        if clip.shape[1] > MAX_CHANNELS:
            raise InvalidInput(
                f"audio clip {index} has shape {clip.shape}: expected (samples, channels) with at "
                f"most {MAX_CHANNELS} channels (channels-first arrays must be transposed)"
            )
    elif clip.ndim != 1:
        raise InvalidInput(f"audio clip {index} must be 1-D or 2-D; got shape {clip.shape}")
    if clip.shape[0] == 0:
        raise InvalidInput(f"audio clip {index} is empty (0 samples)")
    seconds = clip.shape[0] / sampling_rate
    if seconds > max_seconds:
        raise InvalidInput(
            f"audio clip {index} is {seconds:.1f} s long; the limit is {max_seconds:g} s"
        )
    if np.issubdtype(clip.dtype, np.unsignedinteger):  # e.g. 8-bit PCM, centred on 128
        half = (float(np.iinfo(clip.dtype).max) + 1) / 2
        samples = ((clip.astype(np.float64) - half) / half).astype(np.float32)
    elif np.issubdtype(clip.dtype, np.integer):
        scale = float(np.iinfo(clip.dtype).max)
        samples = clip.astype(np.float32) / scale
    elif np.issubdtype(clip.dtype, np.floating):
        samples = clip.astype(np.float32, copy=False)
    else:
        raise InvalidInput(f"audio clip {index} has unsupported dtype {clip.dtype}")
    if not np.isfinite(samples).all():
        raise InvalidInput(f"audio clip {index} contains NaN or infinite samples")
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if sampling_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sampling_rate, SAMPLE_RATE, quality="HQ")
        if samples.shape[0] == 0:
            raise InvalidInput(
                f"audio clip {index} is too short to resample ({clip.shape[0]} samples at "
                f"{sampling_rate} Hz)"
            )
    return np.ascontiguousarray(samples, dtype=np.float32)


def check_sampling_rate(sampling_rate: object) -> int:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int | np.integer):
        raise InvalidInput(f"sampling_rate must be an integer in Hz; got {sampling_rate!r}")
    if not 1_000 <= int(sampling_rate) <= 384_000:
        raise InvalidInput(f"sampling_rate must be between 1000 and 384000 Hz; got {sampling_rate}")
    return int(sampling_rate)


def split_windows(samples: np.ndarray) -> list[np.ndarray]:
    """Split a 16 kHz clip into consecutive windows of at most 30 s (the last may be shorter)."""
    return [samples[i : i + WINDOW_SAMPLES] for i in range(0, samples.shape[0], WINDOW_SAMPLES)]


def valid_frames(num_samples: int) -> int:
    """Whisper encoder frames that carry signal for a window of ``num_samples`` (1..1500)."""
    return max(1, min(FRAMES_PER_WINDOW, math.ceil(num_samples / SAMPLES_PER_FRAME)))

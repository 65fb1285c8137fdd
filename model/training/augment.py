"""Augmentation of cached encoder features (the encoders are frozen, so it happens after them)."""

from __future__ import annotations

import numpy as np
import torch

from model.training.recipe import AugmentPart


def augment_tokens(
    tokens: np.ndarray, aug: AugmentPart, rng: np.random.Generator, *, text: bool = False
) -> torch.Tensor:
    """Augmented copy of one item's cached tokens (T, D) -> (T', D) float32 tensor.

    Media: first, with ``time_stretch`` s > 0, the frames resampled to a rate drawn
    log-uniformly from 1/(1+s) to 1+s times the spoken one (:func:`stretch_frames`);
    then ``time_masks`` spans of up to ``time_mask_frac`` of T removed,
    ``frame_drop`` of the rest removed, ``channel_mask`` of channels zeroed,
    Gaussian noise of ``feature_noise`` times each channel's std added.
    Text: ``text_token_drop`` of the tokens removed. At least one token stays.
    """
    x = np.asarray(tokens, dtype=np.float32)
    if not text and aug.time_stretch > 0:
        bound = np.log1p(aug.time_stretch)
        x = stretch_frames(x, float(np.exp(rng.uniform(-bound, bound))))
    n = x.shape[0]
    keep = np.ones(n, dtype=bool)
    if text:
        if aug.text_token_drop > 0 and n > 2:
            keep = rng.random(n) >= aug.text_token_drop
    else:
        width = int(aug.time_mask_frac * n)
        for _ in range(aug.time_masks if width > 0 else 0):
            w = int(rng.integers(1, width + 1))
            s = int(rng.integers(0, n - w + 1))
            keep[s : s + w] = False
        if aug.frame_drop > 0:
            keep &= rng.random(n) >= aug.frame_drop
    if not keep.any():
        keep[int(rng.integers(0, n))] = True
    x = x[keep]
    if not text:
        if aug.channel_mask > 0:
            x = x * (rng.random(x.shape[1]) >= aug.channel_mask).astype(np.float32)
        if aug.feature_noise > 0:
            std = x.std(axis=0, keepdims=True) + 1e-6
            x = x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * std * aug.feature_noise
    return torch.from_numpy(np.ascontiguousarray(x))


def stretch_frames(frames: np.ndarray, rate: float) -> np.ndarray:
    """(T, D) frames as if spoken ``rate`` times as fast: round(T / rate) frames,
    linearly interpolated between neighbours (at least one).

    The held-out test voices speak faster and slower than any training voice
    (model/training/spoken.py), and the encoders are frozen, so the features
    are cached once per clip; resampling them in time is the cheap stand-in
    for speaking each sentence again at other speeds. The encoder's frames are
    contextual, so this approximates a change of tempo rather than reproducing it;
    measured on the release recipe it did not help the fast held-out voices
    (model/training/experiments.md, "Time-stretch augmentation"), so it is off
    unless a recipe sets it.
    """
    n = frames.shape[0]
    m = max(1, int(round(n / rate)))
    if m == n or n == 1:
        return frames
    pos = np.linspace(0.0, n - 1.0, m)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    return frames[lo] * (1.0 - w) + frames[hi] * w

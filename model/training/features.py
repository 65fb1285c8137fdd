"""Frozen-encoder features computed once and cached on disk.

The encoders never train, so their outputs are computed once per item and
reused by every epoch: an epoch then costs only the trainable part.

Layout of one cache (one folder per modality and key)::

    <root>/<modality>-<key16>/
        key.json               what the key was computed from
        shard_00000.npy        (sum of T_i, D) float16: the valid tokens of each item, concatenated
        shard_00000.idx.json   {"items": [item ids], "offsets": [0, T_0, T_0+T_1, ...]}

Only valid tokens are stored (the audio frames of the clip, not Whisper's 30 s
padding; the text tokens, not the batch padding). The key is a hash of the
encoder's config (source, shapes, ``audio_window``, token limit), a
fingerprint of its weight files, and the preprocessing parameters, so changing
any of them makes a new, empty cache instead of reusing stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.atomic import atomic_write_bytes, atomic_write_with
from model.constants import SAMPLE_RATE
from model.multimodal import MultimodalModel
from model.training.data import DataError, Pair, SkipReport, load_media

log = logging.getLogger(__name__)

FEATURES_VERSION = 1
SHARD_ITEMS = 2048


def _folder_fingerprint(folder: Path) -> list[Any]:
    """Names and sizes of every file, plus the content of small config files."""
    out: list[Any] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(folder))
        entry: list[Any] = [rel, path.stat().st_size]
        if path.suffix in (".json", ".txt") and path.stat().st_size < 1_000_000:
            entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
        out.append(entry)
    return out


def cache_key_parts(encoder_config: Any, preprocessing: dict[str, Any] | None = None) -> dict:
    """Everything the cached features depend on, as a JSON-safe dict.

    ``encoder_config`` is a :class:`model.config.EncoderConfig`; a local
    source folder is named by its resolved path and contributes a fingerprint of
    its files.
    """
    enc = asdict(encoder_config)
    parts: dict[str, Any] = {"version": FEATURES_VERSION, "encoder": enc}
    source = enc.get("source")
    if source and Path(source).is_dir():
        # One folder, however it is spelt (relative, absolute, through a symlink).
        enc["source"] = str(Path(source).resolve())
        parts["weights"] = _folder_fingerprint(Path(source))
    parts["preprocessing"] = preprocessing or {}
    return parts


def cache_key(parts: dict) -> str:
    """SHA-256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def item_id(pair: Pair) -> str:
    """Id of a pair's media in the cache: its path, size and modification time."""
    stat = pair.path.stat()
    return f"{pair.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def text_item_id(text: str) -> str:
    return "text|" + text


@dataclass
class _Shard:
    tokens: np.ndarray  # (sum T, D) float16, memory-mapped
    offsets: np.ndarray  # (n + 1,) int64


class FeatureCache:
    """Cached frozen-encoder tokens of one modality for one cache key.

    Args:
        root: folder holding all caches.
        modality: "image", "audio" or "text".
        key_parts: from :func:`cache_key_parts`; its hash names the cache folder.
    """

    def __init__(self, root: str | Path, modality: str, key_parts: dict) -> None:
        self.modality = modality
        self.key_parts = key_parts
        self.key = cache_key(key_parts)
        self.dir = Path(root) / f"{modality}-{self.key[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if key_file.exists():
            stored = json.loads(key_file.read_text())
            if stored.get("key") != self.key:
                raise RuntimeError(f"{self.dir}: key.json holds another key; remove the folder")
        else:
            key_file.write_text(json.dumps({"key": self.key, "parts": key_parts}, indent=1))
        self._index: dict[str, tuple[int, int]] = {}
        self._shards: list[_Shard] = []
        self._load()

    @classmethod
    def for_model(cls, root: str | Path, model: MultimodalModel, modality: str) -> FeatureCache:
        """The cache of ``model``'s ``modality`` encoder (a :class:`MultimodalModel`)."""
        enc = model.config.encoders[modality]
        preprocessing = {"sampling_rate": SAMPLE_RATE} if modality == "audio" else {}
        return cls(root, modality, cache_key_parts(enc, preprocessing))

    def _shard_paths(self) -> list[tuple[Path, Path]]:
        out = []
        for idx in sorted(self.dir.glob("shard_*.idx.json")):
            data = idx.with_name(idx.name.removesuffix(".idx.json") + ".npy")
            if data.exists():
                out.append((data, idx))
        return out

    def _load(self) -> None:
        self._index.clear()
        self._shards.clear()
        for data, idx in self._shard_paths():
            meta = json.loads(idx.read_text())
            shard_no = len(self._shards)
            self._shards.append(
                _Shard(np.load(data, mmap_mode="r"), np.asarray(meta["offsets"], dtype=np.int64))
            )
            for row, item in enumerate(meta["items"]):
                self._index[item] = (shard_no, row)

    def __contains__(self, item: str) -> bool:
        return item in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, item: str) -> np.ndarray:
        """The cached tokens of one item, (T, D) float16 (read-only, memory-mapped)."""
        shard_no, row = self._index[item]
        shard = self._shards[shard_no]
        return shard.tokens[shard.offsets[row] : shard.offsets[row + 1]]

    def length(self, item: str) -> int:
        shard_no, row = self._index[item]
        offsets = self._shards[shard_no].offsets
        return int(offsets[row + 1] - offsets[row])

    def write_shard(self, items: Sequence[str], tokens: Sequence[np.ndarray]) -> None:
        """Append one shard: ``tokens[i]`` is (T_i, D); written atomically, the data before
        the index that names it, so a crash leaves no index without its data."""
        if not items:
            return
        shard_no = len(self._shard_paths())
        while (self.dir / f"shard_{shard_no:05d}.npy").exists():
            shard_no += 1
        stem = self.dir / f"shard_{shard_no:05d}"
        lengths = [t.shape[0] for t in tokens]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        data = np.concatenate(tokens, axis=0).astype(np.float16)
        atomic_write_with(stem.with_suffix(".npy"), lambda tmp: _save_npy(tmp, data))
        index = json.dumps({"items": list(items), "offsets": offsets.tolist()})
        atomic_write_bytes(stem.with_name(stem.name + ".idx.json"), index.encode())
        self._load()


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, it would append ``.npy``)."""
    with open(path, "wb") as fh:
        np.save(fh, array)


def encode_items(
    model: MultimodalModel, modality: str, raw: list[Any], device: str | torch.device = "cpu"
) -> list[np.ndarray]:
    """Run the frozen encoder on raw items; return each item's valid tokens, (T_i, D) float16."""
    batch = model.preprocess(modality, raw)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.inference_mode():
        out = model.encode(modality, batch)
    tokens = out.tokens.float().cpu().numpy()
    mask = out.mask.cpu().numpy().astype(bool)
    return [tokens[i][mask[i]].astype(np.float16) for i in range(tokens.shape[0])]


@dataclass
class FeatureJob:
    """One item to encode: its cache id, how to load it, where it came from (for errors),
    and a sort key (duration or length) so that similar lengths share a batch."""

    id: str
    load: Callable[[], Any]
    origin: str
    sort_key: float


def feature_bar(modality: str, total: int, progress: bool) -> Any:
    """A progress bar over ``total`` items to encode; hidden when there are none."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=f"{modality} features", unit="item", disable=not progress or not total
    )


def _pending(items: Sequence[FeatureJob], cache: FeatureCache) -> list[FeatureJob]:
    """The jobs not cached yet, each id once, shortest first (similar lengths share a batch)."""
    todo: list[FeatureJob] = []
    seen: set[str] = set()
    for job in items:
        if job.id not in cache and job.id not in seen:
            seen.add(job.id)
            todo.append(job)
    todo.sort(key=lambda job: job.sort_key)
    return todo


def build_features(
    model: MultimodalModel,
    cache: FeatureCache,
    items: Sequence[FeatureJob],
    *,
    batch_size: int = 16,
    shard_items: int = SHARD_ITEMS,
    device: str | torch.device = "cpu",
    progress: bool = True,
    bar: Any = None,
) -> tuple[SkipReport, dict[str, float]]:
    """Encode and cache every item not already in ``cache``.

    Args:
        items: the jobs; their loaders raise :class:`DataError` for unreadable
            media, which is reported and skipped.
        bar: a progress bar shared by several calls (the caller closes it);
            without one, a bar of this call's own is shown when ``progress``
            is set and something is left to encode.

    Returns:
        The skip report and timing: ``{"items": n encoded, "seconds": s,
        "seconds_per_item": s/n}``.
    """
    todo = _pending(items, cache)
    skipped = SkipReport()
    pending_ids: list[str] = []
    pending_tokens: list[np.ndarray] = []
    start = time.perf_counter()
    done = 0
    own_bar = bar is None
    if own_bar:
        bar = feature_bar(cache.modality, len(todo), progress)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        ids: list[str] = []
        raw: list[Any] = []
        for job in chunk:
            try:
                raw.append(job.load())
                ids.append(job.id)
            except DataError as exc:
                skipped.add(job.origin, str(exc).removeprefix(f"{job.origin}: "))
        if raw:
            pending_tokens.extend(encode_items(model, cache.modality, raw, device))
            pending_ids.extend(ids)
            done += len(ids)
        bar.update(len(chunk))
        if len(pending_ids) >= shard_items:
            cache.write_shard(pending_ids, pending_tokens)
            pending_ids, pending_tokens = [], []
    cache.write_shard(pending_ids, pending_tokens)
    if own_bar:
        bar.close()
    seconds = time.perf_counter() - start
    return skipped, {
        "items": done,
        "seconds": round(seconds, 2),
        "seconds_per_item": round(seconds / done, 4) if done else 0.0,
    }


def pair_feature_items(pairs: Sequence[Pair]) -> tuple[list[FeatureJob], SkipReport]:
    """Feature jobs of the media of ``pairs`` (sort key: duration, else file size)."""
    items = []
    skipped = SkipReport()
    for pair in pairs:
        try:
            ident = item_id(pair)
        except OSError as exc:
            skipped.add(pair.origin, f"missing file {pair.path}: {exc.strerror}")
            continue
        size = float(pair.meta.get("duration_s", pair.path.stat().st_size))
        items.append(FeatureJob(ident, lambda p=pair: load_media(p), pair.origin, size))
    return items, skipped


def text_feature_items(texts: Sequence[str]) -> list[FeatureJob]:
    """Feature jobs of captions (sort key: length)."""
    return [
        FeatureJob(text_item_id(t), lambda t=t: t, f"caption {t[:40]!r}", len(t)) for t in texts
    ]


def mean_tokens(cache: FeatureCache, items: Sequence[str]) -> np.ndarray:
    """The mean of each item's cached tokens, (N, D) float32: for MiniLM's cache, its
    own sentence embedding before L2 normalisation."""
    return np.stack([np.asarray(cache.get(item), np.float32).mean(axis=0) for item in items])


def collate(features: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length token arrays into a batch.

    Args:
        features: B arrays of shape (T_i, D).

    Returns:
        tokens (B, T_max, D) float32 and mask (B, T_max) bool, True on valid tokens.
    """
    if not features:
        raise ValueError("cannot collate an empty batch")
    dim = features[0].shape[1]
    t_max = max(max(f.shape[0] for f in features), 1)
    tokens = torch.zeros(len(features), t_max, dim)
    mask = torch.zeros(len(features), t_max, dtype=torch.bool)
    for i, f in enumerate(features):
        t = torch.as_tensor(np.asarray(f, dtype=np.float32)) if isinstance(f, np.ndarray) else f
        tokens[i, : t.shape[0]] = t.float()
        mask[i, : t.shape[0]] = True
    return tokens, mask


def cache_pairs(
    model: MultimodalModel,
    cache_root: str | Path,
    pairs: Sequence[Pair],
    *,
    batch_size: int = 16,
    chunk: int = 2000,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[SkipReport, dict[str, dict[str, float]]]:
    """Cache the media and caption features of ``pairs``.

    Media are encoded in chunks of ``chunk`` items in the pairs' order (each
    chunk sorted by length inside), so an interrupted run keeps whole
    chunks and a prefix of a shuffled manifest is usable early.

    Returns:
        the skip report and per-modality timing (see :func:`build_features`).
    """
    skipped = SkipReport()
    timing: dict[str, dict[str, float]] = {}
    texts = sorted({p.text for p in pairs})
    text_cache = FeatureCache.for_model(cache_root, model, "text")
    rep, timing["text"] = build_features(
        model,
        text_cache,
        text_feature_items(texts),
        batch_size=64,
        device=device,
        progress=progress,
    )
    skipped.extend(rep)
    for modality in sorted({p.modality for p in pairs}):
        cache = FeatureCache.for_model(cache_root, model, modality)
        items, rep = pair_feature_items([p for p in pairs if p.modality == modality])
        skipped.extend(rep)
        total = {"items": 0, "seconds": 0.0}
        left = len({job.id for job in items if job.id not in cache})
        with feature_bar(modality, left, progress) as bar:
            for start in range(0, len(items), chunk):
                rep, t = build_features(
                    model,
                    cache,
                    items[start : start + chunk],
                    batch_size=batch_size,
                    device=device,
                    bar=bar,
                )
                skipped.extend(rep)
                total["items"] += t["items"]
                total["seconds"] += t["seconds"]
        total["seconds_per_item"] = total["seconds"] / total["items"] if total["items"] else 0.0
        timing[modality] = total
    return skipped, timing


def frame_agreement(a: FeatureCache, b: FeatureCache, items: Sequence[str]) -> dict[str, float]:
    """How close two caches' tokens are for the same items (e.g. full vs trimmed window).

    Returns the mean and minimum over items of the mean per-frame cosine
    similarity, and the share of items with the same number of frames.
    """
    cosines: list[float] = []
    same_length = 0
    for item in items:
        x = a.get(item).astype(np.float32)
        y = b.get(item).astype(np.float32)
        same_length += int(x.shape == y.shape)
        n = min(x.shape[0], y.shape[0])
        num = (x[:n] * y[:n]).sum(1)
        den = np.linalg.norm(x[:n], axis=1) * np.linalg.norm(y[:n], axis=1) + 1e-12
        cosines.append(float(np.mean(num / den)))
    return {
        "items": len(cosines),
        "mean_frame_cosine": float(np.mean(cosines)) if cosines else float("nan"),
        "min_item_cosine": float(np.min(cosines)) if cosines else float("nan"),
        "same_length_share": same_length / max(1, len(cosines)),
    }

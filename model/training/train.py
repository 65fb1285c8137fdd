"""Phase-1 alignment training on cached frozen-encoder features.

The encoders are frozen, so their outputs are cached once (:mod:`model.training.features`)
and each epoch runs only the trainable part: adapters, resampler, heads and
temperature (or the mean-pool baseline of :mod:`model.training.baseline`).

- loss: ``clip_weight * clip_loss(512-d) + mrl_weight * MatryoshkaLoss(mrl_dims)``
  between each media item and its caption, with the learnable temperature;
- AdamW over ``model.trainable_parameters()`` only, linear warm-up then cosine
  decay, gradient clipping, bfloat16 autocast on CUDA;
- batches never hold two pairs of the same caption group (two clips of one
  sentence would be each other's false negatives);
- augmentation on cached features: time masks, frame dropout, channel masks
  and Gaussian noise on media tokens, token dropout on captions;
- periodic evaluation on a validation set, best checkpoint kept (by mean R@1
  of both directions at 512 dims), last checkpoint with optimizer state for
  ``--resume``; everything seeded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.constants import MATRYOSHKA_DIMS
from model.training.data import Pair, PairSet, SkipReport, read_dataset
from model.training.evaluate import retrieval_report
from model.training.features import FeatureCache, cache_pairs, collate, item_id, text_item_id
from model.training.losses import MatryoshkaLoss, clip_loss

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved with every checkpoint)."""

    train: list[str]
    val: list[str] = field(default_factory=list)
    out: str = "runs/train"
    cache_dir: str = "data/features"
    # model
    preset: str = "tiny"
    encoders: dict[str, str] = field(default_factory=dict)
    modalities: list[str] | None = None
    audio_window: str | None = None
    perceiver_dim: int | None = None
    perceiver_depth: int | None = None
    num_latents: int | None = None
    perceiver_ff_mult: int | None = None
    adapter_mult: int | None = None
    audio_frame_pool: int | None = None
    dropout: float | None = None
    llm_dim: int | None = None
    random_init_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: bool = False
    # optimisation
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    clip_weight: float = 1.0
    mrl_weight: float = 1.0
    mrl_dims: list[int] = field(default_factory=lambda: list(MATRYOSHKA_DIMS))
    # augmentation on cached features
    time_masks: int = 2
    time_mask_frac: float = 0.08
    frame_drop: float = 0.1
    channel_mask: float = 0.1
    feature_noise: float = 0.05
    text_token_drop: float = 0.1
    # bookkeeping
    limit_train: int | None = None
    max_minutes: float | None = None
    eval_every: int = 0
    seed: int = 0
    resume: str | None = None
    device: str = "auto"
    progress: bool = True
    feature_batch_size: int = 16
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_config(cfg: TrainConfig) -> Any:
    """The :class:`ModelConfig` a training config describes (preset plus overrides)."""
    from model.config import preset

    config = preset(cfg.preset, encoders=cfg.encoders or None, modalities=cfg.modalities)
    if cfg.audio_window and "audio" in config.encoders:
        audio = dataclasses.replace(config.encoders["audio"], audio_window=cfg.audio_window)
        config = dataclasses.replace(config, encoders={**config.encoders, "audio": audio})
    for modality, extra in cfg.random_init_overrides.items():
        enc = config.encoders[modality]
        if enc.random_init is None:
            raise ValueError(
                f"{modality} encoder loads {enc.source}; only random encoders take init overrides"
            )
        enc = dataclasses.replace(enc, random_init={**enc.random_init, **extra})
        config = dataclasses.replace(config, encoders={**config.encoders, modality: enc})
    perceiver = {
        k: v
        for k, v in {
            "dim": cfg.perceiver_dim,
            "depth": cfg.perceiver_depth,
            "num_latents": cfg.num_latents,
            "ff_mult": cfg.perceiver_ff_mult,
        }.items()
        if v is not None
    }
    if perceiver:
        config = dataclasses.replace(
            config, perceiver=dataclasses.replace(config.perceiver, **perceiver)
        )
    adapter = {
        k: v
        for k, v in {
            "hidden_mult": cfg.adapter_mult,
            "dropout": cfg.dropout,
            "audio_frame_pool": cfg.audio_frame_pool,
        }.items()
        if v is not None
    }
    if adapter:
        config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, **adapter))
    if cfg.llm_dim is not None:
        config = dataclasses.replace(
            config, head=dataclasses.replace(config.head, llm_dim=cfg.llm_dim)
        )
    return config


# ---------------------------------------------------------------- cached pairs


@dataclass
class CachedPairs:
    """Pairs whose media and caption features are in the caches, as parallel lists."""

    pairs: list[Pair]
    media_ids: list[str]
    text_ids: list[str]
    groups: np.ndarray  # (N,) int64 caption group

    def __len__(self) -> int:
        return len(self.pairs)


def cached_pairs(
    pairs: Sequence[Pair], caches: dict[str, FeatureCache]
) -> tuple[CachedPairs, SkipReport]:
    """Keep the pairs whose features are cached; report the others (unreadable media)."""
    skipped = SkipReport()
    kept: list[Pair] = []
    media_ids: list[str] = []
    text_ids: list[str] = []
    for pair in pairs:
        try:
            mid = item_id(pair)
        except OSError:
            skipped.add(pair.origin, f"missing file {pair.path}")
            continue
        tid = text_item_id(pair.text)
        if mid not in caches[pair.modality]:
            skipped.add(pair.origin, "no cached features (media could not be encoded)")
            continue
        if tid not in caches["text"]:
            skipped.add(pair.origin, "no cached caption features")
            continue
        kept.append(pair)
        media_ids.append(mid)
        text_ids.append(tid)
    index: dict[str, int] = {}
    groups = np.array([index.setdefault(p.group, len(index)) for p in kept], dtype=np.int64)
    return CachedPairs(kept, media_ids, text_ids, groups), skipped


def unique_group_batches(
    groups: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """A shuffled epoch of index batches, none holding two items of one group.

    An item whose group is already in the batch being filled waits for the
    next batch. The last batch may be smaller; batches of one item are dropped.
    """
    pending = rng.permutation(len(groups)).tolist()
    batches: list[np.ndarray] = []
    while pending:
        batch: list[int] = []
        seen: set[int] = set()
        rest: list[int] = []
        for pos, idx in enumerate(pending):
            if len(batch) == batch_size:
                rest.extend(pending[pos:])
                break
            g = int(groups[idx])
            if g in seen:
                rest.append(idx)
            else:
                seen.add(g)
                batch.append(idx)
        if len(batch) > 1:
            batches.append(np.array(batch))
        elif len(rest) == len(pending):
            break
        pending = rest
    return batches


# ---------------------------------------------------------------- augmentation


def augment_tokens(
    tokens: np.ndarray, cfg: TrainConfig, rng: np.random.Generator, *, text: bool = False
) -> torch.Tensor:
    """Augmented copy of one item's cached tokens (T, D) -> (T', D) float32 tensor.

    Media: ``time_masks`` spans of up to ``time_mask_frac`` of T removed,
    ``frame_drop`` of the rest removed, ``channel_mask`` of channels zeroed,
    Gaussian noise of ``feature_noise`` times each channel's std added.
    Text: ``text_token_drop`` of the tokens removed. At least one token stays.
    """
    x = np.asarray(tokens, dtype=np.float32)
    n = x.shape[0]
    keep = np.ones(n, dtype=bool)
    if text:
        if cfg.text_token_drop > 0 and n > 2:
            keep = rng.random(n) >= cfg.text_token_drop
    else:
        width = int(cfg.time_mask_frac * n)
        for _ in range(cfg.time_masks if width > 0 else 0):
            w = int(rng.integers(1, width + 1))
            s = int(rng.integers(0, n - w + 1))
            keep[s : s + w] = False
        if cfg.frame_drop > 0:
            keep &= rng.random(n) >= cfg.frame_drop
    if not keep.any():
        keep[int(rng.integers(0, n))] = True
    x = x[keep]
    if not text:
        if cfg.channel_mask > 0:
            x = x * (rng.random(x.shape[1]) >= cfg.channel_mask).astype(np.float32)
        if cfg.feature_noise > 0:
            std = x.std(axis=0, keepdims=True) + 1e-6
            x = x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * std * cfg.feature_noise
    return torch.from_numpy(np.ascontiguousarray(x))


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def embed_cached(
    model: Any,
    modality: str,
    cache: FeatureCache,
    ids: Sequence[str],
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings (N, 512) float32 of cached items, in eval mode, batched by length."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: cache.length(ids[i]))
    out = np.zeros((len(ids), 512), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tokens, mask = collate([cache.get(ids[i]) for i in chunk])
        with _autocast(device):
            emb = model.forward_features(
                modality, tokens.to(device), mask.to(device), with_llm_tokens=False
            ).embedding
        out[chunk] = emb.float().cpu().numpy()
    model.training.train(was_training)
    return out


def evaluate_cached(
    model: Any, data: CachedPairs, caches: dict[str, FeatureCache], device: torch.device
) -> dict[str, dict[str, dict[str, float]]]:
    """Retrieval report of every media modality against the captions of ``data``."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for modality in sorted({p.modality for p in data.pairs}):
        rows = [i for i, p in enumerate(data.pairs) if p.modality == modality]
        media = embed_cached(
            model, modality, caches[modality], [data.media_ids[i] for i in rows], device
        )
        first: dict[int, int] = {}
        for i in rows:
            first.setdefault(int(data.groups[i]), i)
        text_rows = list(first.values())
        texts = embed_cached(
            model, "text", caches["text"], [data.text_ids[i] for i in text_rows], device
        )
        results.update(
            retrieval_report(
                media,
                texts,
                data.groups[rows],
                data.groups[text_rows],
                media_name=modality,
            )
        )
    return results


def score(results: dict[str, dict[str, dict[str, float]]]) -> float:
    """Model-selection score: mean R@1 at 512 dims over every direction."""
    values = [by_dim["512"]["R@1"] for by_dim in results.values() if "512" in by_dim]
    return float(np.mean(values)) if values else 0.0


# ---------------------------------------------------------------- training


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_loss(
    model: Any,
    data: CachedPairs,
    caches: dict[str, FeatureCache],
    batch: np.ndarray,
    cfg: TrainConfig,
    mrl: MatryoshkaLoss | None,
    rng: np.random.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Loss of one batch of pair indices, summed over media modalities by share."""
    text_feats = [
        augment_tokens(caches["text"].get(data.text_ids[i]), cfg, rng, text=True) for i in batch
    ]
    t_tokens, t_mask = collate(text_feats)
    # The loss uses only the embeddings: skip the LLM projector's (B, N, llm_dim) output.
    text_emb = model.forward_features(
        "text", t_tokens.to(device), t_mask.to(device), with_llm_tokens=False
    ).embedding
    logit_scale = model.temperature()
    total = text_emb.new_zeros(())
    modalities = [data.pairs[i].modality for i in batch]
    for modality in sorted(set(modalities)):
        rows = [k for k, m in enumerate(modalities) if m == modality]
        if len(rows) < 2:
            continue
        feats = [
            augment_tokens(caches[modality].get(data.media_ids[batch[k]]), cfg, rng) for k in rows
        ]
        tokens, mask = collate(feats)
        media_emb = model.forward_features(
            modality, tokens.to(device), mask.to(device), with_llm_tokens=False
        ).embedding
        t = text_emb[rows]
        loss = cfg.clip_weight * clip_loss(media_emb, t, logit_scale)
        if mrl is not None and cfg.mrl_weight > 0:
            loss = loss + cfg.mrl_weight * mrl(media_emb, t, logit_scale)
        total = total + loss * (len(rows) / len(batch))
    return total


def _load_split(specs: Sequence[str], limit: int | None = None) -> PairSet:
    merged = PairSet([])
    for spec in specs:
        part = read_dataset(spec)
        merged.pairs.extend(part.pairs)
        merged.skipped.extend(part.skipped)
    if limit is not None:
        merged.pairs = merged.pairs[:limit]
    return merged


def build_trainable(cfg: TrainConfig, encoder_model: Any) -> Any:
    """The module that trains: the full model itself, or a mean-pool baseline over its encoders."""
    if not cfg.baseline:
        return encoder_model
    from model.training.baseline import MeanPoolBaseline

    config = encoder_model.config
    return MeanPoolBaseline(
        hidden_sizes={m: e.hidden_size for m, e in config.encoders.items()},
        encoder_config={m: dataclasses.asdict(e) for m, e in config.encoders.items()},
        init_temperature=config.init_temperature,
        min_temperature=config.min_temperature,
    )


def save(model: Any, directory: Path, metadata: dict[str, Any]) -> None:
    if hasattr(model, "save"):
        model.save(directory, metadata)
    else:
        from model.checkpoint import save_checkpoint

        save_checkpoint(model, directory, metadata)


def _resume_model(cfg: TrainConfig) -> Any:
    path = Path(cfg.resume)
    if cfg.baseline:
        from model.training.baseline import MeanPoolBaseline

        return MeanPoolBaseline.load(path)
    from model.checkpoint import load_model

    return load_model(path, encoder_overrides=cfg.encoders or None)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training; returns ``{"best": metrics, "best_step": int, "steps": int, ...}``."""
    from tqdm.auto import tqdm

    from model.multimodal import MultimodalModel

    seed_everything(cfg.seed)
    if cfg.threads:
        # On a shared, oversubscribed CPU one thread avoids OpenMP barrier stalls.
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    if cfg.resume and not cfg.baseline:
        encoder_model = _resume_model(cfg)
    else:
        encoder_model = MultimodalModel(model_config(cfg))
    encoder_model.to(device)

    train_set = _load_split(cfg.train, cfg.limit_train)
    val_set = _load_split(cfg.val)
    if not train_set.pairs:
        raise ValueError(f"no usable training pairs in {cfg.train}: {train_set.skipped.summary()}")
    t0 = time.perf_counter()
    rep, feature_timing = cache_pairs(
        encoder_model,
        cfg.cache_dir,
        train_set.pairs + val_set.pairs,
        batch_size=cfg.feature_batch_size,
        device=device,
        progress=cfg.progress,
    )
    feature_seconds = time.perf_counter() - t0
    caches = {
        m: FeatureCache.for_model(cfg.cache_dir, encoder_model, m)
        for m in encoder_model.config.modalities
    }
    train_data, rep_train = cached_pairs(train_set.pairs, caches)
    val_data, rep_val = cached_pairs(val_set.pairs, caches)
    for report in (train_set.skipped, val_set.skipped, rep, rep_train, rep_val):
        if report.count:
            log.warning("%s", report.summary())
    log.info("training on %d pairs, validating on %d", len(train_data), len(val_data))

    model = (
        _resume_model(cfg) if cfg.resume and cfg.baseline else build_trainable(cfg, encoder_model)
    )
    model.to(device).train()
    params = model.trainable_parameters()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(
        unique_group_batches(train_data.groups, cfg.batch_size, np.random.default_rng(0))
    )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(
            s, warmup=cfg.warmup_steps, total=total_steps, min_ratio=cfg.min_lr_ratio
        ),
    )
    mrl = MatryoshkaLoss(dims=cfg.mrl_dims) if cfg.mrl_weight > 0 else None
    step, epoch, best_score, best_metrics, best_step = 0, 0, -1.0, {}, 0
    if cfg.resume:
        state_path = Path(cfg.resume) / TRAINER_STATE
        if state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, epoch = state["step"], state["epoch"]
            best_score, best_step = state["best_score"], state["best_step"]
            best_metrics = state.get("best_metrics", {})
            rng = np.random.default_rng(cfg.seed + 1000 * epoch)
            log.info("resumed from %s at step %d (epoch %d)", cfg.resume, step, epoch)

    history = out / "metrics.jsonl"
    trainable = sum(p.numel() for p in params)
    log.info(
        "%d trainable parameters; %d steps (%d per epoch)", trainable, total_steps, steps_per_epoch
    )

    def evaluate_and_save(reason: str) -> None:
        nonlocal best_score, best_metrics, best_step
        meta = {"trained": True, "step": step, "epoch": epoch, "train_config": cfg.to_dict()}
        if len(val_data):
            metrics = evaluate_cached(model, val_data, caches, device)
            current = score(metrics)
            with history.open("a") as fh:
                fh.write(
                    json.dumps({"step": step, "epoch": epoch, "val": metrics, "score": current})
                    + "\n"
                )
            log.info("step %d (%s): val score %.4f (best %.4f)", step, reason, current, best_score)
            if current > best_score:
                best_score, best_metrics, best_step = current, metrics, step
                save(model, out / "best", {**meta, "val_metrics": metrics, "val_score": current})
        save(model, out / "last", meta)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "best_score": best_score,
                "best_step": best_step,
                "best_metrics": best_metrics,
            },
            out / "last" / TRAINER_STATE,
        )

    train_start = time.perf_counter()
    epoch_times: list[float] = []

    def out_of_time() -> bool:
        if cfg.max_minutes is None:
            return False
        return time.perf_counter() - train_start > 60.0 * cfg.max_minutes

    while step < total_steps and not out_of_time():
        batches = unique_group_batches(train_data.groups, cfg.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", disable=not cfg.progress)
        epoch_start = time.perf_counter()
        seen = 0
        for batch in bar:
            if step >= total_steps or out_of_time():
                break
            with _autocast(device):
                loss = batch_loss(model, train_data, caches, batch, cfg, mrl, rng, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(batch)
            rate = seen / max(1e-9, time.perf_counter() - epoch_start)
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                samples_s=f"{rate:.0f}",
                lr=f"{scheduler.get_last_lr()[0]:.1e}",
                temp=f"{1.0 / model.temperature().item():.3f}",
            )
            if step % 20 == 0:
                with history.open("a") as fh:
                    fh.write(
                        json.dumps({"step": step, "loss": loss.item(), "samples_per_s": rate})
                        + "\n"
                    )
            if cfg.eval_every and step % cfg.eval_every == 0:
                evaluate_and_save(f"every {cfg.eval_every} steps")
        bar.close()
        epoch += 1
        epoch_times.append(time.perf_counter() - epoch_start)
        log.info("epoch %d: %.1f s, %.1f samples/s", epoch, epoch_times[-1], seen / epoch_times[-1])
        if not (cfg.eval_every and step % cfg.eval_every == 0):
            evaluate_and_save("end of epoch")
    if not len(val_data) and not (out / "best").exists():
        save(model, out / "best", {"trained": True, "step": step, "train_config": cfg.to_dict()})
    summary = {
        "best_step": best_step,
        "best_val_score": best_score,
        "best_val": best_metrics,
        "steps": step,
        "epochs": epoch,
        "train_pairs": len(train_data),
        "val_pairs": len(val_data),
        "trainable_parameters": trainable,
        "device": str(device),
        "feature_seconds": round(feature_seconds, 1),
        "feature_timing": feature_timing,
        "train_seconds": round(time.perf_counter() - train_start, 1),
        "stopped_by_time_limit": step < total_steps,
        "epoch_seconds": [round(t, 1) for t in epoch_times],
        "checkpoint": str(out / "best"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

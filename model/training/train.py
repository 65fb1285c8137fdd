"""Phase-1 alignment training on cached frozen-encoder features.

The encoders are frozen, so their outputs are cached once (:mod:`model.training.features`)
and each epoch runs only the trainable part: adapters, resampler, heads and
temperature (or the mean-pool baseline of :mod:`model.training.baseline`).

- loss: ``clip_weight * clip_loss(512-d) + mrl_weight * MatryoshkaLoss(mrl_dims)``
  between each media item and its caption, with the learnable temperature,
  plus optionally ``distill_weight`` (text) and ``distill_audio_weight`` (media)
  times :func:`~model.training.losses.similarity_distillation` against MiniLM's
  own mean-pooled sentence embedding, and ``neighbour_distill_weight`` times the similarity
  distillation on an extra text batch of nearest neighbours
  (:mod:`model.training.neighbours`), so text keeps the text encoder's
  neighbourhoods;
- AdamW over ``model.trainable_parameters()`` only, linear warm-up then cosine
  decay, gradient clipping, bfloat16 autocast on CUDA;
- batches never hold two pairs of the same caption group (two clips of one
  sentence would be each other's false negatives);
- augmentation on cached features (:mod:`model.training.augment`);
- periodic evaluation on a validation set, best checkpoint kept (by mean R@1
  of both directions at 512 dims), last checkpoint with optimizer state for
  ``--resume``; everything seeded.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.matryoshka import truncate
from model.multimodal import MultimodalModel
from model.tokens import masked_mean
from model.training.augment import augment_tokens
from model.training.bag_of_words import BagOfWords
from model.training.evaluate import evaluate_cached, score
from model.training.features import FeatureCache, cache_pairs, collate, mean_tokens
from model.training.losses import MatryoshkaLoss, clip_loss, similarity_distillation
from model.training.neighbours import NeighbourBatches
from model.training.pairs import CachedPairs, cached_pairs, load_split, unique_group_batches
from model.training.recipe import TrainConfig
from model.training.runtime import autocast, resolve_device, seed_everything
from model.training.trainable import AlignmentModel, build_model, build_trainable, save_model

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"
LOG_EVERY = 20  # steps between loss lines in metrics.jsonl


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_loss(
    model: AlignmentModel,
    data: CachedPairs,
    caches: dict[str, FeatureCache],
    batch: np.ndarray,
    cfg: TrainConfig,
    mrl: MatryoshkaLoss | None,
    rng: np.random.Generator,
    device: torch.device,
    neighbours: NeighbourBatches | None = None,
    bag: BagOfWords | None = None,
) -> torch.Tensor:
    """Loss of one batch of pair indices, summed over media modalities by share.

    ``neighbours`` draws the extra text batch of ``optim.neighbour_distill_weight``;
    ``bag`` is the head of ``optim.bag_of_words_weight``.
    A locked text tower gets its text unaugmented: its embeddings are the targets,
    and serving computes them from the whole text.
    """
    cache = caches["text"]
    if model.text_locked:
        text_feats = [
            torch.from_numpy(np.array(cache.get(data.text_ids[i]), np.float32)) for i in batch
        ]
    else:
        text_feats = [
            augment_tokens(cache.get(data.text_ids[i]), cfg.augment, rng, text=True) for i in batch
        ]
    t_tokens, t_mask = collate(text_feats)
    # The loss uses only the embeddings: skip the LLM projector's (B, N, llm_dim) output.
    text_emb = model.forward_features(
        "text", t_tokens.to(device), t_mask.to(device), with_llm_tokens=False
    ).embedding
    logit_scale = model.temperature()
    total = text_emb.new_zeros(())
    optim = cfg.optim
    teacher = None
    if optim.distill_weight > 0 or optim.distill_audio_weight > 0:
        clean, clean_mask = collate([caches["text"].get(data.text_ids[i]) for i in batch])
        teacher = masked_mean(clean.float(), clean_mask).to(device)  # (B, D_text)
    if optim.distill_weight > 0:
        total = total + optim.distill_weight * distill_loss(text_emb, teacher, cfg)
    if optim.neighbour_distill_weight > 0:
        if neighbours is None:
            raise ValueError("optim.neighbour_distill_weight needs the neighbour batches")
        total = total + optim.neighbour_distill_weight * neighbour_distill_loss(
            model, caches["text"], neighbours, cfg, device
        )
    modalities = [data.pairs[i].modality for i in batch]
    for modality in sorted(set(modalities)):
        rows = [k for k, m in enumerate(modalities) if m == modality]
        if len(rows) < 2:
            continue
        feats = [
            augment_tokens(caches[modality].get(data.media_ids[batch[k]]), cfg.augment, rng)
            for k in rows
        ]
        tokens, mask = collate(feats)
        media_out = model.forward_features(
            modality, tokens.to(device), mask.to(device), with_llm_tokens=False
        )
        media_emb = media_out.embedding
        t = text_emb[rows]
        loss = cfg.optim.clip_weight * clip_loss(media_emb, t, logit_scale)
        if mrl is not None and cfg.optim.mrl_weight > 0:
            loss = loss + cfg.optim.mrl_weight * mrl(media_emb, t, logit_scale)
        if optim.distill_audio_weight > 0:
            audio_distill = distill_loss(media_emb, teacher[rows], cfg)
            loss = loss + optim.distill_audio_weight * audio_distill
        if bag is not None and media_out.latents is not None:
            texts = [data.pairs[batch[k]].text for k in rows]
            loss = loss + optim.bag_of_words_weight * bag.loss(media_out.latents, texts)
        total = total + loss * (len(rows) / len(batch))
    return total


def distill_loss(emb: torch.Tensor, teacher: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """:func:`similarity_distillation` averaged over the prefixes ``optim.distill_dims``."""
    losses = [
        similarity_distillation(truncate(emb, d), teacher, cfg.optim.distill_temperature)
        for d in cfg.optim.distill_dims
    ]
    return torch.stack(losses).mean()


def neighbour_distill_loss(
    model: AlignmentModel,
    cache: FeatureCache,
    neighbours: NeighbourBatches,
    cfg: TrainConfig,
    device: torch.device,
) -> torch.Tensor:
    """:func:`distill_loss` on a text-only batch of seed sentences and their teacher
    neighbours (:class:`~model.training.neighbours.NeighbourBatches`), unaugmented."""
    rows = neighbours.sample(cfg.optim.neighbour_seeds)
    tokens, mask = collate([cache.get(neighbours.ids[r]) for r in rows])
    emb = model.forward_features(
        "text", tokens.to(device), mask.to(device), with_llm_tokens=False
    ).embedding
    teacher = torch.from_numpy(neighbours.teacher[rows]).to(device)
    return distill_loss(emb, teacher, cfg)


def check_locked_text(model: AlignmentModel, cfg: TrainConfig) -> None:
    """Refuse text-only loss terms when the text tower is locked: they would train nothing."""
    if not model.text_locked:
        return
    terms = {
        "optim.distill_weight": cfg.optim.distill_weight,
        "optim.neighbour_distill_weight": cfg.optim.neighbour_distill_weight,
    }
    on = [f"{name} = {value}" for name, value in terms.items() if value > 0]
    if on:
        raise ValueError(
            f'the text tower is locked (text_tower = "locked"), so {" and ".join(on)} '
            "would train nothing; set them to 0 (optim.distill_audio_weight still applies)"
        )


def fit_locked_text(model: MultimodalModel, data: CachedPairs, cache: FeatureCache) -> int:
    """Fit a locked text tower's rotation to the training sentences; returns how many."""
    sentences = list(dict.fromkeys(data.text_ids))
    assert model.text_tower is not None
    model.text_tower.fit(mean_tokens(cache, sentences))
    return len(sentences)


def fit_neighbours(
    data: CachedPairs, cache: FeatureCache, k: int, seed: int = 0
) -> NeighbourBatches:
    """The neighbour batches of a run's training sentences under the text encoder."""
    sentences = list(dict.fromkeys(data.text_ids))
    return NeighbourBatches(sentences, mean_tokens(cache, sentences), k, seed)


@dataclass
class Progress:
    """Where a run stands; saved with the last checkpoint so ``--resume`` continues from it."""

    step: int = 0
    epoch: int = 0
    best_score: float = -1.0
    best_step: int = 0
    best_metrics: dict[str, Any] | None = None


@dataclass
class Prepared:
    """The cached features and pairs a run trains and validates on."""

    caches: dict[str, FeatureCache]
    train: CachedPairs
    val: CachedPairs
    feature_seconds: float
    feature_timing: dict[str, dict[str, float]]


def prepare_data(
    cfg: TrainConfig, encoder_model: MultimodalModel, device: torch.device
) -> Prepared:
    """Read the datasets, cache the features of every pair, keep the pairs with features."""
    train_set = load_split(cfg.data.train, cfg.data.limit_train)
    val_set = load_split(cfg.data.val)
    if not train_set.pairs:
        raise ValueError(
            f"no usable training pairs in {cfg.data.train}: {train_set.skipped.summary()}"
        )
    t0 = time.perf_counter()
    rep, feature_timing = cache_pairs(
        encoder_model,
        cfg.data.cache_dir,
        train_set.pairs + val_set.pairs,
        batch_size=cfg.data.feature_batch_size,
        device=device,
        progress=cfg.run.progress,
    )
    feature_seconds = time.perf_counter() - t0
    caches = {
        m: FeatureCache.for_model(cfg.data.cache_dir, encoder_model, m)
        for m in encoder_model.config.modalities
    }
    train_data, rep_train = cached_pairs(train_set.pairs, caches)
    val_data, rep_val = cached_pairs(val_set.pairs, caches)
    for report in (train_set.skipped, val_set.skipped, rep, rep_train, rep_val):
        if report.count:
            log.warning("%s", report.summary())
    log.info("training on %d pairs, validating on %d", len(train_data), len(val_data))
    return Prepared(caches, train_data, val_data, feature_seconds, feature_timing)


class Trainer:
    """One training run: the model, its optimiser and schedule, and the run's progress.

    ``Trainer(cfg).fit()`` trains and returns the summary that ``summary.json``
    holds; :func:`train` does just that.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        seed_everything(cfg.run.seed)
        if cfg.run.torch_threads:
            # On a shared, oversubscribed CPU one thread avoids OpenMP barrier stalls.
            torch.set_num_threads(cfg.run.torch_threads)
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device)
        self.out = Path(cfg.run.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        resume = cfg.run.resume
        encoder_model = build_model(cfg.model, start=None if cfg.model.baseline else resume)
        encoder_model.to(self.device)
        if encoder_model.config.blend is not None:
            raise ValueError(
                f"{cfg.model.checkpoint or resume} is a blend: it is composed from two trained "
                "models (model/training/compose.py), not trained itself; start from one of them"
            )
        if not cfg.model.baseline:
            check_locked_text(encoder_model, cfg)
        self.data = prepare_data(cfg, encoder_model, self.device)
        self.model = build_trainable(cfg.model, encoder_model, resume=resume)
        if self.model.text_locked and not resume and cfg.model.checkpoint is None:
            count = fit_locked_text(encoder_model, self.data.train, self.data.caches["text"])
            log.info("locked text tower: principal axes of %d training sentences", count)
        self.model.to(self.device).train()
        self.params = self.model.trainable_parameters()
        self.bag = None
        if cfg.optim.bag_of_words_weight > 0:
            if not isinstance(self.model, MultimodalModel):
                raise ValueError("optim.bag_of_words_weight needs the resampler model's latents")
            self.bag = BagOfWords(
                self.model.config.perceiver.dim, encoder_model.encoder("text").tokenizer
            )
            self.bag.head.to(self.device).train()
            self.params = self.params + list(self.bag.head.parameters())
        self._build_optimiser()
        self.mrl = MatryoshkaLoss(dims=cfg.optim.mrl_dims) if cfg.optim.mrl_weight > 0 else None
        self.neighbours = None
        if cfg.optim.neighbour_distill_weight > 0:
            self.neighbours = fit_neighbours(
                self.data.train, self.data.caches["text"], cfg.optim.neighbour_k, cfg.run.seed
            )
        self.progress = Progress()
        self.rng = np.random.default_rng(cfg.run.seed)
        if resume:
            self._load_state(Path(resume) / TRAINER_STATE)
        self.history = self.out / "metrics.jsonl"
        self.epoch_times: list[float] = []
        log.info(
            "%d trainable parameters; %d steps (%d per epoch)",
            self.trainable_count,
            self.total_steps,
            self.steps_per_epoch,
        )

    @property
    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.params)

    def _build_optimiser(self) -> None:
        optim = self.cfg.optim
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=optim.lr,
        )
        self.steps_per_epoch = len(
            unique_group_batches(self.data.train.groups, optim.batch_size, np.random.default_rng(0))
        )
        self.total_steps = optim.max_steps or optim.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_lambda(
                s, warmup=optim.warmup_steps, total=self.total_steps, min_ratio=optim.min_lr_ratio
            ),
        )

    def _load_state(self, path: Path) -> None:
        if not path.is_file():
            return
        state = torch.load(path, map_location="cpu", weights_only=False)
        if self.bag is not None and "bag_of_words" not in state:
            # the run being resumed had no bag-of-words term: its head starts fresh, and so
            # does the optimiser (its saved state has no slots for the head)
            log.info("resuming a run without the bag-of-words term: its head and AdamW start new")
        else:
            if self.bag is not None:
                self.bag.head.load_state_dict(state["bag_of_words"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(
            step=state["step"],
            epoch=state["epoch"],
            best_score=state["best_score"],
            best_step=state["best_step"],
            best_metrics=state.get("best_metrics", {}),
        )
        self.rng = np.random.default_rng(self.cfg.run.seed + 1000 * self.progress.epoch)
        log.info(
            "resumed from %s at step %d (epoch %d)", path.parent, state["step"], state["epoch"]
        )

    def _log(self, record: dict[str, Any]) -> None:
        with self.history.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def evaluate_and_save(self, reason: str) -> None:
        """Validate (keeping the best checkpoint so far), then save the last one and its state."""
        p = self.progress
        meta = {
            "trained": True,
            "step": p.step,
            "epoch": p.epoch,
            "train_config": self.cfg.to_dict(),
        }
        if len(self.data.val):
            metrics = evaluate_cached(self.model, self.data.val, self.data.caches, self.device)
            current = score(metrics)
            self._log({"step": p.step, "epoch": p.epoch, "val": metrics, "score": current})
            log.info(
                "step %d (%s): val score %.4f (best %.4f)", p.step, reason, current, p.best_score
            )
            if current > p.best_score:
                p.best_score, p.best_metrics, p.best_step = current, metrics, p.step
                best_meta = {**meta, "val_metrics": metrics, "val_score": current}
                save_model(self.model, self.out / "best", best_meta)
        save_model(self.model, self.out / "last", meta)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": p.step,
                "epoch": p.epoch,
                "best_score": p.best_score,
                "best_step": p.best_step,
                "best_metrics": p.best_metrics or {},
                **({"bag_of_words": self.bag.head.state_dict()} if self.bag is not None else {}),
            },
            self.out / "last" / TRAINER_STATE,
        )

    def step(self, batch: np.ndarray) -> float:
        """One optimiser step on one batch of pair indices; returns the loss."""
        with autocast(self.device):
            loss = batch_loss(
                self.model,
                self.data.train,
                self.data.caches,
                batch,
                self.cfg,
                self.mrl,
                self.rng,
                self.device,
                self.neighbours,
                self.bag,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.progress.step += 1
        return loss.item()

    def _eval_due(self) -> bool:
        every = self.cfg.run.eval_every
        return bool(every) and self.progress.step % every == 0

    def run_epoch(self, out_of_time: Callable[[], bool]) -> None:
        """Train one epoch (or until the step or time limit), then validate and save."""
        from tqdm.auto import tqdm

        p = self.progress
        batches = unique_group_batches(self.data.train.groups, self.cfg.optim.batch_size, self.rng)
        bar = tqdm(
            batches, desc=f"epoch {p.epoch + 1}", unit="batch", disable=not self.cfg.run.progress
        )
        epoch_start = time.perf_counter()
        seen = 0
        for batch in bar:
            if p.step >= self.total_steps or out_of_time():
                break
            loss = self.step(batch)
            seen += len(batch)
            rate = seen / max(1e-9, time.perf_counter() - epoch_start)
            bar.set_postfix(
                loss=f"{loss:.3f}",
                samples_s=f"{rate:.0f}",
                lr=f"{self.scheduler.get_last_lr()[0]:.1e}",
                temp=f"{1.0 / self.model.temperature().item():.3f}",
            )
            if p.step % LOG_EVERY == 0:
                self._log({"step": p.step, "loss": loss, "samples_per_s": rate})
            if self._eval_due():
                self.evaluate_and_save(f"every {self.cfg.run.eval_every} steps")
        bar.close()
        p.epoch += 1
        self.epoch_times.append(time.perf_counter() - epoch_start)
        log.info(
            "epoch %d: %.1f s, %.1f samples/s",
            p.epoch,
            self.epoch_times[-1],
            seen / self.epoch_times[-1],
        )
        if not self._eval_due():
            self.evaluate_and_save("end of epoch")

    def fit(self) -> dict[str, Any]:
        """Train to the step or time limit; returns (and writes) the run's summary."""
        start = time.perf_counter()
        max_minutes = self.cfg.run.max_minutes

        def out_of_time() -> bool:
            return max_minutes is not None and time.perf_counter() - start > 60.0 * max_minutes

        while self.progress.step < self.total_steps and not out_of_time():
            self.run_epoch(out_of_time)
        p = self.progress
        if not len(self.data.val) and not (self.out / "best").exists():
            meta = {"trained": True, "step": p.step, "train_config": self.cfg.to_dict()}
            save_model(self.model, self.out / "best", meta)
        summary = {
            "best_step": p.best_step,
            "best_val_score": p.best_score,
            "best_val": p.best_metrics or {},
            "steps": p.step,
            "epochs": p.epoch,
            "train_pairs": len(self.data.train),
            "val_pairs": len(self.data.val),
            "trainable_parameters": self.trainable_count,
            "device": str(self.device),
            "feature_seconds": round(self.data.feature_seconds, 1),
            "feature_timing": self.data.feature_timing,
            "train_seconds": round(time.perf_counter() - start, 1),
            "stopped_by_time_limit": p.step < self.total_steps,
            "epoch_seconds": [round(t, 1) for t in self.epoch_times],
            "checkpoint": str(self.out / "best"),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training; returns ``{"best_val": metrics, "best_step": int, "steps": int, ...}``."""
    return Trainer(cfg).fit()

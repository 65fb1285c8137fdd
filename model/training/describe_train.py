"""Train the LLM projector (model/describer.py) on cached latents (describe_data.py).

Only the projector trains; the language model and every phase-1 weight are frozen.
The loss is the language model's next-token loss on the answer (the spoken sentence,
the caption), with the latents in place of the media. The run resumes from
``<runs>/state.pt`` (projector, optimiser, step, random state), evaluates the
validation loss every ``eval_every`` steps and exports the best projector.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from model.describer import Describer, DescriberConfig, PrefixProjector, save_projector
from model.runtime import cpu_has_bf16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DescribeTrainSpec:
    """Steps, batch and schedule of a projector run (a recipe's ``[describe]`` table)."""

    steps: int = 1200
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    eval_every: int = 100
    val_items: int = 128
    hidden: int = 1024
    max_answer_tokens: int = 40
    bf16: str = "auto"  # "auto": bfloat16 autocast where the CPU has native bfloat16
    seed: int = 0
    threads: int = 1

    def use_bf16(self) -> bool:
        if self.bf16 == "auto":
            return cpu_has_bf16()
        return self.bf16 in ("true", "yes", "on", "1")


def _lr_at(step: int, spec: DescribeTrainSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _clip_text(describer: Describer, text: str, limit: int) -> str:
    ids = describer.tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= limit else describer.tokenizer.decode(ids[:limit])


def validation_loss(
    describer: Describer, data: dict[str, Any], spec: DescribeTrainSpec, autocast: bool
) -> float:
    n = min(spec.val_items, len(data["texts"]))
    losses = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, n, spec.batch_size):
            j = min(n, i + spec.batch_size)
            texts = [_clip_text(describer, t, spec.max_answer_tokens) for t in data["texts"][i:j]]
            loss = describer.loss(data["latents"][i:j].float(), texts, data["modality"][i:j])
            losses.append(float(loss) * (j - i))
    return sum(losses) / n


def train_projector(
    describer: Describer,
    train: dict[str, Any],
    val: dict[str, Any],
    spec: DescribeTrainSpec,
    runs: str | Path,
    out: str | Path,
    *,
    progress: bool = True,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train ``describer.projector`` (in place) and export the best one to ``out``.

    Returns the run's log: validation losses by step, the best step, seconds per step.
    """
    from tqdm.auto import tqdm

    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    state_path = runs / "state.pt"
    projector = describer.projector
    projector.train()
    for p in projector.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(projector.parameters(), lr=spec.lr, weight_decay=0.01)
    history: dict[str, Any] = {"spec": asdict(spec), "val": {}, "best": None, "seconds": 0.0}
    step = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        projector.load_state_dict(state["projector"])
        optimiser.load_state_dict(state["optimiser"])
        step, history = state["step"], state["history"]
        log.info("resuming the projector run at step %d", step)
    autocast = spec.use_bf16()
    rng = random.Random(f"{spec.seed}:{step}")
    n = len(train["texts"])
    order = list(range(n))
    rng.shuffle(order)
    cursor = 0
    best = history["best"]["loss"] if history["best"] else float("inf")
    started = time.perf_counter()
    bar = tqdm(total=spec.steps, initial=step, desc="projector", unit="step", disable=not progress)

    def checkpoint() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "projector": projector.state_dict(),
                "optimiser": optimiser.state_dict(),
                "step": step,
                "history": history,
            },
            tmp,
        )
        tmp.replace(state_path)

    if step == 0:
        loss0 = validation_loss(describer, val, spec, autocast)
        history["val"]["0"] = round(loss0, 4)
    while step < spec.steps:
        if cursor + spec.batch_size > n:
            rng.shuffle(order)
            cursor = 0
        rows = order[cursor : cursor + spec.batch_size]
        cursor += spec.batch_size
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, spec)
        texts = [_clip_text(describer, train["texts"][i], spec.max_answer_tokens) for i in rows]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = describer.loss(
                train["latents"][rows].float(), texts, [train["modality"][i] for i in rows]
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        history["seconds"] += time.perf_counter() - t0
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % spec.eval_every == 0 or step == spec.steps:
            projector.eval()
            val_loss = validation_loss(describer, val, spec, autocast)
            projector.train()
            history["val"][str(step)] = round(val_loss, 4)
            if val_loss < best:
                best = val_loss
                history["best"] = {"step": step, "loss": round(val_loss, 4)}
                save_projector(out, projector, _with_history(describer.config, history))
            checkpoint()
            log.info("step %d: validation loss %.4f (best %.4f)", step, val_loss, best)
            if max_minutes is not None and time.perf_counter() - started > 60 * max_minutes:
                log.info("stopping after %.0f minutes; run again to resume", max_minutes)
                break
    bar.close()
    projector.eval()
    history["seconds_per_step"] = round(history["seconds"] / max(1, step), 3)
    history["steps_done"] = step
    (runs / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return history


def _with_history(config: DescriberConfig, history: dict[str, Any]) -> DescriberConfig:
    from dataclasses import replace

    return replace(config, trained={"best": history["best"], "spec": history["spec"]})


def new_describer(
    llm: torch.nn.Module,
    tokenizer,
    *,
    latent_dim: int,
    weights_digest: str,
    llm_name: str,
    hidden: int,
    seed: int = 0,
) -> Describer:
    """A describer with a fresh projector for ``llm`` (seeded)."""
    from model.llm import llm_fingerprint

    torch.manual_seed(seed)
    config = DescriberConfig(
        latent_dim=latent_dim,
        llm_dim=llm.get_input_embeddings().weight.shape[1],
        hidden=hidden,
        llm=llm_name,
        llm_fingerprint=llm_fingerprint(llm),
        weights_digest=weights_digest,
    )
    return Describer(PrefixProjector(config), config, llm, tokenizer)

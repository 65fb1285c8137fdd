"""Baseline without the resampler: mean-pooled encoder features through one linear layer.

Trained with the same loss on the same cached features and evaluated the same
way as the full model, so the Perceiver Resampler's worth is measured, not
assumed. It has the two methods the training loop needs,
``forward_features`` and ``trainable_parameters``, and a ``temperature``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from model.checkpoint import write_safetensors
from model.constants import EMBED_DIM
from model.heads import Temperature

BASELINE_FORMAT = "mmembed-meanpool-baseline"


@dataclass
class BaselineOutput:
    """embedding: (B, 512) unit rows."""

    embedding: torch.Tensor


class MeanPoolBaseline(nn.Module):
    """Per modality: masked mean over encoder tokens, then Linear(D_enc, 512), L2-normalised.

    Args:
        hidden_sizes: {modality: D_enc} of each encoder.
        encoder_config: the model config's encoder section (kept so the feature
            cache and the saved file name the encoders the baseline was trained on).
    """

    text_locked = False  # its text projection trains

    def __init__(
        self,
        *,
        hidden_sizes: dict[str, int],
        encoder_config: dict[str, Any] | None = None,
        init_temperature: float = 0.07,
        min_temperature: float = 0.01,
    ) -> None:
        super().__init__()
        self.hidden_sizes = dict(hidden_sizes)
        self.encoder_config = dict(encoder_config or {})
        self.proj = nn.ModuleDict({m: nn.Linear(d, EMBED_DIM) for m, d in hidden_sizes.items()})
        self.temperature = Temperature(init=init_temperature, min_temperature=min_temperature)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.proj)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward_features(
        self,
        modality: str,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        *,
        with_llm_tokens: bool = False,
    ) -> BaselineOutput:
        """tokens (B, T, D_enc), mask (B, T) bool -> embedding (B, 512).

        ``with_llm_tokens`` is accepted so training code can call both models one
        way; the baseline has no LLM projector and ignores it.
        """
        if modality not in self.proj:
            raise ValueError(f"baseline has no {modality} projection (has {self.modalities})")
        param = self.proj[modality].weight
        tokens = tokens.to(param.device, param.dtype)
        m = mask.to(param.device, param.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D_enc)
        return BaselineOutput(F.normalize(self.proj[modality](pooled), dim=-1))

    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_safetensors(tensors, directory / "baseline.safetensors")
        doc = {
            "format": BASELINE_FORMAT,
            "hidden_sizes": self.hidden_sizes,
            "encoders": self.encoder_config,
            "metadata": metadata or {},
        }
        (directory / "baseline.json").write_text(json.dumps(doc, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MeanPoolBaseline:
        directory = Path(directory)
        path = directory / "baseline.json"
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not a baseline checkpoint (no baseline.json)")
        doc = json.loads(path.read_text())
        if doc.get("format") != BASELINE_FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r}, expected {BASELINE_FORMAT}")
        model = cls(hidden_sizes=doc["hidden_sizes"], encoder_config=doc.get("encoders"))
        model.load_state_dict(load_file(str(directory / "baseline.safetensors")))
        return model.eval()

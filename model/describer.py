"""Phase 2: a frozen language model reads the resampler's latents and writes text.

The projector maps each of the model's latents (B, L, D) to one input embedding of
the language model (B, L, D_llm). Those L vectors take the place of the media in a
chat turn::

    <user> [L projected latents] {prompt} <end> <assistant> {answer}

Only the projector trains, on the language-modelling loss of the answer (the sentence
a clip speaks, an image's caption); the language model and every phase-1 weight stay
frozen. The projector is saved beside a release (``describer/``), not inside its
checkpoint, so adding or retraining it never changes a single vector.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from model.errors import InvalidInput

PROJECTOR_FILE = "projector.safetensors"
CONFIG_FILE = "describer.json"
FOLDER = "describer"
MEDIA = "\u241e"  # a placeholder the chat template keeps as it is
DEFAULT_PROMPTS = {
    "audio": "Write down what is said.",
    "image": "Describe this picture in a few words.",
    "text": "Repeat this text.",
}


@dataclass(frozen=True)
class DescriberConfig:
    """What a trained projector is and what it was trained for.

    Attributes:
        latent_dim: width of the latents it reads (the phase-1 resampler's ``dim``).
        llm_dim: the language model's hidden size.
        hidden: width of the projector's hidden layer; 0 is the design's one Linear.
        llm: the language model's name; ``llm_fingerprint`` its embedding table's hash.
        weights_digest: the phase-1 model whose latents it reads (Embedder.weights_digest).
        prompts: the default prompt per modality (the one it was trained with).
    """

    latent_dim: int
    llm_dim: int
    hidden: int = 1024
    llm: str = ""
    llm_fingerprint: str = ""
    weights_digest: str = ""
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    trained: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> DescriberConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class PrefixProjector(nn.Module):
    """(B, L, latent_dim) latents -> (B, L, llm_dim) language-model input embeddings.

    Two layers with a GELU, as LLaVA-1.5's projector (one Linear, the design's, with
    ``hidden=0``). A LayerNorm first puts latents of every modality on one scale.
    """

    def __init__(self, config: DescriberConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.latent_dim)
        if config.hidden:
            self.net = nn.Sequential(
                nn.Linear(config.latent_dim, config.hidden),
                nn.GELU(),
                nn.Linear(config.hidden, config.llm_dim),
            )
        else:
            self.net = nn.Linear(config.latent_dim, config.llm_dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(latents))


def save_projector(folder: str | Path, projector: PrefixProjector, config: DescriberConfig) -> Path:
    """Write ``projector.safetensors`` and ``describer.json`` into ``folder``."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float32).contiguous() for k, v in projector.state_dict().items()
    }
    save_file(state, str(out / PROJECTOR_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
    return out


def _projector_dir(folder: str | Path) -> Path | None:
    path = Path(folder)
    for candidate in (path, path / FOLDER):
        if (candidate / CONFIG_FILE).is_file() and (candidate / PROJECTOR_FILE).is_file():
            return candidate
    return None


def has_projector(folder: str | Path) -> bool:
    """Whether ``folder`` (or its ``describer/``) holds a saved projector."""
    return _projector_dir(folder) is not None


def load_projector(folder: str | Path) -> tuple[PrefixProjector, DescriberConfig] | None:
    """The projector saved in ``folder`` (or its ``describer/``), or None if it has none."""
    from safetensors.torch import load_file

    path = _projector_dir(folder)
    if path is None:
        return None
    config = DescriberConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    projector = PrefixProjector(config)
    projector.load_state_dict(load_file(str(path / PROJECTOR_FILE)))
    projector.eval()
    for p in projector.parameters():
        p.requires_grad_(False)
    return projector, config


@dataclass(frozen=True)
class Generation:
    """One description: its text, the tokens generated and the seconds spent."""

    text: str
    tokens: int
    seconds: float


class ChatLayout:
    """The token ids around the media and the prompt, from the tokenizer's chat
    template (plain ``{media}{prompt}\\n`` for a model without one)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.eos = tokenizer.eos_token_id
        end = getattr(tokenizer, "convert_tokens_to_ids", lambda t: None)("<|im_end|>")
        unk = getattr(tokenizer, "unk_token_id", None)
        self.end_ids = [end] if isinstance(end, int) and end != unk and end is not None else []

    def around(self, prompt: str) -> tuple[list[int], list[int]]:
        """(ids before the media, ids after it up to where the answer starts)."""
        if self.has_template:
            # An empty system turn: the template's default one would add about 20 tokens
            # to every sequence the projector trains on.
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": ""}, {"role": "user", "content": MEDIA + prompt}],
                tokenize=False,
                add_generation_prompt=True,
            )
            before, _, after = rendered.partition(MEDIA)
        else:
            before, after = "", prompt + "\n"
        encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        return encode(before), encode(after)

    def answer_ids(self, text: str) -> list[int]:
        """The answer's ids, closed by the turn's end (or EOS)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids + (self.end_ids or [self.eos])

    def stop_ids(self) -> list[int]:
        return [i for i in {*self.end_ids, self.eos} if i is not None]


class Describer:
    """A frozen language model and a projector: latents in, text out (and the loss that
    trains the projector)."""

    def __init__(
        self, projector: PrefixProjector, config: DescriberConfig, llm: nn.Module, tokenizer
    ) -> None:
        if config.llm_dim != llm.get_input_embeddings().weight.shape[1]:
            raise InvalidInput(
                f"the projector writes {config.llm_dim}-d vectors; the language model "
                f"takes {llm.get_input_embeddings().weight.shape[1]}-d"
            )
        self.projector = projector
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        self.layout = ChatLayout(tokenizer)
        self._around: dict[str, tuple[list[int], list[int]]] = {}

    def prompt_for(self, modality: str, prompt: str | None) -> str:
        return prompt if prompt else self.config.prompts.get(modality, DEFAULT_PROMPTS["audio"])

    def prompt_tokens(self, prompt: str) -> int:
        before, after = self._pieces(prompt)
        return len(before) + len(after)

    def _pieces(self, prompt: str) -> tuple[list[int], list[int]]:
        if prompt not in self._around:
            if len(self._around) > 256:
                self._around.clear()
            self._around[prompt] = self.layout.around(prompt)
        return self._around[prompt]

    def _embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        device = table.weight.device
        return table(torch.tensor(list(ids), dtype=torch.long, device=device))

    def _sequences(
        self,
        latents: torch.Tensor,
        prompts: Sequence[str],
        answers: Sequence[list[int]] | None,
        *,
        left_pad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs_embeds (B, S, H), attention_mask (B, S), labels (B, S) or None)."""
        table = self.llm.get_input_embeddings()
        prefix = self.projector(latents.to(table.weight.device, torch.float32))  # (B, L, H)
        rows, labels = [], []
        for i, prompt in enumerate(prompts):
            before, after = self._pieces(prompt)
            answer = list(answers[i]) if answers is not None else []
            parts = [self._embed_ids(before), prefix[i], self._embed_ids(after)]
            if answer:
                parts.append(self._embed_ids(answer))
            rows.append(torch.cat([p for p in parts if p.shape[0]], dim=0))
            n_context = len(before) + prefix.shape[1] + len(after)
            labels.append([-100] * n_context + answer)
        width = max(r.shape[0] for r in rows)
        hidden = prefix.shape[-1]
        embeds = prefix.new_zeros((len(rows), width, hidden))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=prefix.device)
        label_tensor = torch.full((len(rows), width), -100, dtype=torch.long, device=prefix.device)
        for i, row in enumerate(rows):
            n = row.shape[0]
            span = slice(width - n, width) if left_pad else slice(0, n)
            embeds[i, span] = row
            mask[i, span] = 1
            label_tensor[i, span] = torch.tensor(labels[i], dtype=torch.long)
        return embeds, mask, label_tensor if answers is not None else None

    def loss(
        self, latents: torch.Tensor, texts: Sequence[str], modalities: Sequence[str]
    ) -> torch.Tensor:
        """Mean next-token loss over the answers' tokens, with the default prompts."""
        prompts = [self.prompt_for(m, None) for m in modalities]
        answers = [self.layout.answer_ids(t) for t in texts]
        embeds, mask, labels = self._sequences(latents, prompts, answers, left_pad=False)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.inference_mode()
    def generate(
        self,
        latents: torch.Tensor,
        modalities: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        *,
        max_tokens: int = 48,
    ) -> list[Generation]:
        """Greedy descriptions of a batch of latents (B, L, D): the same input always
        gives the same text."""
        start = time.perf_counter()
        chosen = [
            self.prompt_for(m, (prompts[i] if prompts is not None else None))
            for i, m in enumerate(modalities)
        ]
        embeds, mask, _ = self._sequences(latents, chosen, None, left_pad=True)
        stop = self.layout.stop_ids()
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=stop or None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        seconds = time.perf_counter() - start
        results = []
        for row in out.tolist():
            kept = []
            for token in row:
                if token in stop:
                    break
                kept.append(token)
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            results.append(Generation(text=text, tokens=len(kept), seconds=seconds))
        return results

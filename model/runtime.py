"""How the frozen text and audio encoders run: PyTorch, or ONNX Runtime on CPU.

``"torch"`` runs the encoders as PyTorch modules (SDPA attention, transformers'
default). ``"onnx"`` exports MiniLM and the Whisper encoder to ONNX when the
model is loaded (``torch.onnx.export``, dynamo exporter; minutes on a small busy
CPU, so the export can be kept in a cache folder and reused), and runs them with
ONNX Runtime's CPU provider and its full graph optimisations (fused attention,
layer norm and GELU). Same float32 arithmetic, so outputs agree with PyTorch's
to about 1e-5; measured faster on CPU (see ``python -m
model.training.encoder_benchmark`` and the README). ``"auto"`` picks ``onnx`` on CPU for
the real text encoder only (the audio encoder gained at batch 1 only) and
``torch`` everywhere else (CUDA, where float16/bfloat16 run, and the tiny
preset's random encoders, where speed does not matter and export would only
slow start-up). The image encoder always runs in PyTorch.

The PyTorch weights stay loaded: checkpoint fingerprints and training read them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.errors import RuntimeUnavailable

logger = logging.getLogger(__name__)

ENCODER_RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnx")
# The encoders "onnx" runs in ONNX Runtime; images stay in PyTorch.
ONNX_MODALITIES: tuple[str, ...] = ("text", "audio")
# The encoders "auto" runs in ONNX Runtime on CPU: MiniLM was 1.1-1.7x faster; the
# Whisper encoder (trimmed windows) gained at batch 1 only (README, Encoder runtimes).
AUTO_ONNX_MODALITIES: tuple[str, ...] = ("text",)


def onnx_modalities(
    runtime: str, device: torch.device, encoders: Mapping[str, Any]
) -> tuple[str, ...]:
    """The modalities whose encoders ``runtime`` runs in ONNX Runtime on ``device``.

    "torch": none. "onnx": text and audio. "auto": on CPU, the real (not random)
    encoders of :data:`AUTO_ONNX_MODALITIES`; none on CUDA, where float16/bfloat16 run.
    Raises ValueError for an unknown name and RuntimeUnavailable for "onnx" off the
    CPU or without onnxruntime installed.
    """
    if runtime not in ENCODER_RUNTIMES:
        raise ValueError(
            f"encoder runtime must be one of {list(ENCODER_RUNTIMES)}; got {runtime!r}"
        )
    if runtime == "torch":
        return ()
    if runtime == "auto":
        real = [m for m in AUTO_ONNX_MODALITIES if m in encoders and encoders[m].source is not None]
        if device.type != "cpu" or not real:
            return ()
        if not onnxruntime_available():
            logger.warning(
                "onnxruntime is not installed: the encoders run in PyTorch, slower on CPU "
                "(pip install onnxruntime onnxscript)"
            )
            return ()
        return tuple(real)
    if device.type != "cpu":
        raise RuntimeUnavailable(
            f"encoder runtime 'onnx' runs on the CPU only; on {device} use 'torch' "
            "(with dtype float16 or bfloat16)"
        )
    if not onnxruntime_available():
        raise RuntimeUnavailable(
            "encoder runtime 'onnx' needs the onnxruntime and onnxscript packages: "
            "pip install onnxruntime onnxscript (or use encoder runtime 'torch')"
        )
    return tuple(m for m in ONNX_MODALITIES if m in encoders)


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and the exporter's onnxscript can be imported."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(
    module: nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic_axes: Mapping[str, Iterable[int]],
) -> bytes:
    """``module`` as a serialised ONNX model (dynamo exporter, weights inline).

    ``example`` holds the inputs by name, with sizes of 2 or more on every dynamic
    axis so that the exporter does not specialise them; ``dynamic_axes`` names the
    dynamic axes of each input. The output's shape follows from the graph.
    """
    module.eval()
    dims = {
        name: {axis: torch.export.Dim.DYNAMIC for axis in dynamic_axes.get(name, ())}
        for name in example
    }
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            tuple(example.values()),
            input_names=list(example),
            output_names=["output"],
            dynamic_shapes=dims,
            dynamo=True,
            optimize=False,  # ONNX Runtime optimises the graph itself, and sooner
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


class OnnxModule:
    """An ONNX Runtime CPU session standing in for a PyTorch module: tensors in, a tensor out.

    Sessions are thread-safe; ``threads`` is the session's intra-op thread count.
    """

    def __init__(self, model: bytes, input_names: Sequence[str], *, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle ONNX Runtime threads would otherwise spin for a while after each run,
        # taking the cores from the PyTorch code (resampler, heads) that runs next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_names = list(input_names)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {
            name: np.ascontiguousarray(t.detach().cpu().numpy())
            for name, t in zip(self.input_names, inputs, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])


def onnx_module(
    what: str,
    module: nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic_axes: Mapping[str, Iterable[int]],
    *,
    threads: int,
    cache_dir: str | os.PathLike[str] | None = None,
    transform: Callable[[bytes], bytes] | None = None,
) -> OnnxModule:
    """Export ``module`` (see :func:`export_onnx`) and open it in ONNX Runtime.

    ``cache_dir``: keep the exported model there and reuse it while the weights,
    the code and the library versions are the same (see :func:`cache_key`).
    ``transform`` rewrites the exported model first (the benchmark's int8 variant).
    """
    started = time.perf_counter()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{what}-{cache_key(module, example, dynamic_axes)}.onnx"
    if path is not None and path.is_file():
        model = path.read_bytes()
        how = f"read from {path}"
    else:
        model = export_onnx(module, example, dynamic_axes)
        how = "exported"
        if path is not None:
            _write_cache(path, model)
    if transform is not None:
        model = transform(model)
    runner = OnnxModule(model, list(example), threads=threads)
    logger.info(
        "%s encoder runs in ONNX Runtime (%s in %.1f s)", what, how, time.perf_counter() - started
    )
    return runner


def default_onnx_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmembed/onnx``, else ``~/.cache/mmembed/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmembed" / "onnx"


def cache_key(
    module: nn.Module, example: Mapping[str, torch.Tensor], dynamic_axes: Mapping[str, Any]
) -> str:
    """What an exported graph depends on, hashed: every weight, the source file of the
    module's class, the inputs' ranks and dtypes, and the torch, transformers and
    onnxscript versions. A change to any of them means a new export."""
    import onnxscript
    import transformers

    digest = hashlib.sha256()
    meta = {
        "versions": [torch.__version__, transformers.__version__, onnxscript.__version__],
        "code": Path(inspect.getfile(type(module))).read_text(encoding="utf-8"),
        "inputs": {
            k: [v.dim(), str(v.dtype), list(dynamic_axes.get(k, ()))] for k, v in example.items()
        },
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:32]


def _write_cache(path: Path, model: bytes) -> None:
    """Write atomically (temp file, rename); a cache that cannot be written is only a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(model)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot keep the exported ONNX model in %s: %s", path.parent, exc)

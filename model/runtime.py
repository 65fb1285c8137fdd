"""How the frozen text and audio encoders run: PyTorch, or ONNX Runtime on CPU.

``"torch"`` runs the encoders as PyTorch modules (SDPA attention, transformers'
default). ``"onnx"`` exports MiniLM and the Whisper encoder to ONNX when the
model is loaded (``torch.onnx.export``, dynamo exporter; minutes on a small busy
CPU, so the export can be kept in a cache folder and reused), and runs them with
ONNX Runtime's CPU provider and its full graph optimisations (fused attention,
layer norm and GELU). Same float32 arithmetic, so outputs agree with PyTorch's
to about 1e-5; measured faster on CPU (see ``python -m
model.training.encoder_benchmark`` and docs/benchmarks.md). ``"onnx-int8"`` runs the same
exported graph after ONNX Runtime's dynamic int8 quantisation (int8 weights,
activations quantised per batch): no longer the same function, so whether it keeps
a trained model's retrieval is measured, not assumed; the quantised model is cached
beside the float32 one. ``"auto"`` picks ``onnx-int8`` on CPU for the real
text encoder only (measured within 1 R@1 point of float32 on the release; the
audio encoder gained at batch 1 only) and ``torch`` everywhere else (CUDA, where
float16/bfloat16 run, and the tiny preset's random encoders, where speed does
not matter and export would only slow start-up). The image encoder always runs in PyTorch.

The PyTorch weights stay loaded: checkpoint fingerprints and training read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from index.atomic import atomic_write_bytes
from model.errors import RuntimeUnavailable

logger = logging.getLogger(__name__)

ENCODER_RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnx", "onnx-int8")
# The runtimes that run encoders in ONNX Runtime.
ONNX_RUNTIMES: tuple[str, ...] = ("onnx", "onnx-int8")
# The encoders "onnx" and "onnx-int8" run in ONNX Runtime; images stay in PyTorch.
ONNX_MODALITIES: tuple[str, ...] = ("text", "audio")
# What "auto" runs on CPU: MiniLM in ONNX Runtime with int8 weights (it kept the
# released model's R@1 within 1 point and ran faster than float32 ONNX, which was
# 1.1-1.7x PyTorch); the Whisper encoder stays in PyTorch (trimmed windows gained
# at batch 1 only, and int8 on it cost R@1). docs/benchmarks.md, Encoder runtimes on CPU.
AUTO_ONNX: dict[str, str] = {"text": "onnx-int8"}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bfloat16
    autocast roughly halves a training step (model/training/experiments.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def onnx_runtimes(
    runtime: str, device: torch.device, encoders: Mapping[str, Any]
) -> dict[str, str]:
    """The encoders ``runtime`` runs in ONNX Runtime on ``device``: {modality: "onnx" or
    "onnx-int8"}.

    "torch": none. "onnx", "onnx-int8": text and audio, that way. "auto": on CPU, the
    real (not random) encoders of :data:`AUTO_ONNX`, each as it says; none on CUDA,
    where float16/bfloat16 run. Raises ValueError for an unknown name and
    RuntimeUnavailable for "onnx" or "onnx-int8" off the CPU or without onnxruntime.
    """
    if runtime not in ENCODER_RUNTIMES:
        raise ValueError(
            f"encoder runtime must be one of {list(ENCODER_RUNTIMES)}; got {runtime!r}"
        )
    if runtime == "torch":
        return {}
    if runtime == "auto":
        real = {
            m: name
            for m, name in AUTO_ONNX.items()
            if m in encoders and encoders[m].source is not None
        }
        if device.type != "cpu" or not real:
            return {}
        if not onnxruntime_available():
            logger.warning(
                "onnxruntime is not installed: the encoders run in PyTorch, slower on CPU "
                "(pip install onnxruntime onnxscript)"
            )
            return {}
        return real
    if device.type != "cpu":
        raise RuntimeUnavailable(
            f"encoder runtime {runtime!r} runs on the CPU only; on {device} use 'torch' "
            "(with dtype float16 or bfloat16)"
        )
    if not onnxruntime_available():
        raise RuntimeUnavailable(
            f"encoder runtime {runtime!r} needs the onnxruntime and onnxscript packages: "
            "pip install onnxruntime onnxscript (or use encoder runtime 'torch')"
        )
    return {m: runtime for m in ONNX_MODALITIES if m in encoders}


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
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
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


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's own chatter off a first start's log, at debug level instead.

    On every first export torch.onnx warns that torchvision (which mmembed does
    not use) is missing, its pytree code raises a FutureWarning meant for
    torch's developers, and onnx_ir's graph passes log each pass at INFO ("No
    unused functions to remove"). None says anything to someone starting a server. Other
    warnings are shown as usual, and an export that fails still raises.
    """
    with (
        _loggers_at_least(logging.ERROR, "torch.onnx"),
        _loggers_at_least(logging.WARNING, *_ONNX_PASS_LOGGERS),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", FutureWarning)
        warnings.simplefilter("always", DeprecationWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, (FutureWarning, DeprecationWarning)):
            logger.debug("torch.onnx.export: %s: %s", warning.category.__name__, warning.message)
        else:  # anything else may matter to the user: shown as it would have been
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


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
    int8: bool = False,
) -> OnnxModule:
    """Export ``module`` (see :func:`export_onnx`), quantise it if ``int8``, and open it
    in ONNX Runtime.

    ``cache_dir``: keep the exported model there and reuse it while the weights, the
    code and the library versions are the same (see :func:`cache_key`); with ``int8``
    the quantised model is kept too, under its own key, and the float32 export it was
    made from beside it.
    """
    started = time.perf_counter()
    folder = Path(cache_dir) if cache_dir is not None else None
    float32 = int8_path = None
    if folder is not None:
        float32 = folder / f"{what}-{cache_key(module, example, dynamic_axes)}.onnx"
        if int8:
            key = cache_key(module, example, dynamic_axes, int8=True)
            int8_path = folder / f"{what}-int8-{key}.onnx"

    if int8_path is not None and int8_path.is_file():
        model, how = int8_path.read_bytes(), f"read from {int8_path}"
    else:
        model, how = _cached(float32, lambda: export_onnx(module, example, dynamic_axes))
        if int8:
            model, how = quantize_int8(model), f"{how}, quantised to int8"
            if int8_path is not None:
                _write_cache(int8_path, model)
    runner = OnnxModule(model, list(example), threads=threads)
    logger.info(
        "%s encoder runs in ONNX Runtime%s (%s in %.1f s)",
        what,
        ", int8" if int8 else "",
        how,
        time.perf_counter() - started,
    )
    return runner


def _cached(path: Path | None, build: Callable[[], bytes]) -> tuple[bytes, str]:
    """The model at ``path`` if there is one, else ``build()``'s, written there; and how
    it was had."""
    if path is not None and path.is_file():
        return path.read_bytes(), f"read from {path}"
    model = build()
    if path is not None:
        _write_cache(path, model)
    return model, "exported"


def quantize_int8(model: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantisation of a serialised float32 model.

    The exporter leaves each linear layer as MatMul(x, Transpose(W)), which the
    quantiser skips (its B is not a constant), so constants are folded first
    (onnxscript's optimiser). Then the MatMuls with a constant weight get int8
    weights, per output channel, and activations quantised per batch at run time (no
    calibration data), except the feed-forward down-projections (weights with more
    rows than columns), which stay float32: on real MiniLM (300 fortunes, 1 thread),
    per-tensor int8 on every linear layer kept 76% of 10-nearest neighbourhoods
    (pooled cosine down to 0.87); per channel with the down-projections in float32
    kept 91% (cosine min 0.98), and ran 1.3-1.6x as fast as ONNX float32 at batch
    8-32 (one run on 2 busy cores: a ranking, not a measurement to quote). The
    Whisper-base encoder so quantised: pooled cosine min 0.991 on 12 espeak-ng clips.
    Embedding tables (Gather) and convolutions stay float32: int8 made them no
    faster (ConvInteger is slower) and only less exact.
    """
    import onnx
    import onnxscript
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quantiser_logs_at_debug():
        folded = onnxscript.optimizer.optimize(onnx.load_from_string(model))
    shapes = {t.name: tuple(t.dims) for t in folded.graph.initializer}
    down = [
        node.name
        for node in folded.graph.node
        if node.op_type == "MatMul"
        and len(weight := shapes.get(node.input[1], ())) == 2
        and weight[0] > weight[1]
    ]
    with tempfile.TemporaryDirectory() as tmp, _quantiser_logs_at_debug():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            folded,
            out,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            nodes_to_exclude=down,
        )
        return out.read_bytes()


@contextlib.contextmanager
def _quantiser_logs_at_debug() -> Iterator[None]:
    """Quiet the quantisation's chatter, which says nothing about the result: the
    quantiser logs to the root logger every MatMul it skips (INFO), the advice to
    pre-process and the types of the mask and id inputs it rightly leaves alone (WARNING,
    as protobuf text); onnxscript's optimiser logs each folded or merged constant (INFO).
    The quantiser's records are passed on at DEBUG; the optimiser's below WARNING dropped."""

    def demote(record: logging.LogRecord) -> bool:
        if f"onnxruntime{os.sep}quantization" not in record.pathname:
            return True
        logger.debug("onnxruntime quantiser: %s", record.getMessage())
        return False

    root = logging.getLogger()
    root.addFilter(demote)
    try:
        with _loggers_at_least(logging.WARNING, *_ONNX_PASS_LOGGERS):
            yield
    finally:
        root.removeFilter(demote)


# The ONNX graph libraries under torch.onnx and the quantiser, which log every pass.
_ONNX_PASS_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def _loggers_at_least(level: int, *names: str) -> Iterator[None]:
    """Raise the named loggers (and so their children) to at least ``level`` for a while."""
    loggers = [logging.getLogger(name) for name in names]
    before = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for log, old in zip(loggers, before, strict=True):
            log.setLevel(old)


def default_onnx_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmembed/onnx``, else ``~/.cache/mmembed/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmembed" / "onnx"


def cache_key(
    module: nn.Module,
    example: Mapping[str, torch.Tensor],
    dynamic_axes: Mapping[str, Any],
    *,
    int8: bool = False,
) -> str:
    """What an exported graph depends on, hashed: every weight, the source file of the
    module's class, the inputs' ranks and dtypes, and the torch, transformers and
    onnxscript versions. A change to any of them means a new export. ``int8``: the key
    of the quantised graph, which also depends on onnxruntime's version (its quantiser)
    and on the code of :func:`quantize_int8`."""
    import onnxscript
    import transformers

    versions = [torch.__version__, transformers.__version__, onnxscript.__version__]
    if int8:
        import onnxruntime

        versions += [onnxruntime.__version__, inspect.getsource(quantize_int8)]
    digest = hashlib.sha256()
    meta = {
        "versions": versions,
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
    """Write atomically (:mod:`index.atomic`, so with the umask's mode: a cache folder
    can be shared); a cache that cannot be written is only a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model)
    except OSError as exc:
        logger.warning("cannot keep the exported ONNX model in %s: %s", path.parent, exc)

"""CPU speed and fidelity of ways to run the frozen text and audio encoders, against float32 PyTorch.

Run from the repository root (a full measurement: about 40 minutes on 2 loaded cores):

    HF_HUB_OFFLINE=1 nice -n 5 python -m model.training.encoder_benchmark --threads 1

Options (``--options``, each against ``torch``: float32 PyTorch with SDPA attention,
transformers' default and what :mod:`model.runtime` calls "torch"):

- ``eager``: PyTorch with transformers' eager (matmul + softmax) attention;
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` int8 on every nn.Linear;
- ``compile``: ``torch.compile(dynamic=True)`` on each transformer layer;
- ``onnx``: ONNX Runtime, float32 (:mod:`model.runtime`, the "onnx" runtime);
- ``onnx-int8``: the same ONNX model with ONNX Runtime's dynamic int8 quantisation
  (the "onnx-int8" runtime, :func:`model.runtime.quantize_int8`).

Speed: texts/s (short sentences) and 3 s clips/s (trimmed window) at each batch
size, for the float32 path and the option, measured alternately (``--rounds``
pairs, median of each) because a shared machine is noisy: the ratio is the
number to read. Start-up: seconds to build the option from loaded encoders
(export, quantisation, first compiled call).

Fidelity, without a trained model: mean-pooled encoder outputs of ``--sentences``
real sentences (Debian fortunes) and of ``--clips`` espeak-ng recordings of them,
compared with float32 (cosine, mean and minimum), and for text the share of each
sentence's 10 nearest neighbours (pooled cosine) that stay the same.

With ``--checkpoint DIR --test MANIFEST`` (a trained checkpoint and a JSONL of
spoken test clips, as ``mmembed`` training writes them) it also embeds the test
set through the whole model and reports audio->text and text->audio R@1 at 512
dims for float32 and each option; ``MODALITY:OPTION`` (``text:onnx-int8``) applies
an option to that encoder only. ``--r1-only`` prints that table alone (the
release's encoders load from ``--models-dir``)::

    HF_HUB_OFFLINE=1 nice -n 5 python -m model.training.encoder_benchmark --threads 1 \
        --r1-only --options onnx,onnx-int8 \
        --checkpoint model/weights/audio-text-v1 --test data/release/spoken/test-devil.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.benchmark import SENTENCES, _clip
from model.config import EncoderConfig, preset
from model.encoders import FrozenEncoder, build_encoder
from model.runtime import ONNX_RUNTIMES
from model.training.evaluate import neighbourhood_recall

OPTIONS: tuple[str, ...] = ("eager", "int8", "compile", "onnx", "onnx-int8")
FORTUNES = Path("/usr/share/games/fortunes")


# ------------------------------------------------------------------------- options


def _layers(encoder: FrozenEncoder) -> Any:
    return encoder.model.encoder.layer if encoder.modality == "text" else encoder.model.layers


def apply_option(option: str, encoder: FrozenEncoder, threads: int) -> None:
    """Switch a float32 PyTorch ``encoder`` to ``option`` in place."""
    if option == "torch":
        return
    if option == "eager":
        encoder.model.set_attn_implementation("eager")
    elif option == "int8":
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(encoder.model, {torch.nn.Linear}, dtype=torch.qint8)
        encoder.model = quantized
    elif option == "compile":
        layers = _layers(encoder)
        for i, layer in enumerate(layers):
            layers[i] = torch.compile(layer, dynamic=True)
    elif option in ONNX_RUNTIMES:  # what the service's runtimes of these names run
        encoder.use_onnx(threads, int8=option == "onnx-int8")
    else:
        raise ValueError(f"unknown option {option!r}; known: torch, {', '.join(OPTIONS)}")


# --------------------------------------------------------------------------- speed


def median_pair(
    base: Callable[[], object], other: Callable[[], object], rounds: int
) -> tuple[float, float]:
    """Median seconds of ``base`` and ``other``, run alternately ``rounds`` times each."""
    base(), other()  # warm-up
    tb, to = [], []
    for _ in range(rounds):
        for fn, out in ((base, tb), (other, to)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(tb), statistics.median(to)


def speed_rows(
    option: str,
    ref: dict[str, FrozenEncoder],
    fast: dict[str, FrozenEncoder],
    batches: Sequence[int],
    rounds: int,
) -> list[str]:
    rows = []
    inputs: dict[str, list[Any]] = {"text": SENTENCES, "audio": [_clip(3.0, s) for s in range(8)]}
    unit = {"text": "texts/s", "audio": "clips/s"}
    for modality in ref:
        items = inputs[modality]
        for b in batches:
            batch = ref[modality].preprocess((items * (b // len(items) + 1))[:b])
            with torch.inference_mode():
                t_ref, t_fast = median_pair(
                    lambda m=modality, x=batch: ref[m](x),
                    lambda m=modality, x=batch: fast[m](x),
                    rounds,
                )
            rows.append(
                f"| {option:<9} | {modality:<5} | {b:>5} | {b / t_ref:>8.1f} | {b / t_fast:>8.1f} "
                f"| {t_ref / t_fast:>5.2f}x | {unit[modality]} |"
            )
    return rows


# ------------------------------------------------------------------------ fidelity


def pooled(encoder: FrozenEncoder, items: Sequence[Any], batch_size: int = 32) -> np.ndarray:
    """Mean of the valid tokens of each item's encoder output: (N, D) float64."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            enc = encoder(encoder.preprocess(list(items[start : start + batch_size])))
            mask = enc.mask.unsqueeze(-1).to(enc.tokens.dtype)  # (B, T, 1)
            out.append(((enc.tokens * mask).sum(1) / mask.sum(1)).double().numpy())
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def spoken_clips(sentences: Sequence[str], seed: int = 0) -> list[np.ndarray]:
    """Each sentence spoken by espeak-ng with a random voice, speed and pitch (clean)."""
    from model.training.spoken import sample_params, synthesize

    rng = random.Random(seed)
    return [
        synthesize(s, sample_params(rng, noise_prob=0.0), seed=i) for i, s in enumerate(sentences)
    ]


def fidelity_row(
    option: str,
    ref: dict[str, FrozenEncoder],
    fast: dict[str, FrozenEncoder],
    data: dict[str, list[Any]],
    ref_pooled: dict[str, np.ndarray],
) -> str:
    cells = [f"| {option:<9} |"]
    for modality in ("text", "audio"):
        if modality not in ref:
            cells.append(" - | - | - |" if modality == "text" else " - | - |")
            continue
        got = pooled(fast[modality], data[modality])
        cos = cosines(ref_pooled[modality], got)
        cells.append(f" {cos.mean():.5f} | {cos.min():.5f} |")
        if modality == "text":
            cells.append(f" {neighbourhood_recall(got, ref_pooled[modality], k=10):.3f} |")
    return "".join(cells)


# ------------------------------------------------------------- trained checkpoint


def checkpoint_r1(
    checkpoint: Path,
    test: Path,
    options: Sequence[str],
    threads: int,
    limit: int,
    encoders: dict[str, str] | None = None,
) -> list[str]:
    """audio->text and text->audio R@1 (512 dims) of the checkpoint on ``test``, per option,
    and the share of plain float32 MiniLM's 10 nearest captions that the checkpoint's
    text vectors keep under that option (on a set of under 21 captions, the nearest
    half of the others, so that the share can still tell models apart).

    ``encoders`` ({modality: folder}) loads the checkpoint's encoders from there (a
    release names them by hub ID); see :meth:`model.embedder.Embedder.from_pretrained`.
    """
    from model.embedder import Embedder
    from model.training.data import load_audio, read_jsonl
    from model.training.evaluate import retrieval_report

    pairs = [p for p in read_jsonl(test).pairs if p.modality == "audio"][:limit]
    clips = [load_audio(p.path, p.origin) for p in pairs]
    _, groups = np.unique([p.group for p in pairs], return_inverse=True)
    captions: dict[int, str] = {}
    for p, g in zip(pairs, groups, strict=True):
        captions.setdefault(int(g), p.text)
    text_groups = np.array(sorted(captions))
    texts_in_order = [captions[int(g)] for g in text_groups]
    k = max(1, min(10, (len(texts_in_order) - 1) // 2))
    reference = None
    rows = []
    for option in ("torch", *options):
        embedder = Embedder.from_pretrained(checkpoint, encoders=encoders, encoder_runtime="torch")
        only, _, name = option.rpartition(":")  # "text:onnx-int8": the text encoder only
        for modality in ("text", "audio"):
            chosen = name if only in ("", modality) else "torch"
            apply_option(chosen, embedder.model.encoders[modality], threads)
        if reference is None:  # the first option is torch: plain float32 MiniLM
            reference = pooled(embedder.model.encoders["text"], texts_in_order)
        audio = embedder.embed_audio(clips, 16_000)
        texts = embedder.embed_texts(texts_in_order)
        report = retrieval_report(audio, texts, groups, text_groups, media_name="audio", dims=[512])
        a2t, t2a = report["audio->text"]["512"]["R@1"], report["text->audio"]["512"]["R@1"]
        kept = neighbourhood_recall(texts, reference, k=k)
        rows.append(f"| {option:<9} | {100 * a2t:>6.2f} | {100 * t2a:>6.2f} | {kept:.3f} |")
    return rows


# ---------------------------------------------------------------------------- main


def _encoders(configs: dict[str, EncoderConfig]) -> dict[str, FrozenEncoder]:
    return {m: build_encoder(c) for m, c in configs.items()}


def encoder_tables(args: argparse.Namespace, options: Sequence[str]) -> None:
    """Print speed, start-up and fidelity of each option against float32 PyTorch."""
    batches = [int(b) for b in args.batch_sizes.split(",")]
    modalities = [m for m in args.modalities.split(",") if m]
    config = preset(
        "base",
        encoders={
            "text": str(args.models_dir / "all-MiniLM-L6-v2"),
            "audio": str(args.models_dir / "whisper-base-encoder"),
        },
        modalities=modalities,
    )
    configs = {  # audio: the trimmed window, what serving uses
        m: c if m == "text" else dataclasses.replace(c, audio_window="trimmed")
        for m, c in config.encoders.items()
    }
    ref = _encoders(configs)

    from model.training.spoken import read_source

    sentences = random.Random(0).sample(read_source(FORTUNES), args.sentences)
    data: dict[str, list[Any]] = {"text": sentences}
    if "audio" in ref:
        data["audio"] = spoken_clips(sentences[: args.clips])
    ref_pooled = {m: pooled(ref[m], data[m]) for m in ref}

    print(
        f"mmembed encoder runtimes: CPU, torch {torch.__version__}, {args.threads} threads; "
        f"real MiniLM + Whisper-base encoder (3 s clips, trimmed window)"
    )
    speed: list[str] = []
    fidelity: list[str] = []
    startup: list[str] = []
    for option in options:
        fast = _encoders(configs)
        started = time.perf_counter()
        for encoder in fast.values():
            apply_option(option, encoder, args.threads)
        with torch.inference_mode():  # compile: the first call compiles
            for m, encoder in fast.items():
                encoder(encoder.preprocess(data[m][:2]))
        startup.append(f"| {option:<9} | {time.perf_counter() - started:>8.1f} |")
        rows = speed_rows(option, ref, fast, batches, args.rounds)
        speed += rows
        fidelity.append(fidelity_row(option, ref, fast, data, ref_pooled))
        # As it goes too, so that an interrupted run still shows what it measured.
        print("\n".join([*rows, startup[-1], fidelity[-1]]), flush=True)
        del fast

    print("\nSpeed, float32 PyTorch (torch) and the option measured alternately:\n")
    print("| option    | input | batch | torch/s  | option/s | ratio  | unit    |")
    print("|-----------|-------|-------|----------|----------|--------|---------|")
    print("\n".join(speed))
    print("\nStart-up (build the option from loaded float32 encoders, first call included):\n")
    print("| option    | seconds  |\n|-----------|----------|")
    print("\n".join(startup))
    clips = f", {len(data['audio'])} espeak-ng clips" if "audio" in data else ""
    print(
        "\nFidelity against float32, mean-pooled encoder outputs: "
        f"{len(data['text'])} fortunes{clips}:\n"
    )
    print(
        "| option    | text cos mean | text cos min | text top-10 kept | audio cos mean | audio cos min |"
    )
    print(
        "|-----------|---------------|--------------|------------------|----------------|---------------|"
    )
    print("\n".join(fidelity))


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=here.parent / "shared" / "models")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--modalities", default="text,audio")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=7, help="timed pairs per cell (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--sentences", type=int, default=1000, help="fortunes for text fidelity")
    parser.add_argument("--clips", type=int, default=100, help="espeak-ng clips for audio fidelity")
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint: also report R@1")
    parser.add_argument("--test", type=Path, help="JSONL of spoken test clips (with --checkpoint)")
    parser.add_argument("--test-limit", type=int, default=2000, help="most test clips to embed")
    parser.add_argument(
        "--r1-only",
        action="store_true",
        help="with --checkpoint: only the R@1 table (no speed or fidelity runs)",
    )
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != (args.test is None):
        parser.error("--checkpoint and --test go together")
    if args.r1_only and args.checkpoint is None:
        parser.error("--r1-only needs --checkpoint and --test")
    torch.set_num_threads(args.threads)
    options = [o for o in args.options.split(",") if o]
    for o in options:
        only, _, name = o.rpartition(":")
        if name not in OPTIONS or only not in ("", "text", "audio"):
            parser.error(
                f"unknown option {o!r}; known: {', '.join(OPTIONS)}, each as it is or as text:NAME / audio:NAME"
            )
        if only and not args.r1_only:
            parser.error(f"{o!r}: an option for one encoder only needs --r1-only")
    if not args.r1_only:
        encoder_tables(args, options)
    if args.checkpoint is not None:
        encoders = {
            "text": str(args.models_dir / "all-MiniLM-L6-v2"),
            "audio": str(args.models_dir / "whisper-base-encoder"),
        }
        print(f"\nR@1 (%, 512 dims) of {args.checkpoint} on {args.test}:\n")
        print(
            "| option    | a->t   | t->a   | MiniLM top-10 kept |\n"
            "|-----------|--------|--------|--------------------|"
        )
        rows = checkpoint_r1(
            args.checkpoint, args.test, options, args.threads, args.test_limit, encoders
        )
        print("\n".join(rows))


if __name__ == "__main__":
    main()

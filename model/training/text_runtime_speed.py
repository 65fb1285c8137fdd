"""Text embeddings per second of a checkpoint's whole text path, MiniLM in ONNX Runtime
float32 against int8 (the ``onnx`` and ``onnx-int8`` runtimes on the text encoder).

Run from the repository root (the release's encoders from ``--models-dir``)::

    HF_HUB_OFFLINE=1 python -m model.training.text_runtime_speed \\
        --checkpoint model/weights/audio-text-v1 --threads 2

Both embedders load the same checkpoint and take turns, ``--rounds`` passes each
over ``--sentences`` fortunes in batches of ``--batch-size``; each rate is the
median pass, so load that comes and goes on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch

from model.embedder import Embedder
from model.training.encoder_benchmark import median_pair

FORTUNES = "/usr/share/games/fortunes"


def text_rates(
    checkpoint: str | Path,
    sentences: list[str],
    *,
    encoders: dict[str, str] | None = None,
    threads: int = 2,
    batch_size: int = 32,
    rounds: int = 5,
) -> dict[str, float]:
    """{"onnx": texts/s, "onnx-int8": texts/s} of ``checkpoint``'s text path."""
    torch.set_num_threads(threads)
    embedders = {}
    for name in ("onnx", "onnx-int8"):
        embedder = Embedder.from_pretrained(checkpoint, encoders=encoders, encoder_runtime="torch")
        embedder.model.encoders["text"].use_onnx(threads=threads, int8=name == "onnx-int8")
        embedders[name] = embedder

    def one_pass(embedder: Embedder) -> Callable[[], None]:
        def run() -> None:
            for i in range(0, len(sentences), batch_size):
                embedder.embed_texts(sentences[i : i + batch_size])

        return run

    seconds = median_pair(one_pass(embedders["onnx"]), one_pass(embedders["onnx-int8"]), rounds)
    return {name: round(len(sentences) / s, 1) for name, s in zip(embedders, seconds, strict=True)}


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or release name")
    parser.add_argument("--models-dir", type=Path, default=here.parent / "shared" / "models")
    parser.add_argument("--sentences", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from model.training.spoken import read_source

    sentences = random.Random(0).sample(read_source(FORTUNES), args.sentences)
    encoders = {
        "text": str(args.models_dir / "all-MiniLM-L6-v2"),
        "audio": str(args.models_dir / "whisper-base-encoder"),
    }
    rates = text_rates(
        args.checkpoint,
        sentences,
        encoders=encoders,
        threads=args.threads,
        batch_size=args.batch_size,
        rounds=args.rounds,
    )
    print("| text encoder runtime | texts/s |\n| --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate} |")
    print(json.dumps({**rates, "int8_over_float32": round(rates["onnx-int8"] / rates["onnx"], 3)}))


if __name__ == "__main__":
    main()

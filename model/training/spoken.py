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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.constants import SAMPLE_RATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoicePool:
    """The espeak-ng voices, variants (timbres), speeds (words per minute) and
    pitches (0-99) one group of clips is spoken with.

    :data:`TRAIN_VOICES` speaks training and validation clips,
    :data:`HELD_OUT_VOICES` the test sets. The two share no language voice, no
    variant, and no speed or pitch: the held-out speeds and pitches lie outside
    the training ranges, on both sides.
    """

    languages: tuple[str, ...]
    variants: tuple[str, ...]
    speeds: tuple[int, ...]
    pitches: tuple[int, ...]


# `espeak-ng --voices=en` and `--voices=variant` list what is installed (a test
# checks that every name below is).
TRAIN_VOICES = VoicePool(
    languages=("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan"),
    variants=(
        "",
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
        "f1",
        "f2",
        "f3",
        "klatt",
        "klatt3",
        "adam",
        "Andy",
        "Annie",
        "david",
        "edward",
        "john",
        "linda",
        "max",
        "paul",
        "robert",
        "steph",
        "travis",
        "zac",
    ),
    speeds=tuple(range(130, 201, 2)),
    pitches=tuple(range(24, 77, 2)),
)
HELD_OUT_VOICES = VoicePool(
    languages=("en-us-nyc", "en-gb-x-gbcwmd"),
    variants=(
        "m6",
        "m7",
        "m8",
        "f4",
        "f5",
        "klatt2",
        "klatt4",
        "Alex",
        "belinda",
        "benjamin",
        "Lee",
        "Mike",
        "shelby",
        "quincy",
        "victor",
    ),
    speeds=tuple(range(112, 130, 2)) + tuple(range(202, 221, 2)),
    pitches=tuple(range(10, 24, 2)) + tuple(range(78, 91, 2)),
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


def sample_params(
    rng: random.Random, pool: VoicePool = TRAIN_VOICES, noise_prob: float = 0.3
) -> SpeechParams:
    """Draw a random voice, speed, pitch and noise level from ``pool``."""
    lang = rng.choice(pool.languages)
    variant = rng.choice(pool.variants)
    voice = f"{lang}+{variant}" if variant else lang
    snr = round(rng.uniform(10.0, 35.0), 1) if rng.random() < noise_prob else None
    return SpeechParams(
        voice=voice,
        speed=rng.choice(pool.speeds),
        pitch=rng.choice(pool.pitches),
        noise_snr_db=snr,
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


def _gcide_texts(path: Path) -> Iterable[str]:
    """Definitions and quotations of the GNU Collaborative International Dictionary.

    Entries copied from WordNet (tagged ``[WordNet``) are left out, so a WordNet
    test set stays unseen. Cross-reference braces, source tags such as
    ``[1913 Webster]`` and ``--Author.`` attributions are removed.
    """
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        raw = fh.read()
    for entry in re.split(r"\n\s*\n", raw):
        if "WordNet" in entry:
            continue
        body = [line.strip() for line in entry.splitlines() if line.startswith("   ")]
        text = " ".join(body)
        text = re.sub(r"\[[^\]]*\]", " ", text)
        text = re.sub(r"--\s*[A-Z][\w. ]*?\.", " ", text)
        text = text.replace("{", "").replace("}", "")
        text = re.sub(r"^\s*\d+\.\s*", "", text)
        yield re.sub(r"\s+\d+\.\s+", "\n\n", text)


WORDNET_PARTS = ("noun", "verb", "adj", "adv")


def _wordnet_examples(directory: Path) -> Iterable[str]:
    """WordNet's usage examples (the quoted sentences in each gloss), one per text.

    They are short and mostly lower-case without final punctuation, so each gets
    a capital letter and a full stop.
    """
    for part in WORDNET_PARTS:
        data = directory / f"data.{part}"
        if not data.exists():
            continue
        for line in data.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                example = example.strip().rstrip(";,")
                if not example:
                    continue
                if example[-1] not in ".!?":
                    example += "."
                yield example[0].upper() + example[1:]


def read_source(source: str | Path) -> list[str]:
    """All sentences of one text source, deduplicated, in order of appearance.

    ``source`` is a fortune directory (every file with a ``.dat`` index) or
    fortune file, GCIDE's ``gcide.dict.dz``, another dictd ``.dict.dz`` / ``.gz``
    file, a WordNet database folder (its usage examples), or a plain text file.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"text source not found: {path}")
    texts: Iterable[str]
    if path.is_dir() and any((path / f"data.{part}").exists() for part in WORDNET_PARTS):
        texts = _wordnet_examples(path)
    elif path.is_dir():
        files = _fortune_files(path)
        if not files:
            raise ValueError(f"{path}: no fortune files (with .dat index) in this directory")
        texts = (t for f in files for t in _fortune_texts(f))
    elif path.name.startswith("gcide"):
        texts = _gcide_texts(path)
    elif path.suffix == ".gz" or path.name.endswith(".dict.dz"):
        with gzip.open(path, "rt", encoding="latin-1") as fh:
            texts = [fh.read()]
    elif path.with_name(path.name + ".dat").exists():
        texts = _fortune_texts(path)
    else:
        texts = [path.read_text(encoding="utf-8", errors="replace")]
    return _unique(sentence for text in texts for sentence in extract_sentences(text))


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
    """One clip to speak: where it goes and the manifest record that describes it."""

    split: str
    text: str
    params: SpeechParams
    path: str
    seed: int
    record: dict


def _run_job(job: _Job) -> tuple[_Job, float | None, str | None]:
    """Synthesize one clip to ``job.path``; return (job, duration s, error)."""
    out = Path(job.path)
    if out.exists():
        try:
            return job, sf.info(out).duration, None
        except RuntimeError:
            out.unlink()
    try:
        audio = synthesize(job.text, job.params, seed=job.seed)
    except RuntimeError as exc:
        return job, None, str(exc)
    tmp = out.with_suffix(".tmp.wav")
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, out)
    return job, audio.size / SAMPLE_RATE, None


SHINGLE_WORDS = 5


def _shingles(sentence: str) -> set[str]:
    """Overlapping runs of :data:`SHINGLE_WORDS` normalised words (the whole
    sentence when it is shorter)."""
    words = normalise(sentence).split()
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words)}
    return {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


_SOURCE_SUFFIX = re.compile(r"(?P<cap>\d+)?(?::(?P<low>\d+)-(?P<high>\d+))?")


@dataclass(frozen=True)
class SourceSpec:
    """One text source: ``path``, ``path@N`` (at most N sentences, sampled with the
    build's seed), ``path@N:A-B`` or ``path@:A-B`` (only sentences of A to B words,
    then at most N of them). The word range shifts a pool's length mix, for example
    toward short sentences like those of a test set."""

    path: str
    cap: int | None = None
    words: tuple[int, int] | None = None

    @classmethod
    def parse(cls, spec: str | Path) -> SourceSpec:
        text = str(spec)
        path, sep, suffix = text.rpartition("@")
        match = _SOURCE_SUFFIX.fullmatch(suffix) if sep and path else None
        if match is None or not suffix:
            return cls(text)
        cap = int(match["cap"]) if match["cap"] else None
        words = None
        if match["low"] is not None:
            words = (int(match["low"]), int(match["high"]))
            if not 1 <= words[0] <= words[1]:
                raise ValueError(f"{text}: the word range {suffix} must be A-B with 1 <= A <= B")
        return cls(path, cap, words)


def read_pool(sources: Sequence[str | Path], seed: int) -> list[str]:
    """Sentences of several sources (see :class:`SourceSpec`), deduplicated across them."""
    pool: list[str] = []
    for spec in sources:
        source = SourceSpec.parse(spec)
        sentences = read_source(source.path)
        if source.words is not None:
            low, high = source.words
            sentences = [s for s in sentences if low <= len(s.split()) <= high]
            if not sentences:
                raise ValueError(f"{spec}: no sentence of {low} to {high} words in {source.path}")
        if source.cap is not None and source.cap < len(sentences):
            sentences = random.Random(seed).sample(sentences, source.cap)
        pool.extend(sentences)
    return _unique(pool)


def split_sentences(
    train_pool: Sequence[str],
    test_pools: dict[str, Sequence[str]],
    *,
    n_train: int | None,
    n_val: int,
    n_test: int,
    seed: int,
) -> dict[str, list[str]]:
    """Disjoint train, val and ``test-NAME`` sentence lists.

    Each test set is drawn only from its own pool. A training or validation
    sentence that shares any run of :data:`SHINGLE_WORDS` words with a chosen
    test sentence is dropped, so a quotation that also appears inside a longer
    training sentence cannot leak. ``n_train=None`` keeps every remaining
    sentence.
    """
    rng = random.Random(seed)
    splits: dict[str, list[str]] = {}
    taken_keys: set[str] = set()
    for name, pool in test_pools.items():
        pool = [s for s in _unique(pool) if normalise(s) not in taken_keys]
        if n_test > len(pool):
            raise ValueError(
                f"asked for {n_test} test sentences, test set {name!r} has {len(pool)}"
            )
        rng.shuffle(pool)
        splits[f"test-{name}"] = pool[:n_test]
        taken_keys.update(normalise(s) for s in splits[f"test-{name}"])
    taken = {sh for chosen in splits.values() for s in chosen for sh in _shingles(s)}
    train_pool = [s for s in train_pool if not _shingles(s) & taken]
    rng.shuffle(train_pool)
    if n_val + (n_train or 0) > len(train_pool):
        raise ValueError(
            f"asked for {n_train} train + {n_val} val sentences, "
            f"the training sources have {len(train_pool)}"
        )
    splits["val"] = train_pool[:n_val]
    splits["train"] = train_pool[n_val:] if n_train is None else train_pool[n_val : n_val + n_train]
    if not splits["train"]:
        raise ValueError(
            f"no training sentences left: the training sources have {len(train_pool)} "
            f"after removing test overlap, and {n_val} go to validation"
        )
    return splits


@dataclass(frozen=True)
class SpokenSpec:
    """What :func:`build_spoken_dataset` builds.

    test_sets: name -> text sources; each becomes ``test-NAME.jsonl``.
    Sources are paths, ``path@N`` for at most N sentences of that source, or
    ``path@N:A-B`` for sentences of A to B words (:class:`SourceSpec`).
    """

    train_sources: tuple[str, ...]
    test_sets: dict[str, tuple[str, ...]]
    n_train: int | None = None
    n_val: int = 300
    n_test: int = 500
    train_variants: int = 2
    test_variants: int = 1
    noise_prob: float = 0.3
    seed: int = 0


def is_test_split(split: str) -> bool:
    """Whether a split (``train``, ``val``, ``test-NAME``) is a held-out test set."""
    return split.startswith("test-")


def plan_jobs(out: Path, spec: SpokenSpec, splits: dict[str, list[str]]) -> list[_Job]:
    """Every clip to speak, test sets first, then val, then train variant-major.

    Test clips use :data:`HELD_OUT_VOICES`; training and validation clips use
    :data:`TRAIN_VOICES`, so the checkpoint chosen on validation has never
    heard a test voice. Each split draws from its own seeded generator, so
    changing one split's plan leaves the others' clips as they were.
    """
    jobs: list[_Job] = []
    for split, sentences in splits.items():
        rng = random.Random(f"{spec.seed}:{split}")
        pool = HELD_OUT_VOICES if is_test_split(split) else TRAIN_VOICES
        variants = spec.train_variants if split == "train" else spec.test_variants
        for v in range(variants):
            for i, text in enumerate(sentences):
                params = sample_params(rng, pool, noise_prob=spec.noise_prob)
                rel = f"audio/{split}/{i:06d}_{v}.wav"
                record = {"audio": rel, "text": text, "sentence_id": i, "variant": v}
                record.update(asdict(params))
                job_seed = spec.seed * 1_000_003 + len(jobs)
                jobs.append(_Job(split, text, params, str(out / rel), job_seed, record))
    return jobs


def plan_spoken(out: Path, spec: SpokenSpec) -> tuple[dict[str, list[str]], list[_Job]]:
    """The sentences of every split and every clip to speak for them (:func:`plan_jobs`):
    the whole plan of a build, the same whichever part of it is then spoken."""
    train_pool = read_pool(spec.train_sources, spec.seed)
    test_pools = {name: read_pool(srcs, spec.seed) for name, srcs in spec.test_sets.items()}
    splits = split_sentences(
        train_pool,
        test_pools,
        n_train=spec.n_train,
        n_val=spec.n_val,
        n_test=spec.n_test,
        seed=spec.seed,
    )
    return splits, plan_jobs(out, spec, splits)


def _previous_records(out: Path) -> dict[str, dict]:
    """{audio path: record} of the manifests an earlier build left in ``out``."""
    records: dict[str, dict] = {}
    for manifest in out.glob("*.jsonl"):
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record.get("audio", "")] = record
    return records


_SPOKEN_KEYS = ("text", "voice", "speed", "pitch", "noise_snr_db")


def drop_stale_clips(out: Path, jobs: Sequence[_Job]) -> int:
    """Delete written clips that an earlier build made for another sentence or voice.

    A clip is kept only when an earlier manifest lists it with the same text
    and speech parameters as the new plan; anything else is spoken again, so a
    changed plan can never leave a clip that does not match its manifest line.
    Returns how many were dropped.
    """
    previous = _previous_records(out)
    dropped = 0
    for job in jobs:
        path = Path(job.path)
        if not path.exists():
            continue
        old = previous.get(job.record["audio"])
        if old is None or any(old.get(k) != job.record.get(k) for k in _SPOKEN_KEYS):
            path.unlink()
            dropped += 1
    return dropped


def _write_manifest(path: Path, records: Sequence[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def _synthesize_all(
    out: Path,
    jobs: list[_Job],
    *,
    workers: int,
    progress: bool,
    flush_every: int,
    manifest_for: Callable[[str], Path] | None = None,
) -> tuple[dict[str, list[dict]], list[str], float]:
    """Speak every job in order; return (records per split, failures, seconds of audio).

    A split's manifest (``manifest_for(split)``, by default ``out/SPLIT.jsonl``) is
    written as soon as its last clip is done, and the training manifest every
    ``flush_every`` clips with what is done so far (in order), so feature caching can
    start on a prefix while synthesis goes on.
    """
    manifest_for = manifest_for or (lambda split: out / f"{split}.jsonl")
    from tqdm.auto import tqdm

    remaining: dict[str, int] = {}
    for job in jobs:
        remaining[job.split] = remaining.get(job.split, 0) + 1
    records: dict[str, list[dict]] = {split: [] for split in remaining}
    failures: list[str] = []
    seconds = 0.0
    bar = tqdm(total=len(jobs), desc="synthesis", unit="clip", disable=not progress)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for job, duration, error in pool.map(_run_job, jobs, chunksize=16):
            bar.update(1)
            remaining[job.split] -= 1
            if error is not None:
                failures.append(f"{job.path}: {error}")
                log.warning("skipped clip %s: %s", job.path, error)
            else:
                seconds += duration
                records[job.split].append(dict(job.record, duration_s=round(duration, 3)))
            done = remaining[job.split] == 0
            if done or (job.split == "train" and len(records["train"]) % flush_every == 0):
                _write_manifest(manifest_for(job.split), records[job.split])
    bar.close()
    return records, failures, seconds


def build_spoken_dataset(
    out_dir: str | Path,
    spec: SpokenSpec,
    *,
    workers: int = 1,
    progress: bool = True,
    only: Callable[[str], bool] | None = None,
) -> dict:
    """Build ``train.jsonl``, ``val.jsonl``, ``test-NAME.jsonl`` and WAVs under ``out_dir``.

    Each training sentence is spoken ``train_variants`` times with different
    random voices, speeds, pitches and noise; the manifest lists clips
    variant-major (every sentence once, then every sentence again), so a
    prefix of it is a smaller dataset of distinct sentences. Already-written
    WAVs are reused, so an interrupted build resumes. Returns the summary
    also written to ``summary.json``.

    ``only`` keeps the splits it accepts (e.g. the test sets, to check a
    release without its 36,000 training clips): they come out exactly as in a
    whole build, since the whole plan is made and then filtered, and no
    ``summary.json`` is written for such a partial build.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits, jobs = plan_spoken(out, spec)
    if only is not None:
        jobs = [job for job in jobs if only(job.split)]
    for split in dict.fromkeys(job.split for job in jobs):
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    dropped = drop_stale_clips(out, jobs)
    if dropped:
        log.info(
            "%d clips from an earlier build did not match the plan; speaking them again", dropped
        )
    records, failures, seconds = _synthesize_all(
        out, jobs, workers=workers, progress=progress, flush_every=1000
    )
    summary = {
        "spec": asdict(spec),
        "sentences": {k: len(v) for k, v in splits.items() if only is None or only(k)},
        "clips": {k: len(v) for k, v in records.items()},
        "failed": len(failures),
        "failures": failures[:50],
        "audio_hours": round(seconds / 3600, 3),
        "sample_rate": SAMPLE_RATE,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if only is None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


DEFAULT_TRAIN_TEXT = ("/usr/share/games/fortunes", "/usr/share/dictd/gcide.dict.dz@20000")
DEFAULT_TEST_SETS = ("devil=/usr/share/dictd/devil.dict.dz", "wordnet=/usr/share/wordnet")


def parse_test_set(value: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=SOURCE[,SOURCE...]`` -> (name, sources)."""
    name, sep, sources = value.partition("=")
    if not sep or not name or not sources:
        raise ValueError(f"a test set is NAME=SOURCE[,SOURCE...]; got {value!r}")
    return name, tuple(sources.split(","))


def spec_from_args(args: argparse.Namespace) -> SpokenSpec:
    """The :class:`SpokenSpec` of ``mmembed data spoken``'s arguments."""
    test_sets = [parse_test_set(v) for v in (args.test_set or DEFAULT_TEST_SETS)]
    return SpokenSpec(
        train_sources=tuple(args.train_text or DEFAULT_TRAIN_TEXT),
        test_sets=dict(test_sets),
        n_train=args.train_sentences,
        n_val=args.val_sentences,
        n_test=args.test_sentences,
        train_variants=args.train_variants,
        test_variants=args.test_variants,
        noise_prob=args.noise_prob,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mmembed data spoken``."""
    summary = build_spoken_dataset(args.out, spec_from_args(args), workers=args.workers)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    return 0

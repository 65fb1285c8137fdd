"""The model card of a release: what it was trained on, how, how well, how fast, and its limits.

:func:`write_model_card` renders ``README.md`` beside a release's weights from
what the release already records (``config.json``: the recipe, the spoken
data's plan and the evaluation) and two measurements taken when the release is
made: the time each pipeline stage took, and text embeddings per second
against plain MiniLM (:func:`text_speed`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE

# Where each text source comes from and under which licence (Debian's copyright files).
SOURCES = {
    "fortunes": (
        "Debian `fortunes`, `fortunes-min`: the BSD fortune(6) databases",
        "BSD-3-Clause; individual quotations are short excerpts",
    ),
    "gcide": (
        "Debian `dict-gcide`: GNU Collaborative International Dictionary of English "
        "(definitions and quotations; entries derived from WordNet left out)",
        "GPL-3.0-or-later",
    ),
    "devil": (
        "Debian `dict-devil`: Ambrose Bierce, The Devil's Dictionary (1911)",
        "public domain",
    ),
    "wordnet": (
        "Debian `wordnet-base`: WordNet 3.0 usage examples",
        "WordNet 3.0 licence (BSD-like)",
    ),
}

# R@1 at 512 dims of a cascade of Whisper-base speech recognition (faster-whisper
# 1.2.1, CTranslate2 float32, beam 5) and MiniLM on the release recipes' test sets
# (their [spoken] tables, seed 0), measured once: model/training/experiments.md,
# "The speech-recognition cascade on these test sets". The reference, 0.79,
# was measured on simple read sentences in other voices.
CASCADE_R1: dict[str, dict[str, float]] = {
    "devil": {"audio->text": 0.714, "text->audio": 0.680},
    "wordnet": {"audio->text": 0.658, "text->audio": 0.640},
}
TARGETS = {"R@1": 0.75, "dims64_share": 0.95, "neighbourhood": 0.6}


def _source_key(spec: str) -> str:
    for key in SOURCES:
        if key in spec:
            return key
    return spec


def text_speed(
    release: str | Path,
    text_encoder: str,
    sentences: Sequence[str],
    *,
    audio_encoder: str | None = None,
    batch_size: int = 32,
    rounds: int = 5,
    threads: int | None = None,
) -> dict[str, float]:
    """Text embeddings per second of the release and of plain MiniLM, in one process.

    Plain MiniLM is the sentence-transformers recipe (tokenise, encode, mean-pool
    the valid tokens, L2-normalise) run with ``transformers`` directly. The two
    take turns for ``rounds`` passes over ``sentences`` in batches of
    ``batch_size``; each rate is the median pass. Both run in PyTorch, float32.
    """
    from transformers import AutoModel, AutoTokenizer

    from model.embedder import Embedder
    from model.encoders import quiet_load_report

    if threads is not None:
        torch.set_num_threads(threads)
    encoders = {"text": text_encoder}
    if audio_encoder:
        encoders["audio"] = audio_encoder
    embedder = Embedder.from_pretrained(release, encoders=encoders, encoder_runtime="torch")
    tokenizer = AutoTokenizer.from_pretrained(text_encoder)
    with quiet_load_report():  # the load report lists MiniLM's pooler, dropped on purpose
        minilm = AutoModel.from_pretrained(text_encoder).eval()
    batches = [list(sentences[i : i + batch_size]) for i in range(0, len(sentences), batch_size)]

    def plain() -> None:
        with torch.inference_mode():
            for batch in batches:
                tokens = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
                hidden = minilm(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                torch.nn.functional.normalize(pooled, dim=-1)

    def release_pass() -> None:
        for batch in batches:
            embedder.embed_texts(batch)

    from model.training.encoder_benchmark import median_pair

    seconds = median_pair(release_pass, plain, rounds)  # warm-up, then turn about
    rates = {"release": len(sentences) / seconds[0], "minilm": len(sentences) / seconds[1]}
    return {
        "release_texts_per_s": round(rates["release"], 1),
        "minilm_texts_per_s": round(rates["minilm"], 1),
        "ratio": round(rates["release"] / rates["minilm"], 3),
        "sentences": len(sentences),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _retrieval_rows(evaluation: Mapping[str, Any]) -> list[str]:
    rows = [
        "| test set | pairs | model | audio->text R@1 512 / 64 | R@5 512 | text->audio R@1 "
        "512 / 64 | R@5 512 | 64-d share of 512-d R@1 (a->t / t->a) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in evaluation["test_sets"].items():
        for who in ("model", "baseline"):
            if who not in entry:
                continue
            a2t, t2a = entry[who]["audio->text"], entry[who]["text->audio"]
            share = [
                r["64"]["R@1"] / r["512"]["R@1"] if r["512"]["R@1"] else None for r in (a2t, t2a)
            ]
            label = "**resampler (this release)**" if who == "model" else "mean-pool baseline"
            rows.append(
                f"| {name} | {entry['pairs']} | {label} | {_fmt(a2t['512']['R@1'])} / "
                f"{_fmt(a2t['64']['R@1'])} | {_fmt(a2t['512']['R@5'])} | "
                f"{_fmt(t2a['512']['R@1'])} / {_fmt(t2a['64']['R@1'])} | "
                f"{_fmt(t2a['512']['R@5'])} | {_fmt(share[0])} / {_fmt(share[1])} |"
            )
        if name in CASCADE_R1:
            cascade = CASCADE_R1[name]
            rows.append(
                f"| {name} | {entry['pairs']} | speech recognition + MiniLM (cascade) | "
                f"{_fmt(cascade['audio->text'])} / - | - | {_fmt(cascade['text->audio'])} / - "
                "| - | - |"
            )
    return rows


def worst_case(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The release's figures on the worst test set for each measure (what targets apply to)."""
    sets = [entry["model"] for entry in evaluation["test_sets"].values()]
    worst = {
        "audio->text R@1": min(s["audio->text"]["512"]["R@1"] for s in sets),
        "text->audio R@1": min(s["text->audio"]["512"]["R@1"] for s in sets),
        "64-d share": min(
            s[d]["64"]["R@1"] / s[d]["512"]["R@1"]
            for s in sets
            for d in ("audio->text", "text->audio")
            if s[d]["512"]["R@1"]
        ),
    }
    return {k: round(v, 3) for k, v in worst.items()}


def _targets(evaluation: Mapping[str, Any]) -> list[str]:
    worst = worst_case(evaluation)
    beats = all(
        e["model"]["audio->text"]["512"]["R@1"] > e["baseline"]["audio->text"]["512"]["R@1"]
        for e in evaluation["test_sets"].values()
        if "baseline" in e
    )
    keep = evaluation["text_neighbourhood"]["512"]
    mark = _mark
    return [
        "| target (worst test set) | wanted | this release | |",
        "| --- | --- | --- | --- |",
        f"| audio->text R@1, 512-d | >= {TARGETS['R@1']} | {worst['audio->text R@1']:.3f} | "
        f"{mark(worst['audio->text R@1'] >= TARGETS['R@1'])} |",
        f"| text->audio R@1, 512-d | >= {TARGETS['R@1']} | {worst['text->audio R@1']:.3f} | "
        f"{mark(worst['text->audio R@1'] >= TARGETS['R@1'])} |",
        f"| 64-d R@1 / 512-d R@1 | >= {TARGETS['dims64_share']} | {worst['64-d share']:.3f} | "
        f"{mark(worst['64-d share'] >= TARGETS['dims64_share'])} |",
        f"| beats the mean-pool baseline (audio->text R@1) | on every set | "
        f"{'yes' if beats else 'no'} | {mark(beats)} |",
        f"| MiniLM top-10 neighbourhoods kept, 512-d | >= {TARGETS['neighbourhood']} | "
        f"{keep:.3f} | {mark(keep >= TARGETS['neighbourhood'])} |",
        *_cascade_rows(evaluation),
    ]


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _cascade_rows(evaluation: Mapping[str, Any]) -> list[str]:
    """A target row per test set with a measured cascade: the release as good as it?"""
    rows = []
    for name, entry in evaluation["test_sets"].items():
        if name not in CASCADE_R1:
            continue
        ours = entry["model"]["audio->text"]["512"]["R@1"]
        theirs = CASCADE_R1[name]["audio->text"]
        rows.append(
            f"| as good as the speech-recognition cascade, audio->text R@1 on {name} | "
            f">= {theirs:.3f} | {ours:.3f} | {_mark(ours >= theirs)} |"
        )
    return rows


def render_model_card(
    document: Mapping[str, Any],
    *,
    size_bytes: int,
    stages: Mapping[str, float] | None = None,
    speed: Mapping[str, float] | None = None,
    voices: Mapping[str, Any] | None = None,
) -> str:
    """The model card's Markdown, from a release's ``config.json`` document."""
    meta = document["metadata"]
    evaluation, spoken = meta["eval"], meta["spoken"]
    name, version = meta["release"], meta["version"]
    encoders = document["encoders"]
    perceiver = document["config"]["perceiver"]
    train_sources = list(dict.fromkeys(_source_key(s) for s in spoken["train_sources"]))
    test_sources = {n: [_source_key(s) for s in srcs] for n, srcs in spoken["test_sets"].items()}
    lines = [
        f"# {name} {version}: audio and text in one vector space",
        "",
        "Trained adapters, Perceiver Resampler and alignment head for frozen Whisper-base "
        "(speech) and all-MiniLM-L6-v2 (text) encoders: speech and the sentence it says land "
        "near each other in one 512-d Matryoshka space (any prefix of 64, 128 or 256 dims is "
        f"an embedding too). {size_bytes / 2**20:.1f} MiB of float16 weights; the encoders are "
        "not included.",
        "",
        "```python",
        "from model import Embedder",
        "",
        f'embedder = Embedder.from_pretrained("{name}")  # also what `mmembed serve` loads',
        "```",
        "",
        "## Encoders it needs",
        "",
        "| modality | hub ID | loaded from |",
        "| --- | --- | --- |",
    ]
    for modality, enc in sorted(encoders.items()):
        lines.append(
            f"| {modality} | `{enc['source']}` | `--{modality}-encoder DIR` / "
            f"`MMEMBED_{modality.upper()}_ENCODER`, else the local Hugging Face cache, "
            "else the hub |"
        )
    lines += [
        "",
        "The checkpoint records a fingerprint of each encoder's weights and refuses others. "
        "The hub's files and the copies in `../shared/models/` (float16 Whisper) both load.",
        "",
        "## Quality",
        "",
        "Retrieval between spoken clips and their sentences on two test sets whose text the "
        "training never read, spoken by espeak-ng voices, variants, speeds and pitches held "
        "out from training (`model/training/spoken.py`, `HELD_OUT_VOICES`). R@k: the share of "
        "queries whose match is among the first k of all the set's candidates.",
        "",
        *_retrieval_rows(evaluation),
        "",
        "Text kept as a text embedding: of each test sentence's 10 nearest sentences under "
        "plain MiniLM (mean-pooled), the share that stay among its 10 nearest under this "
        f"release, over {evaluation['text_neighbourhood']['sentences']} test sentences: "
        f"**{evaluation['text_neighbourhood']['512']:.3f}** at 512 dims, "
        f"{evaluation['text_neighbourhood']['64']:.3f} at 64 (chance: about "
        f"{10 / evaluation['text_neighbourhood']['sentences']:.3f}).",
        "",
        *_targets(evaluation),
        "",
        "The cascade rows are Whisper-base speech recognition (faster-whisper, beam 5) "
        "followed by plain MiniLM on the transcript, run once on these test sets "
        "(`model/training/experiments.md`); the issue's reference for it, about 0.79 "
        "audio->text R@1, was measured on simple read sentences in other voices.",
        "",
        "To measure these figures again without training anything, "
        f"`mmembed eval --recipe model/training/recipes/{meta['release']}.toml` with the "
        "encoder flags speaks the test sets alone and sets each R@1 and neighbourhood "
        "figure beside the one stored in `config.json` (a minute or two on 2 cores).",
        "",
    ]
    if speed:
        lines += [
            "## Speed",
            "",
            f"Text embeddings per second in one process on the machine that made the release "
            f"({speed['threads']} torch threads, batches of {speed['batch_size']}, "
            f"{speed['sentences']} test sentences, PyTorch float32, median of alternating "
            f"passes): **{speed['release_texts_per_s']}** for this release against "
            f"{speed['minilm_texts_per_s']} for plain MiniLM ({speed['ratio']:.2f}x: the "
            "adapter, resampler and head are the difference).",
            "",
        ]
    lines += [
        "## Training data",
        "",
        "| split | sentences | text source | licence |",
        "| --- | --- | --- | --- |",
    ]
    n_train = spoken.get("n_train") or "all"
    train_rows = [SOURCES.get(key, (key, "see the source")) for key in train_sources]
    lines.append(
        f"| train + val (drawn from the sources together) | {n_train} + {spoken['n_val']} | "
        f"{'; '.join(w for w, _ in train_rows)} | {'; '.join(lic for _, lic in train_rows)} |"
    )
    for test, keys in test_sources.items():
        for key in keys:
            what, licence = SOURCES.get(key, (key, "see the source"))
            lines.append(f"| test-{test} | {spoken['n_test']} | {what} | {licence} |")
    lines += [
        "",
        f"Speech: espeak-ng (GPL-3.0-or-later), 16 kHz; each training sentence spoken "
        f"{_times(spoken['train_variants'])} by a random training voice, speed and pitch, "
        f"with background noise on {spoken['noise_prob']:.0%} of clips. A training sentence "
        "that shares any 5-word run with a test sentence was dropped.",
    ]
    if voices:
        lines += [
            "",
            f"Training voices: {voices['train']}.",
            "",
            f"Held-out (test) voices: {voices['held_out']} (speeds and pitches on both sides "
            "of the training ranges).",
        ]
    lines += [
        "",
        "## Recipe",
        "",
        "Architecture: a Perceiver Resampler "
        f"({perceiver['num_latents']} latents x {perceiver['dim']}, {perceiver['depth']} "
        "layers) between per-modality adapters and the alignment head."
        + _blend_sentence(document["config"].get("blend"))
        + " The release is one "
        f"command, `mmembed train --recipe model/training/recipes/{meta['release']}.toml` "
        "with the encoder flags; the whole file:",
        "",
        "```toml",
        meta["recipe"].rstrip(),
        "```",
        "",
    ]
    if stages:
        lines += ["## Time each stage took", "", "| stage | minutes |", "| --- | --- |"]
        lines += [f"| {stage} | {seconds / 60:.1f} |" for stage, seconds in stages.items()]
        lines += ["", "On 2 CPU cores (no GPU), with other work on the machine at times.", ""]
    lines += [
        "## Limits",
        "",
        "- English only, and only synthetic speech: every clip it learnt from was espeak-ng. "
        "Real voices, accents, far-field audio and music are untested and likely worse.",
        "- Short sentences (4 to 25 words) and clips of a few seconds; long recordings are "
        "embedded whole (up to 30 s, Whisper's window) and lose detail.",
        "- No images: the release has no image adapter (`--preset base` with CLIP is the "
        "image path, untrained).",
        "- The test sets are small (500 sentences each); differences of about 0.03 R@1 are "
        "within their noise.",
        "",
    ]
    return "\n".join(lines)


def _blend_sentence(blend: Mapping[str, Any] | None) -> str:
    if not blend:
        return ""
    perceiver = blend["perceiver"]
    return (
        f" The last {blend['dims']} of the 512 dims come from a second branch "
        f"(`model/blend.py`): its own adapter and resampler ({perceiver['num_latents']} "
        f"latents x {perceiver['dim']}, {perceiver['depth']} layers) trained to land speech "
        "on MiniLM's own sentence embedding, turned onto its principal axes and locked. "
        f"A text vector gives {blend['text_weight']:.0%} of its weight to those dims, a "
        f"speech vector {blend['media_weight']:.0%}; prefixes of up to "
        f"{512 - blend['dims']} dims are the first branch's alone."
    )


def write_model_card(
    release_dir: str | Path,
    *,
    stages: Mapping[str, float] | None = None,
    speed: Mapping[str, float] | None = None,
) -> Path:
    """Write ``README.md`` into ``release_dir`` from its ``config.json``; returns the path."""
    from model.training.spoken import HELD_OUT_VOICES, TRAIN_VOICES

    release_dir = Path(release_dir)
    document = json.loads((release_dir / CONFIG_FILE).read_text())
    size = sum((release_dir / f).stat().st_size for f in (CONFIG_FILE, WEIGHTS_FILE))
    voices = {
        "train": _voice_names(TRAIN_VOICES),
        "held_out": _voice_names(HELD_OUT_VOICES),
    }
    card = render_model_card(document, size_bytes=size, stages=stages, speed=speed, voices=voices)
    path = release_dir / "README.md"
    path.write_text(card)
    return path


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _ranges(values: Sequence[int]) -> str:
    """``[112, 114, ..., 128, 202, ..., 220]`` -> ``"112-128 and 202-220"`` (runs of one step)."""
    values = sorted(values)
    step = min((b - a for a, b in zip(values, values[1:], strict=False)), default=1)
    runs: list[list[int]] = []
    for v in values:
        if runs and v - runs[-1][-1] == step:
            runs[-1].append(v)
        else:
            runs.append([v])
    return " and ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _voice_names(pool: Any) -> str:
    """One line for a :class:`~model.training.spoken.VoicePool`."""
    return (
        f"{', '.join(pool.languages)}; variants {', '.join(v or 'none' for v in pool.variants)}; "
        f"speeds {_ranges(pool.speeds)} wpm; pitches {_ranges(pool.pitches)}"
    )


def release_test_sentences(test_sets: Iterable[str], root: str | Path) -> list[str]:
    """The distinct sentences of a release's spoken test sets (for :func:`text_speed`)."""
    sentences: list[str] = []
    for name in test_sets:
        manifest = Path(root) / "spoken" / f"test-{name}.jsonl"
        for line in manifest.read_text(encoding="utf-8").splitlines():
            sentences.append(json.loads(line)["text"])
    return list(dict.fromkeys(sentences))

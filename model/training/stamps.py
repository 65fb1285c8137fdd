"""A third unseen picture test set: Tux Paint's stamps, photographs and drawings with a
one-line description, some read aloud by a person.

Debian's ``tuxpaint-stamps-default`` (GPL-2) holds about 950 stamps, each a PNG or
SVG beside a ``.txt`` whose first line is its English description ("A little
rabbit.", "Sweet yellow corn."), and for 66 of them a recording of a person
reading it (``NAME_desc.ogg``). Most are photographic cut-outs, unlike the clip
art and emoji that training reads, and no release trains on them: this set
measures what a user's own pictures get, and speech->image with a real voice.

The set keeps one stamp per description (the first by path) and leaves out any
whose description equals a training or validation caption of ``data/pictures``,
as :func:`model.training.pictures.split_pictures` does for its own test sets.
Captions are the description as written. Every caption is also spoken by the
held-out voices (``spoken-test_stamps.jsonl``); the human recordings of the kept
stamps (the package's OGG files) are listed in ``spoken-test_stamps-voice.jsonl``.

    python -m model.training.stamps --release model/weights/image-audio-text-v8 \\
        --audio-encoder ../shared/models/whisper-base-encoder \\
        --text-encoder ../shared/models/all-MiniLM-L6-v2

builds ``data/stamps`` (kept where made) and prints image<->text R@1/R@5 at 512
and 64 dims beside the label cascade's, and speech->image and speech->text beside
the typed caption and the speech-recognition cascade.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.constants import SAMPLE_RATE
from model.release import DEFAULT_RELEASE
from model.tokens import masked_mean
from model.training.pictures import Picture, normalise, read_manifest, speak_test_captions

log = logging.getLogger(__name__)

STAMPS = Path("/usr/share/tuxpaint/stamps")
SPLIT = "test_stamps"
VOICE_SPLIT = f"{SPLIT}-voice"
LICENCE = "GPL-2 (Debian tuxpaint-stamps-default)"


def description(text_file: Path) -> str:
    """The stamp's English description: the first line of its ``.txt``, or ""."""
    lines = text_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def _png_of(text_file: Path, stamps: Path, out: Path) -> Path | None:
    """The stamp's PNG, rendering its SVG into ``out/rendered`` where it has no PNG."""
    png = text_file.with_suffix(".png")
    if png.is_file():
        return png
    svg = text_file.with_suffix(".svg")
    if not svg.is_file():
        return None
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        raise RuntimeError("rendering stamps needs rsvg-convert (apt-get install librsvg2-bin)")
    target = out / "rendered" / text_file.relative_to(stamps).with_suffix(".png")
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.png")
        subprocess.run(
            [rsvg, "-w", "256", "-h", "256", "--keep-aspect-ratio", "-o", str(tmp), str(svg)],
            check=True,
            capture_output=True,
        )
        tmp.replace(target)
    return target


def stamp_pictures(stamps: Path, out: Path, exclude: set[str]) -> list[tuple[Picture, Path]]:
    """One picture per description, the first stamp by path, each with its ``.txt``;
    descriptions in ``exclude`` (normalised) and stamps with no image or no description
    are left out."""
    found: list[tuple[Picture, Path]] = []
    seen: set[str] = set(exclude)
    for text_file in sorted(stamps.rglob("*.txt")):
        caption = description(text_file)
        key = normalise(caption)
        if not key or key in seen:
            continue
        image = _png_of(text_file, stamps, out)
        if image is None:
            continue
        seen.add(key)
        family = str(text_file.parent.relative_to(stamps))
        where = str(image.relative_to(out) if image.is_relative_to(out) else image)
        found.append((Picture(where, caption, "tuxpaint", family, SPLIT), text_file))
    return found


def build_stamps(
    out: Path, *, stamps: Path = STAMPS, pictures: Path = Path("data/pictures"), seed: int = 0
) -> dict[str, int]:
    """The set's manifest, its captions spoken by the held-out voices, and the human
    recordings' list, under ``out``: {what: count}."""
    if not stamps.is_dir():
        raise FileNotFoundError(
            f"no Tux Paint stamps at {stamps}: "
            "apt-get install --no-install-recommends tuxpaint-stamps-default"
        )
    trained = {
        normalise(r["text"]) for r in read_manifest(pictures) if r["split"] in ("train", "val")
    }
    out.mkdir(parents=True, exist_ok=True)
    found = stamp_pictures(stamps, out, trained)
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as f:
        for picture, _ in found:
            f.write(json.dumps({**asdict(picture), "licence": LICENCE}, ensure_ascii=False) + "\n")
    speak_test_captions(out, seed=seed)
    voice = 0
    with (out / f"spoken-{VOICE_SPLIT}.jsonl").open("w", encoding="utf-8") as f:
        for picture, text_file in found:
            ogg = text_file.with_name(f"{text_file.stem}_desc.ogg")
            if ogg.is_file():
                row = {"audio": str(ogg), "text": picture.text, "voice": "human"}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                voice += 1
    return {"stamps": len(found), "human clips": voice}


def served_audio(model: Any, clips: Sequence[Any], batch_size: int = 16) -> dict[str, Any]:
    """What a server returns for each clip (``.path``): its vector (N, 512), with the
    transcript mixed in where the model has a decoder, and the transcript ("" where
    none)."""
    from model.training.data import load_audio

    vectors, heard = [], []
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            audio = [load_audio(c.path) for c in clips[start : start + batch_size]]
            out = model(
                "audio",
                model.preprocess("audio", audio, sampling_rate=SAMPLE_RATE),
                with_llm_tokens=False,
            )
            vectors.append(out.embedding.float().cpu().numpy())
            heard += out.transcripts or [""] * len(audio)
    return {"vectors": np.concatenate(vectors), "transcripts": heard}


def minilm(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Plain MiniLM sentence embeddings (mean of the tokens, unit rows), as a user of the
    text encoder alone would compute them; an empty text gets a zero row."""
    out = np.zeros((len(texts), model.encoder("text").hidden_size), np.float32)
    said = [i for i, t in enumerate(texts) if t.strip()]
    with torch.inference_mode():
        for start in range(0, len(said), 64):
            rows = said[start : start + 64]
            encoded = model.encode("text", model.preprocess("text", [texts[i] for i in rows]))
            mean = masked_mean(encoded.tokens.float(), encoded.mask)
            out[rows] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


def cascade_metrics(
    model: Any, transcripts: Sequence[str], texts: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """R@k of speech recognition + MiniLM: each transcript in plain MiniLM against
    ``texts`` (:func:`minilm` rows); clip i says text ``targets[i]``. A clip heard as
    nothing is a miss, not a tie with every text."""
    scores = minilm(model, transcripts) @ texts.T
    nothing = np.array([not t.strip() for t in transcripts], dtype=bool)
    scores[nothing, targets[nothing]] = -2.0
    return text_ranks(scores, targets)


def text_ranks(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """R@k and MRR of queries against texts, query i's text being column ``targets[i]``."""
    from model.training.evaluate import first_relevant_ranks, metrics_from_ranks

    return metrics_from_ranks(first_relevant_ranks(scores, targets, np.arange(scores.shape[1])))


def evaluate_stamps(model: Any, out: Path) -> dict[str, Any]:
    """image<->text of ``model`` and the label cascade on the set; and for the captions
    spoken by the held-out voices (``audio``) and by people (``voice``): speech->image
    beside the typed caption on the same gallery, and speech->text among the set's
    captions beside Whisper's transcript embedded with MiniLM (the speech-recognition
    cascade; the model's own decoder, so only where it has one). Features are cached
    in ``out/features``."""
    from model.matryoshka import truncate
    from model.training.data import read_jsonl
    from model.training.evaluate import embed_cached
    from model.training.features import FeatureCache, cache_pairs, text_item_id
    from model.training.image_branch import distinct, load_cached, report_split
    from model.training.image_release import spoken_to_image

    features = out / "features"
    cache_pairs(model, features, read_jsonl(out / "manifest.jsonl").pairs, batch_size=16)
    cache = {m: FeatureCache.for_model(str(features), model, m) for m in ("image", "text")}
    data = load_cached(read_manifest(out), cache["image"], cache["text"])
    ids = [text_item_id(t) for t in data.texts]
    text_vectors = embed_cached(model, "text", cache["text"], ids, torch.device("cpu"))
    entry = report_split(model, data, text_vectors)
    rows, _ = distinct(data)  # one row per caption, in the order captions first appear
    captions = [data.texts[i] for i in rows]
    caption_vectors = text_vectors[rows]
    number = {c: i for i, c in enumerate(captions)}
    plain = minilm(model, captions)
    for split, name in ((SPLIT, "audio"), (VOICE_SPLIT, "voice")):
        spoken = [p for p in read_jsonl(out / f"spoken-{split}.jsonl").pairs if p.text in number]
        served = served_audio(model, spoken)
        # every clip is kept (``spoken`` holds only the set's captions), so the served
        # vectors are the kept clips' in order
        entry[f"{name}->image"] = spoken_to_image(
            model, data, spoken, text_vectors, lambda kept, v=served["vectors"]: v
        )
        targets = np.array([number[p.text] for p in spoken])
        found: dict[str, Any] = {"clips": len(spoken)}
        for d in (512, 64):
            scores = truncate(served["vectors"], d) @ truncate(caption_vectors, d).T
            found[str(d)] = text_ranks(scores, targets)
        if model.transcriber is not None:
            found["cascade"] = cascade_metrics(model, served["transcripts"], plain, targets)
            found["heard"] = sum(bool(t.strip()) for t in served["transcripts"])
        entry[f"{name}->text"] = found
    return entry


def table(entry: dict[str, Any]) -> str:
    """The figures as two Markdown tables: pictures (the model at 512 and 64 dims, the
    label cascade), then speech (to the picture and to the caption, at 512 and 64 dims,
    beside the typed caption and the transcript cascade)."""

    def two(by: dict[str, Any]) -> str:
        return f"{by['R@1']:.3f} / {by['R@5']:.3f}"

    m, c = entry["model"], entry["cascade"]
    lines = [
        f"{entry['captions']} stamps, R@1 / R@5",
        "",
        "| | image->text | text->image |",
        "| --- | --- | --- |",
        *(
            f"| model, {d} dims | {two(m['image->text'][d])} | {two(m['text->image'][d])} |"
            for d in ("512", "64")
        ),
        f"| label cascade | {two(c['image->text'])} | {two(c['text->image'])} |",
        "",
        "| spoken by | clips | ->image, 512 | ->image, 64 | typed ->image, 512 "
        "| ->text, 512 | ->text, 64 | transcript + MiniLM ->text |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, who in (("audio", "held-out espeak voices"), ("voice", "people")):
        image, text = entry[f"{name}->image"], entry[f"{name}->text"]
        cascade = two(text["cascade"]) if "cascade" in text else "-"
        lines.append(
            f"| {who} | {image['clips']} | {two(image['512']['audio'])} "
            f"| {two(image['64']['audio'])} | {two(image['512']['text'])} "
            f"| {two(text['512'])} | {two(text['64'])} | {cascade} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--release", default=DEFAULT_RELEASE, help="a release name or folder (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=Path("data/stamps"))
    parser.add_argument("--stamps", type=Path, default=STAMPS)
    parser.add_argument(
        "--pictures", type=Path, default=Path("data/pictures"), help="the training pictures"
    )
    parser.add_argument("--audio-encoder", help="folder (default: the release's source)")
    parser.add_argument("--text-encoder", help="folder (default: the release's source)")
    parser.add_argument(
        "--min-decode-seconds",
        type=float,
        help="decode short clips from this much audio (TranscriptConfig.min_decode_seconds; "
        "default: the release's)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from model.embedder import Embedder

    counts = build_stamps(args.out, stamps=args.stamps, pictures=args.pictures, seed=args.seed)
    log.info("stamps: %s", counts)
    sources = {m: s for m, s in (("audio", args.audio_encoder), ("text", args.text_encoder)) if s}
    model = Embedder.from_pretrained(args.release, encoders=sources).model
    if args.min_decode_seconds is not None:
        if model.config.transcript is None:
            parser.error(f"{args.release} decodes no transcripts")
        transcript = dataclasses.replace(
            model.config.transcript, min_decode_seconds=args.min_decode_seconds
        )
        model.config = dataclasses.replace(model.config, transcript=transcript)
    entry = evaluate_stamps(model, args.out)
    if args.json:
        args.json.write_text(json.dumps(entry, indent=2) + "\n")
    print(table(entry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

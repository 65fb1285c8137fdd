"""The transcript release in one recipe: a released model plus Whisper's own transcript
of each clip mixed into its audio vector (model/transcripts.py). Nothing trains: the
two mixing weights and the no-speech threshold are chosen on the validation clips::

    [transcript_release]
    name = "image-audio-text-v3"
    version = "3.0.0"
    base = "model/weights/image-audio-text-v2"                  # weights it keeps
    base_recipe = "model/training/recipes/audio-text-v1.toml"   # its spoken clips
    image_recipe = "model/training/recipes/image-audio-text-v2.toml"  # its pictures
    runs = "runs/transcript-release"    # vectors of every clip, the evaluation
    out = "model/weights/image-audio-text-v3"
    decoder = "openai/whisper-base"     # recorded in the release; found like an encoder
    weights = [0.0, 0.1, 0.2, 0.3]      # candidates for each part's transcript weight
    no_speech = [0.6, 1.0]              # candidate no-speech thresholds

``mmembed train --recipe FILE`` builds the clips it needs, then per split (validation,
the spoken test sets, the spoken captions of the test pictures) the clips' speech
vectors, transcripts and the transcripts' text vectors (cached under ``runs``, so a
rerun resumes), chooses the weights, evaluates and exports the folder with its card.
``mmembed eval --recipe FILE`` measures the exported release again from its clips,
through the same path the server embeds with.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from model.config import TRANSCRIPTS, TranscriptConfig
from model.matryoshka import check_dims, truncate
from model.training.evaluate import first_relevant_ranks, metrics_from_ranks, retrieval_report
from model.training.prefix_rotation import RotationSpec
from model.training.recordings import SELECTION as PEOPLE_SELECTION
from model.training.recordings import TEST as PEOPLE_TEST
from model.training.recordings import write_manifests
from model.transcripts import build_transcriber

log = logging.getLogger(__name__)

VAL = "val"
TRAIN = "train"
SPOKEN_TESTS = ("test-devil", "test-wordnet")
PICTURE_TESTS = ("test_clipart", "test_emoji")
CHECK_CLIPS = 16


# Training clips decoded and cached together by served_training_vectors.
CLIPS_PER_CHUNK = 500


@dataclass(frozen=True)
class TranscriptRecipe:
    name: str
    version: str
    base: str
    base_recipe: str
    image_recipe: str
    runs: str
    out: str
    decoder: str = "openai/whisper-base"
    weights: tuple[float, ...] = tuple(i / 10 for i in range(11))
    no_speech: tuple[float, ...] = (0.6, 1.0)
    batch_size: int = 32
    rotation: RotationSpec | None = None
    unrotated: str = ""
    # earlier releases that are this model under another prefix rotation or none, or
    # another mixing (folders beside ``out``): their stores move by undoing theirs and
    # applying this one's (audio only where they mix as this one does)
    turned: tuple[str, ...] = ()
    # a release folder whose prefix rotation this one keeps, instead of fitting one in
    # [rotation] (it must be listed in ``turned``, which checks it is this model)
    rotation_from: str = ""
    # How the mixing is chosen on the validation clips: mean R@1 over ``choose_dims``,
    # under the prefix rotation of the release folder ``choose_under`` (none: the
    # branches' layout), searched among the first ``choose_pool`` training clips of the
    # rotation's seeded draw and their texts too (300 clips alone saturate near 0.95).
    choose_dims: tuple[int, ...] = (512,)
    choose_under: str = ""
    choose_pool: int = 0
    # TranscriptConfig.min_decode_seconds: a shorter clip is decoded from this much
    # audio, the silence after it included (0: from its own frames, as up to 6.0.0)
    min_decode_seconds: float = 0.0
    # Where Debian's asterisk-core-sounds-en(-wav) are installed ("/"; empty: not used):
    # people's recordings (model/training/recordings.py). Their selection half bounds the
    # choice: the mixing must hear them at least as well as speech recognition + MiniLM
    # (audio->text R@1, 512 dims) before the pool's score counts; their test half is
    # reported beside the spoken test sets.
    people_root: str = ""
    # A release folder whose mixing (weights, no-speech threshold, decode window) this one
    # keeps instead of choosing one (it must be listed in ``turned``; ``weights``,
    # ``no_speech`` and the choose_* keys are then unused, and no training clip is decoded)
    mixing_from: str = ""
    # The transcript prefix (TranscriptConfig.prefix_dims / prefix_weight): after the
    # rotation, the first ``prefix_dims`` of a heard clip's vector turn towards its
    # transcript's by a weight chosen from ``prefix_weights`` (:func:`choose_prefix`), on
    # the validation clips searched among the first ``prefix_pool`` training sentences
    # too, and on people's selection recordings. 0: no prefix, as up to 7.0.0.
    prefix_dims: int = 0
    prefix_weights: tuple[float, ...] = tuple(i / 10 for i in range(6))
    prefix_pool: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.choose_dims:
            raise ValueError("choose_dims names no dims")
        for d in self.choose_dims:
            check_dims(d)
        if self.choose_pool < 0:
            raise ValueError(f"choose_pool must be >= 0; got {self.choose_pool}")
        TranscriptConfig(min_decode_seconds=self.min_decode_seconds)  # its range check
        if self.rotation_from and self.rotation is not None:
            raise ValueError(
                "a release keeps rotation_from's rotation or fits [rotation], not both"
            )
        if self.rotation_from and self.rotation_from not in self.turned:
            raise ValueError(f"rotation_from {self.rotation_from} must be listed in turned")
        if self.mixing_from and self.mixing_from not in self.turned:
            raise ValueError(f"mixing_from {self.mixing_from} must be listed in turned")
        if self.mixing_from and self.choose_pool:
            raise ValueError("a release keeps mixing_from's mixing or chooses one, not both")
        if self.prefix_pool < 0:
            raise ValueError(f"prefix_pool must be >= 0; got {self.prefix_pool}")
        if self.prefix_dims:
            check_dims(self.prefix_dims)
            if not self.prefix_weights:
                raise ValueError("prefix_weights names no weight")
            for w in self.prefix_weights:
                TranscriptConfig(prefix_dims=self.prefix_dims, prefix_weight=w)  # range check


def is_transcript_recipe(path: str | Path) -> bool:
    """Whether a recipe file is a transcript release's (has ``[transcript_release]``)."""
    try:
        return "transcript_release" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def read_transcript_recipe(path: str | Path) -> TranscriptRecipe:
    """Parse ``[transcript_release]``; unknown keys are an error naming the file."""
    text = Path(path).read_text()
    document = tomllib.loads(text)
    table = dict(document.get("transcript_release") or {})
    known = {f.name for f in dataclasses.fields(TranscriptRecipe)} - {"source", "rotation"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys in [transcript_release]: {unknown}")
    for key in ("weights", "no_speech", "prefix_weights"):
        if key in table:
            table[key] = tuple(float(v) for v in table[key])
    if "turned" in table:
        table["turned"] = tuple(str(v) for v in table["turned"])
    if "choose_dims" in table:
        table["choose_dims"] = tuple(int(d) for d in table["choose_dims"])
    if "rotation" in document:
        rotation = dict(document["rotation"])
        unknown = sorted(set(rotation) - {f.name for f in dataclasses.fields(RotationSpec)})
        if unknown:
            raise ValueError(f"{path}: unknown keys in [rotation]: {unknown}")
        if "dims" in rotation:
            rotation["dims"] = tuple(int(d) for d in rotation["dims"])
        try:
            table["rotation"] = RotationSpec(**rotation)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: [rotation] {exc}") from exc
    try:
        return TranscriptRecipe(**table, source=text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: [transcript_release] {exc}") from exc


# ----------------------------------------------------------------------------- data


def base_release_recipe(recipe: TranscriptRecipe, sources: dict[str, str]) -> Any:
    """The audio-text recipe the spoken clips come from, with the encoder sources."""
    from model.training.pipeline import read_release_recipe

    return read_release_recipe(
        recipe.base_recipe,
        {f"model.encoders.{m}": s for m, s in sources.items() if m in ("audio", "text")},
    )


def build_clips(recipe: TranscriptRecipe, sources: dict[str, str]) -> dict[str, Path]:
    """The manifests of every split the release is chosen and measured on, building
    the clips that are missing: {split: manifest}."""
    from model.training.image_release import build_pictures, read_image_recipe
    from model.training.spoken import build_spoken_dataset

    base = base_release_recipe(recipe, sources)
    spoken = Path(base.release.root) / "spoken"
    trains = recipe.rotation is not None or recipe.choose_pool > 0
    wanted = {VAL, *SPOKEN_TESTS} | ({TRAIN} if trains else set())
    if not all((spoken / f"{s}.jsonl").is_file() for s in wanted):
        build_spoken_dataset(spoken, base.spoken, workers=base.workers, only=wanted.__contains__)
    images = read_image_recipe(recipe.image_recipe)
    build_pictures(images)
    root = Path(images.release.root)
    manifests = {split: spoken / f"{split}.jsonl" for split in (VAL, *SPOKEN_TESTS)}
    manifests |= {split: root / f"spoken-{split}.jsonl" for split in PICTURE_TESTS}
    if recipe.people_root:
        manifests |= write_manifests(recipe.people_root, Path(recipe.runs) / "people")
    return manifests


def read_clips(manifest: Path) -> list[dict[str, Any]]:
    """The rows of a spoken manifest, audio paths made absolute."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for row in rows:
        row["audio"] = str(manifest.parent / row["audio"])
    return rows


# -------------------------------------------------------------------------- vectors


def with_transcript(model: Any, config: TranscriptConfig) -> Any:
    """``model`` (a loaded release) with a transcript decoder and ``config``'s mixing."""
    model.transcriber = build_transcriber(config)
    model.config = dataclasses.replace(model.config, transcript=config)
    return model


def clip_vectors(model: Any, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """Per clip: its speech vector (no transcript), what Whisper heard and the no-speech
    probability, and the heard text's vector (zero when nothing was decoded). Vectors
    are in the branches' own layout (before any prefix rotation), where they are mixed.

    A clip of several 30 s windows gets its windows' words and their highest no-speech
    probability, where the model drops each window over the threshold on its own; the
    release's clips are all shorter than 30 s, so the two agree there (and
    :func:`check_export` compares them)."""
    speech, heard, no_speech = [], [], []
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc="clips", unit="batch"):
            chunk = rows[start : start + batch_size]
            clips = [sf.read(r["audio"], dtype="float32") for r in chunk]
            if len({rate for _, rate in clips}) != 1:
                raise ValueError("clips of one manifest must share a sampling rate")
            batch = model.preprocess("audio", [c for c, _ in clips], sampling_rate=clips[0][1])
            encoded = model.encode("audio", batch)
            out = model.forward_features(
                "audio", encoded.tokens, encoded.mask, with_llm_tokens=False
            )
            speech.append(model.unrotated(out.embedding).float().cpu())
            for windows in model.hear(encoded, batch):
                heard.append(" ".join(t for t, _ in windows if t))
                no_speech.append(max(p for _, p in windows))
        text, _ = model.transcript_vectors(heard)
    return {
        "speech": torch.cat(speech),
        "text": text,
        "heard": heard,
        "no_speech": torch.tensor(no_speech),
        "sentences": [r["text"] for r in rows],
    }


def cached_vectors(
    model: Any, recipe: TranscriptRecipe, split: str, manifest: Path
) -> dict[str, Any]:
    """:func:`clip_vectors` of a split, from ``runs/vectors-SPLIT.pt`` when there."""
    path = Path(recipe.runs) / f"vectors-{split}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    log.info("speech vectors and transcripts of %s (%s)", split, manifest)
    found = clip_vectors(model, read_clips(manifest), recipe.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(found, path)
    return found


def mixed(model: Any, found: dict[str, Any], config: TranscriptConfig) -> torch.Tensor:
    """The clips' vectors as a model with ``config`` embeds them (mixed, then rotated)."""
    heard = torch.tensor([bool(t) for t in found["heard"]])
    heard &= found["no_speech"] <= config.no_speech_threshold
    return model.transcript_mixed(found["speech"].detach(), found["text"].detach(), heard, config)


def sentence_vectors(model: Any, sentences: Sequence[str]) -> np.ndarray:
    """The text vectors of the sentences (the text path: unchanged by transcripts)."""
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(sentences), 64):
            batch = model.preprocess("text", list(sentences[start : start + 64]))
            vectors.append(model("text", batch, with_llm_tokens=False).embedding.float().cpu())
    return torch.cat(vectors).numpy()


def groups_of(sentences: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(group of each clip, the distinct sentences in group order)."""
    distinct = list(dict.fromkeys(sentences))
    index = {s: i for i, s in enumerate(distinct)}
    return np.array([index[s] for s in sentences]), distinct


def audio_text(vectors: np.ndarray, sentences: Sequence[str], texts: np.ndarray) -> dict[str, Any]:
    groups, distinct = groups_of(sentences)
    return retrieval_report(vectors, texts, groups, np.arange(len(distinct)), media_name="audio")


def cascade_report(model: Any, found: dict[str, Any]) -> dict[str, Any]:
    """Speech recognition + MiniLM on the clips of ``found`` (:func:`clip_vectors`): each
    transcript, as decoded, against the distinct sentences, both in plain MiniLM;
    audio->text R@k, a clip heard as nothing being a miss."""
    from model.training.stamps import cascade_metrics, minilm

    groups, distinct = groups_of(found["sentences"])
    return cascade_metrics(model, found["heard"], minilm(model, distinct), groups)


def people_bar(model: Any, found: dict[str, Any]) -> dict[str, Any]:
    """What :func:`choose` needs of people's selection recordings: their clips, their
    sentences' vectors, and the cascade's audio->text R@1 they must reach."""
    texts = sentence_vectors(model, groups_of(found["sentences"])[1])
    return {"found": found, "texts": texts, "cascade": cascade_report(model, found)["R@1"]}


def mean_r1(report: dict[str, Any], dims: str = "512") -> float:
    return (report["audio->text"][dims]["R@1"] + report["text->audio"][dims]["R@1"]) / 2


# ------------------------------------------------------------------------- choosing


def choose(
    model: Any,
    recipe: TranscriptRecipe,
    val: dict[str, Any],
    texts: np.ndarray,
    pool: dict[str, Any] | None = None,
    pool_texts: np.ndarray | None = None,
    people: dict[str, Any] | None = None,
) -> tuple[TranscriptConfig, dict[str, Any]]:
    """The weights and threshold with the best mean R@1 of the validation clips (both
    directions, averaged over ``recipe.choose_dims``, under ``recipe.choose_under``'s
    rotation if named); ties go to the smaller transcript weights. With ``people``
    (:func:`people_bar`), a mixing must first find people's recordings' sentences
    (audio->text R@1, 512 dims) as often as the cascade does: below that, the higher
    R@1 there wins; at or above it, the validation score decides.

    Args:
        val: :func:`clip_vectors` of the validation clips; ``texts`` their distinct
            sentences' vectors (:func:`groups_of` order).
        pool: :func:`clip_vectors` of more clips, mixed like the validation clips, and
            ``pool_texts`` their sentences' vectors (a row each): distractors both ways.
        people: people's selection recordings and the cascade's R@1 on them.
    """
    rotation = chooser_rotation(recipe)
    groups = torch.from_numpy(groups_of(val["sentences"])[0])
    text_rows = torch.from_numpy(texts).float()
    if pool is not None:
        assert pool_texts is not None
        text_rows = torch.cat([text_rows, torch.from_numpy(pool_texts).float()])
    trials, heard_people = [], {}
    for main, locked, threshold in itertools.product(
        recipe.weights, recipe.weights, recipe.no_speech
    ):
        config = TranscriptConfig(
            source=recipe.decoder,
            main_weight=main,
            locked_weight=locked,
            no_speech_threshold=threshold,
            min_decode_seconds=recipe.min_decode_seconds,
        )
        clips = mixed(model, val, config)
        if pool is not None:
            clips = torch.cat([clips, mixed(model, pool, config)])
        scores = [
            pooled_r1(under(clips, rotation), under(text_rows, rotation), groups, d)
            for d in recipe.choose_dims
        ]
        reached = 0.0  # people's R@1, counted up to the cascade's: above it, all tie
        if people is not None:
            found = people["found"]
            report = audio_text(
                mixed(model, found, config).numpy(), found["sentences"], people["texts"]
            )
            r1 = report["audio->text"]["512"]["R@1"]
            heard_people[config] = r1
            reached = min(r1, people["cascade"])
        trials.append((reached, sum(scores) / len(scores), -main - locked, -threshold, config))
    trials.sort(key=lambda t: t[:4], reverse=True)
    best = trials[0][4]
    log.info("chosen on validation: %s (mean R@1 %.3f)", best, trials[0][1])

    def named(c: TranscriptConfig) -> str:
        return f"{c.main_weight:g}/{c.locked_weight:g}/{c.no_speech_threshold:g}"

    grid = {named(c): round(score, 4) for _, score, _, _, c in trials}
    how: dict[str, Any] = {
        "dims": list(recipe.choose_dims),
        "pool": 0 if pool is None else len(pool["sentences"]),
        "under": Path(recipe.choose_under).name if recipe.choose_under else "",
    }
    if people is not None:
        how["people"] = {
            "clips": len(people["found"]["sentences"]),
            "cascade_r1": round(people["cascade"], 4),
            "r1": round(heard_people[best], 4),
            "trials": {named(c): round(r1, 4) for c, r1 in heard_people.items()},
        }
    return best, {"val_mean_r1": round(trials[0][1], 4), **how, "trials": grid}


def kept_mixing(recipe: TranscriptRecipe) -> tuple[TranscriptConfig, dict[str, Any]]:
    """The mixing of ``recipe.mixing_from`` (its weights, threshold and decode window)
    and its record of how it was chosen, naming the release as ``kept_from``.

    Raises:
        ValueError: that release mixes no transcripts, or decodes short clips from
            another window than the recipe's clips were decoded from.
    """
    from model.checkpoint import read_checkpoint_config

    document = read_checkpoint_config(Path(recipe.mixing_from))
    kept = document["config"].get("transcript")
    if not kept:
        raise ValueError(f"mixing_from: {recipe.mixing_from} mixes in no transcripts")
    config = TranscriptConfig(**{**kept, "prefix_dims": 0, "prefix_weight": 0.0})
    if config.min_decode_seconds != recipe.min_decode_seconds:
        raise ValueError(
            f"mixing_from: {recipe.mixing_from} decodes short clips from "
            f"{config.min_decode_seconds:g} s, the recipe from {recipe.min_decode_seconds:g} s"
        )
    meta = document["metadata"]
    record = dict(meta.get("transcript") or {})
    return config, {**record, "kept_from": f"{meta['release']} {meta['version']}"}


def prefix_pool_sentences(recipe: TranscriptRecipe, sources: dict[str, str]) -> list[str]:
    """The first ``recipe.prefix_pool`` training sentences of the base recipe's plan, in a
    seeded draw: distractors for choosing the prefix weight (texts only, so no clip is
    spoken or decoded)."""
    import random

    from model.training.spoken import plan_spoken

    base = base_release_recipe(recipe, sources)
    splits, _ = plan_spoken(Path(base.release.root) / "spoken", base.spoken)
    sentences = list(splits[TRAIN])
    random.Random(0).shuffle(sentences)
    return sentences[: recipe.prefix_pool]


def choose_prefix(
    model: Any,
    recipe: TranscriptRecipe,
    config: TranscriptConfig,
    val: dict[str, Any],
    texts: np.ndarray,
    pool_texts: np.ndarray | None = None,
    people: dict[str, Any] | None = None,
) -> tuple[TranscriptConfig, dict[str, Any]]:
    """The transcript prefix weight for ``config``'s mixing, from ``recipe.prefix_weights``,
    with ``model``'s prefix rotation installed (``texts``, ``pool_texts`` and people's
    ``texts`` are text vectors as served, under that rotation).

    Each weight is scored at 512 and ``recipe.prefix_dims`` dims on two sets, and the
    best mean wins (ties: the smaller weight): the validation clips (audio->text among
    their sentences and ``pool_texts``, text->audio among the clips; R@1 of both averaged)
    and, with ``people`` (:func:`people_bar`), people's selection recordings
    (audio->text R@1). The espeak voices alone would keep the prefix as it is: the
    speech path hears a synthetic voice about as well as its transcript does, and a
    person's voice much worse.
    """
    groups = torch.from_numpy(groups_of(val["sentences"])[0])
    text_rows = torch.from_numpy(texts).float()
    if pool_texts is not None:
        text_rows = torch.cat([text_rows, torch.from_numpy(pool_texts).float()])
    dims = (512, recipe.prefix_dims)
    trials: list[tuple[float, float, TranscriptConfig]] = []
    scores: dict[str, dict[str, float]] = {}
    for weight in recipe.prefix_weights:
        trial = dataclasses.replace(config, prefix_dims=recipe.prefix_dims, prefix_weight=weight)
        clips = mixed(model, val, trial).float()
        val_score = sum(pooled_r1(clips, text_rows, groups, d) for d in dims) / len(dims)
        entry = {"val": round(val_score, 4)}
        score = val_score
        if people is not None:
            found = people["found"]
            report = audio_text(
                mixed(model, found, trial).numpy(), found["sentences"], people["texts"]
            )
            people_score = sum(report["audio->text"][str(d)]["R@1"] for d in dims) / len(dims)
            entry["people"] = round(people_score, 4)
            score = (val_score + people_score) / 2
        scores[f"{weight:g}"] = entry
        trials.append((score, -weight, trial))
    trials.sort(key=lambda t: t[:2], reverse=True)
    best = trials[0][2]
    log.info("transcript prefix chosen: weight %g on %d dims", best.prefix_weight, best.prefix_dims)
    record = {
        "dims": recipe.prefix_dims,
        "weight": best.prefix_weight,
        "score": round(trials[0][0], 4),
        "pool": 0 if pool_texts is None else len(pool_texts),
        "people": people is not None,
        "trials": scores,
    }
    return best, record


def chooser_rotation(recipe: TranscriptRecipe) -> torch.Tensor | None:
    """The prefix rotation of ``recipe.choose_under`` (None when it names none)."""
    if not recipe.choose_under:
        return None
    from model.checkpoint import trainable_weights

    weights = trainable_weights(Path(recipe.choose_under))
    if "prefix_rotation.weight" not in weights:
        raise ValueError(f"choose_under: {recipe.choose_under} has no prefix rotation")
    return weights["prefix_rotation.weight"].float()


def under(vectors: torch.Tensor, rotation: torch.Tensor | None) -> torch.Tensor:
    """``vectors`` turned by ``rotation`` (as they are without one), in float32."""
    return vectors.float() if rotation is None else vectors.float() @ rotation.T


def pooled_r1(clips: torch.Tensor, texts: torch.Tensor, groups: torch.Tensor, dims: int) -> float:
    """Mean of audio->text and text->audio R@1 at ``dims`` of the first ``len(groups)``
    clips, clip i saying text ``groups[i]``; every other row of ``clips`` and ``texts``
    is a distractor (with none, this is :func:`audio_text`'s R@1)."""
    n, k = len(groups), int(groups.max()) + 1
    c, t = truncate(clips, dims), truncate(texts, dims)
    audio_text_hits = ((c[:n] @ t.T).argmax(1) == groups).float().mean()
    owner = torch.cat([groups, torch.full((len(c) - n,), -1)])
    text_audio_hits = (owner[(t[:k] @ c.T).argmax(1)] == torch.arange(k)).float().mean()
    return float(audio_text_hits + text_audio_hits) / 2


# ----------------------------------------------------------------------- evaluation


def evaluate(
    model: Any, config: TranscriptConfig, found: dict[str, dict[str, Any]], images_root: Path
) -> dict[str, Any]:
    """Every spoken test set (the release, its speech path alone, its transcript
    alone, and with a prefix rotation the same vectors without it) and audio->image on
    the test pictures' spoken captions."""
    from model.training.image_release import _splits

    sets = {
        split.removeprefix("test-"): clips_report(model, config, found[split], unrotated=True)
        for split in SPOKEN_TESTS
    }
    pictures = _splits(images_root, model, PICTURE_TESTS)  # the training split may be uncached
    results = {
        "test_sets": sets,
        "audio->image": spoken_to_images(model, config, found, pictures),
    }
    people = {
        split: people_report(model, config, found[split])
        for split in (PEOPLE_TEST, PEOPLE_SELECTION)
        if split in found
    }
    if people:
        results["people"] = people
    if model.prefix_rotation is not None:
        # Every prefix moved: images and the text neighbourhoods are measured again
        # (at 512 dims they are the base's, since the rotation keeps every similarity).
        results["images"] = image_reports(model, pictures)
        sentences = [s for split in SPOKEN_TESTS for s in groups_of(found[split]["sentences"])[1]]
        results["text_neighbourhood"] = text_neighbourhood(model, sentences)
    return results


def clips_report(
    model: Any, config: TranscriptConfig, data: dict[str, Any], *, unrotated: bool = False
) -> dict[str, Any]:
    """One set of clips (:func:`clip_vectors`) against its distinct sentences: the
    release, its speech path alone and its transcript alone; with ``unrotated`` and a
    prefix rotation, also the release's vectors without it."""
    sentences = data["sentences"]
    texts = sentence_vectors(model, groups_of(sentences)[1])
    clips = mixed(model, data, config)
    report = {
        "pairs": len(sentences),
        "model": audio_text(clips.numpy(), sentences, texts),
        "speech_only": audio_text(model.rotated(data["speech"].detach()).numpy(), sentences, texts),
        "transcript_only": audio_text(
            model.rotated(data["text"].detach()).numpy(), sentences, texts
        ),
        "heard": sum(bool(t) for t in data["heard"]),
    }
    if unrotated and model.prefix_rotation is not None:
        report["unrotated"] = audio_text(
            model.unrotated(clips).numpy(),
            sentences,
            model.unrotated(torch.from_numpy(texts)).numpy(),
        )
    return report


def people_report(model: Any, config: TranscriptConfig, found: dict[str, Any]) -> dict[str, Any]:
    """People's recordings (:mod:`model.training.recordings`): :func:`clips_report`, as on
    the spoken test sets, and the speech-recognition cascade beside it."""
    return {**clips_report(model, config, found), "cascade": cascade_report(model, found)}


def image_reports(model: Any, splits: dict[str, Any]) -> dict[str, Any]:
    """image<->text of the model on each test split of the pictures (``splits``: their
    cached features by split; the label cascade beside it), as the image release
    reports them."""
    from model.training.image_branch import report_split

    return {
        split: report_split(
            model, splits[split], sentence_vectors(model, list(splits[split].texts))
        )
        for split in PICTURE_TESTS
    }


def text_neighbourhood(model: Any, sentences: Sequence[str], k: int = 10) -> dict[str, Any]:
    """The share of the text encoder's own top-``k`` neighbourhoods (its mean-pooled
    tokens) that the text vectors keep, at 64 and 512 dims."""
    from model.training.describe_eval import minilm_vectors
    from model.training.evaluate import neighbourhood_recall

    reference = minilm_vectors(model, sentences)
    vectors = sentence_vectors(model, sentences)
    return {
        "sentences": len(sentences),
        "k": k,
        **{str(d): neighbourhood_recall(vectors[:, :d], reference, k) for d in (64, 512)},
    }


def spoken_to_images(
    model: Any, config: TranscriptConfig, found: dict[str, dict[str, Any]], splits: dict[str, Any]
) -> dict[str, Any]:
    """Each spoken caption finding its picture among the split's (one per caption), at
    512 and 64 dims, beside the typed caption on the same gallery (``splits``: the
    pictures' cached features by split)."""
    from model.training.image_branch import embed_images

    out: dict[str, Any] = {}
    for split in PICTURE_TESTS:
        data, spoken = splits[split], found[split]
        first: dict[int, int] = {}
        for i, g in enumerate(data.groups):
            first.setdefault(int(g), i)
        group_of = {data.texts[i]: g for g, i in first.items()}
        keep = [i for i, s in enumerate(spoken["sentences"]) if s in group_of]
        queries = np.array([group_of[spoken["sentences"][i]] for i in keep])
        gallery = embed_images(model, data.tokens[list(first.values())])
        gallery_groups = np.array(list(first))
        clips = mixed(model, spoken, config).numpy()[keep]
        typed = sentence_vectors(model, [spoken["sentences"][i] for i in keep])
        entry: dict[str, Any] = {"clips": len(keep)}
        for d in (512, 64):
            g = truncate(gallery, d)
            entry[str(d)] = {
                who: metrics_from_ranks(
                    first_relevant_ranks(truncate(q, d) @ g.T, queries, gallery_groups)
                )
                for who, q in (("audio", clips), ("text", typed))
            }
        out[split] = entry
    return out


# --------------------------------------------------------------------------- stages


def load_base(recipe: TranscriptRecipe, sources: dict[str, str]) -> tuple[Any, str]:
    """The base release with a transcript decoder (mixing not chosen yet), and the
    base's own weights digest (what stores it filled are stamped with)."""
    from model.checkpoint import load_model

    encoders = {m: s for m, s in sources.items() if m != TRANSCRIPTS}
    model = load_model(recipe.base, encoder_overrides=encoders)
    digest = model.weights_digest()
    decoder = with_decoder(recipe, sources)[TRANSCRIPTS]
    config = TranscriptConfig(source=decoder, min_decode_seconds=recipe.min_decode_seconds)
    return with_transcript(model, config), digest


def with_decoder(recipe: TranscriptRecipe, sources: dict[str, str]) -> dict[str, str]:
    """``sources`` and where the recipe's decoder is found (as a server finds it)."""
    from model.release import resolve_encoders

    return {**sources, **resolve_encoders({TRANSCRIPTS: recipe.decoder}, sources)}


def picture_features(recipe: TranscriptRecipe, model: Any) -> Path:
    """The encoder features of the pictures' validation and test splits, and of the
    training split when a prefix rotation is fitted (cached)."""
    from model.training.data import read_jsonl
    from model.training.features import cache_pairs
    from model.training.image_release import read_image_recipe

    root = Path(read_image_recipe(recipe.image_recipe).release.root)
    needed = [
        q
        for q in read_jsonl(root / "manifest.jsonl").pairs
        if recipe.rotation is not None or q.meta["split"] != TRAIN
    ]
    cache_pairs(model, root / "features", needed, batch_size=16)
    return root


def training_clips(
    model: Any, recipe: TranscriptRecipe, manifest: Path, spec: RotationSpec
) -> dict[str, Any]:
    """:func:`clip_vectors` of the first ``spec.clips`` of the rotation's training
    clips. Decoding is the slow part (about 9 minutes a thousand clips on one core), so
    it is cached in the recipe's ``runs`` folder, ``train-clips/``, a chunk of
    :data:`CLIPS_PER_CHUNK` at a time, and an interrupted run resumes."""
    from model.training.prefix_rotation import drawn_clips

    drawn = drawn_clips(manifest, spec)[: spec.clips]
    rows = [{"audio": str(p.path), "text": p.text} for p in drawn]
    folder = Path(recipe.runs) / "train-clips"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = []
    for start in tqdm(range(0, len(rows), CLIPS_PER_CHUNK), desc="training clips", unit="chunk"):
        path = folder / f"chunk-{start:05d}.pt"
        chunk = rows[start : start + CLIPS_PER_CHUNK]
        found = torch.load(path, weights_only=False) if path.is_file() else None
        if found is None or found["sentences"] != [r["text"] for r in chunk]:
            found = clip_vectors(model, chunk, recipe.batch_size)
            torch.save(found, path)
        chunks.append(found)
    return {
        key: torch.cat([c[key] for c in chunks])
        if key in ("speech", "text", "no_speech")
        else [x for c in chunks for x in c[key]]
        for key in ("speech", "text", "heard", "no_speech", "sentences")
    }


def served_training_vectors(
    model: Any, recipe: TranscriptRecipe, manifest: Path, spec: RotationSpec
) -> torch.Tensor:
    """The first ``spec.clips`` of the rotation's training clips as a server embeds them
    (speech mixed with Whisper's transcript, in the branches' layout), from
    :func:`training_clips`."""
    found = training_clips(model, recipe, manifest, spec)
    return model.unrotated(mixed(model, found, model.config.transcript))


def prefix_rotation_stage(
    model: Any, recipe: TranscriptRecipe, sources: dict[str, str], images_root: Path
) -> dict[str, Any]:
    """Fit the recipe's prefix rotation on spoken training sentences and training
    pictures and install it in ``model``; an earlier run's (``runs/rotation.pt``) is
    loaded instead. Returns how the fit went."""
    from model.training.prefix_rotation import (
        Pairs,
        fit_rotation,
        install_rotation,
        picture_pairs,
        speech_pairs,
        summary,
    )

    spec = recipe.rotation
    assert spec is not None
    path = Path(recipe.runs) / "rotation.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        log.info("the prefix rotation is fitted already (%s)", path)
        install_rotation(model, saved["rotation"])
        return saved["log"]
    root = Path(base_release_recipe(recipe, sources).release.root)
    torch.set_num_threads(spec.threads)
    manifest = root / "spoken" / f"{TRAIN}.jsonl"
    with torch.no_grad():
        fit, held_out = speech_pairs(model, manifest, root / "features", spec)
        if spec.transcripts:
            served = served_training_vectors(model, recipe, manifest, spec)
            cut = spec.clips - spec.held_out
            fit = Pairs(torch.cat([served[:cut], fit.media[cut:]]), fit.text)
            held_out = Pairs(served[cut:], held_out.text)
        pictures = picture_pairs(model, images_root) if spec.image_weight > 0 else None
    rotation, info = fit_rotation(fit, held_out, spec, pictures)
    info["spec"] = dataclasses.asdict(spec)
    info["held_out_by_dims"] = summary(held_out, rotation, spec.dims)
    install_rotation(model, rotation)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"rotation": rotation, "log": info}, path)
    return info


def kept_rotation(model: Any, folder: Path) -> dict[str, Any]:
    """Install the prefix rotation of the release in ``folder`` in ``model``; returns how
    it was fitted (its release's record), naming the release as ``kept_from``."""
    from model.checkpoint import read_checkpoint_config, trainable_weights
    from model.training.prefix_rotation import install_rotation

    weights = trainable_weights(folder)
    meta = read_checkpoint_config(folder).get("metadata", {})
    if "prefix_rotation.weight" not in weights or "prefix_rotation" not in meta:
        raise ValueError(f"rotation_from: {folder} has no prefix rotation")
    install_rotation(model, weights["prefix_rotation.weight"].float())
    return {**meta["prefix_rotation"], "kept_from": f"{meta['release']} {meta['version']}"}


def run_transcript_release(path: str | Path, sources: dict[str, str]) -> dict[str, Any]:
    """Every stage of a transcript release recipe; returns the evaluation.

    Raises:
        RuntimeError: the exported release does not embed clips as they were chosen on.
    """
    recipe = read_transcript_recipe(path)
    log.info("stage 1/5: spoken clips and pictures")
    manifests = build_clips(recipe, sources)
    model, base_digest = load_base(recipe, sources)
    images_root = picture_features(recipe, model)
    log.info("stage 2/5: speech vectors and transcripts of every clip")
    found = {split: cached_vectors(model, recipe, split, m) for split, m in manifests.items()}
    config, choice = mixing_stage(model, recipe, sources, found)
    config = dataclasses.replace(config, source=recipe.decoder)
    model.config = dataclasses.replace(model.config, transcript=config)
    rotation = None
    if recipe.rotation is not None:
        log.info("stage 3/5: the prefix rotation, fitted on training clips and pictures")
        rotation = prefix_rotation_stage(model, recipe, sources, images_root)
    elif recipe.rotation_from:
        log.info("stage 3/5: the prefix rotation of %s, kept", recipe.rotation_from)
        rotation = kept_rotation(model, Path(recipe.rotation_from))
    if recipe.prefix_dims:
        log.info("stage 3/5: the transcript prefix's weight, chosen on validation and people")
        config, choice["prefix"] = prefix_stage(model, recipe, sources, found, config)
        model.config = dataclasses.replace(model.config, transcript=config)
    unrotated_digest = digest_without_rotation(model)  # what stores of the vectors hold
    log.info("stage 4/5: evaluation")
    results = evaluate(model, config, found, images_root)
    runs = Path(recipe.runs)
    (runs / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("stage 5/5: export to %s", recipe.out)
    turn = None if model.prefix_rotation is None else model.prefix_rotation.weight.float()
    turned = turned_releases(recipe, sources, unrotated_digest, config, turn)
    export(recipe, config, results, choice, base_digest, model, rotation, unrotated_digest, turned)
    largest = check_export(recipe, sources, manifests[VAL], found[VAL])
    if largest > 1e-4:
        raise RuntimeError(
            f"the exported release embeds validation clips up to {largest:.2g} away from the "
            "vectors it was chosen on"
        )
    log.info("the exported release embeds clips as chosen (largest difference %.1e)", largest)
    return results


def mixing_stage(
    model: Any, recipe: TranscriptRecipe, sources: dict[str, str], found: dict[str, Any]
) -> tuple[TranscriptConfig, dict[str, Any]]:
    """The mixing and its record: ``recipe.mixing_from``'s, or chosen on the validation
    clips (in a pool of training clips, bound by people's selection half, where the
    recipe says so)."""
    if recipe.mixing_from:
        log.info("stage 3/5: the mixing of %s, kept", recipe.mixing_from)
        return kept_mixing(recipe)
    log.info("stage 3/5: the mixing, chosen on validation")
    val_texts = sentence_vectors(model, groups_of(found[VAL]["sentences"])[1])
    people = people_bar(model, found[PEOPLE_SELECTION]) if recipe.people_root else None
    pool, pool_texts = None, None
    if recipe.choose_pool:
        root = Path(base_release_recipe(recipe, sources).release.root)
        draw = RotationSpec(clips=recipe.choose_pool, held_out=1)  # the rotation's draw
        pool = training_clips(model, recipe, root / "spoken" / f"{TRAIN}.jsonl", draw)
        pool_texts = sentence_vectors(model, pool["sentences"])
    return choose(model, recipe, found[VAL], val_texts, pool, pool_texts, people)


def prefix_stage(
    model: Any,
    recipe: TranscriptRecipe,
    sources: dict[str, str],
    found: dict[str, Any],
    config: TranscriptConfig,
) -> tuple[TranscriptConfig, dict[str, Any]]:
    """``config`` with its transcript prefix weight chosen (:func:`choose_prefix`), and the
    record of the choice; ``model`` has its prefix rotation already, and every text is
    embedded under it, as served."""
    texts = sentence_vectors(model, groups_of(found[VAL]["sentences"])[1])
    people = people_bar(model, found[PEOPLE_SELECTION]) if recipe.people_root else None
    pool = None
    if recipe.prefix_pool:
        pool = sentence_vectors(model, prefix_pool_sentences(recipe, sources))
    return choose_prefix(model, recipe, config, found[VAL], texts, pool, people)


def digest_without_rotation(model: Any) -> str:
    """``model``'s weights digest as if it had no prefix rotation: its mixing and weights,
    which the ``turned`` releases must share."""
    rotation, model.prefix_rotation = model.prefix_rotation, None
    try:
        return model.weights_digest()
    finally:
        model.prefix_rotation = rotation


def turned_releases(
    recipe: TranscriptRecipe,
    sources: dict[str, str],
    unrotated_digest: str,
    config: TranscriptConfig,
    rotation: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """``rotated_from`` entries for the recipe's ``turned`` releases. Each must be this
    release's model (the same weights; ``unrotated_digest`` is this one's without its
    rotation, mixing as ``config``) under another prefix rotation or none, and perhaps
    another mixing of transcripts. ``mmembed index reembed`` turns their stored
    vectors, undoing their rotation (``turned_by``); audio vectors only where they mix
    as this release does, since a mixed audio vector cannot be mixed again without its
    clip. An entry whose rotation is ``rotation`` (this release's) is marked
    ``same_rotation``: its image and text vectors are this release's already."""
    from model.checkpoint import load_model, read_checkpoint_config

    entries = []
    for folder in map(Path, recipe.turned):
        meta = read_checkpoint_config(folder).get("metadata", {})
        earlier = load_model(folder, encoder_overrides=with_decoder(recipe, sources))
        fingerprint, turn = earlier.weights_digest(), earlier.prefix_rotation
        rotated = turn is not None
        same_rotation = (
            rotated and rotation is not None and torch.equal(turn.weight.float(), rotation)
        )
        modalities = list(earlier.modalities)
        earlier.prefix_rotation = None
        same_mixing = earlier.weights_digest() == unrotated_digest
        earlier.config = dataclasses.replace(earlier.config, transcript=config)
        if earlier.weights_digest() != unrotated_digest:
            raise ValueError(
                f"{folder} is not this release's model under another rotation or mixing: "
                f"its weights differ from those of {unrotated_digest[:12]}"
            )
        entries.append(
            {
                "name": f"{meta['release']} {meta['version']}",
                "fingerprint": fingerprint,
                "modalities": modalities
                if same_mixing
                else [m for m in modalities if m != "audio"],
                **({"turned_by": folder.name} if rotated else {}),
                **({"same_rotation": True} if same_rotation else {}),
            }
        )
    return entries


def check_transcript_release(
    path: str | Path, sources: dict[str, str], checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Measure a transcript release again from its clips, through the loaded release, and
    set every R@1 its card states beside the stored one."""
    from model.checkpoint import load_model, read_checkpoint_config

    recipe = read_transcript_recipe(path)
    target = Path(checkpoint or recipe.out)
    manifests = build_clips(recipe, sources)
    model = load_model(target, encoder_overrides=with_decoder(recipe, sources))
    config = model.config.transcript
    if config is None:
        raise ValueError(f"{target} mixes no transcripts")
    images_root = picture_features(recipe, model)
    wanted = [*SPOKEN_TESTS, *PICTURE_TESTS, *([PEOPLE_TEST] if recipe.people_root else [])]
    found = {s: clip_vectors(model, read_clips(manifests[s]), recipe.batch_size) for s in wanted}
    results = evaluate(model, config, found, images_root)
    stored = read_checkpoint_config(target).get("metadata", {}).get("eval") or {}
    return {"results": results, "stored": stored, "figures": figures(results, stored)}


def figures(results: dict[str, Any], stored: dict[str, Any]) -> list[dict[str, Any]]:
    """Every R@1 of the card, measured and as stored (None where not stored)."""
    out = []
    for name, entry in results["test_sets"].items():
        was = stored.get("test_sets", {}).get(name, {}).get("model", {})
        for direction, by_dim in entry["model"].items():
            for d in ("512", "64"):
                old = was.get(direction, {}).get(d, {}).get("R@1")
                out.append(
                    {"what": f"{name} {direction} {d}", "stored": old, "measured": by_dim[d]["R@1"]}
                )
    for split, entry in results.get("people", {}).items():
        was = stored.get("people", {}).get(split, {}).get("model", {}).get("audio->text", {})
        for d in ("512", "64"):
            out.append(
                {
                    "what": f"{split} audio->text {d}",
                    "stored": was.get(d, {}).get("R@1"),
                    "measured": entry["model"]["audio->text"][d]["R@1"],
                }
            )
    for split, entry in results["audio->image"].items():
        was = stored.get("images", {}).get(split, {}).get("audio->image", {})
        for d in ("512", "64"):
            old = was.get(d, {}).get("audio", {}).get("R@1")
            new = entry[d]["audio"]["R@1"]
            out.append({"what": f"{split} audio->image {d}", "stored": old, "measured": new})
    return out


# --------------------------------------------------------------------------- export


def export(
    recipe: TranscriptRecipe,
    config: TranscriptConfig,
    results: dict[str, Any],
    choice: dict[str, Any],
    base_digest: str,
    model: Any = None,
    rotation: dict[str, Any] | None = None,
    unrotated_digest: str = "",
    turned: Sequence[dict[str, Any]] = (),
) -> Path:
    """The release folder: the base's weights (and ``model``'s prefix rotation, in
    float32, when ``rotation`` says how it was fitted), its config with the transcript,
    the evaluation, the vectors it keeps from earlier releases, and the card. Exported
    beside its base, the folder names it as ``weights_from`` and stores only the
    rotation (:func:`model.checkpoint.trainable_weights`); elsewhere it holds them all.

    With a rotation, a store is taken over as it is only from the release whose
    rotation this one keeps (``rotation["kept_from"]``, for the modalities it embeds
    alike); ``rotated_from`` lists the models whose stored vectors the rotation turns
    into this release's exactly (the same release unrotated, whose weights digest is
    ``unrotated_digest``, the earlier releases it keeps modalities of, and the
    ``turned`` releases: this model under other rotations or mixings), which
    ``mmembed index reembed`` uses."""
    from model.checkpoint import (
        CONFIG_FILE,
        WEIGHTS_FILE,
        trainable_weights,
        weights_beside,
        write_safetensors,
    )
    from model.training.transcript_card import write_transcript_card

    base, out = Path(recipe.base), Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    document = json.loads((base / CONFIG_FILE).read_text())
    meta = document["metadata"]
    document["config"]["transcript"] = dataclasses.asdict(config)
    tensors = trainable_weights(base)
    if rotation is not None:
        turn = model.prefix_rotation.weight.detach().float().clone()
        tensors["prefix_rotation.weight"] = turn
        document["tensors"]["prefix_rotation.weight"] = list(turn.shape)
        document["config"]["prefix_rotation"] = True
    tensors, shared = weights_beside(tensors, base, out)
    document.pop("weights_from", None)
    if shared:
        document["weights_from"] = shared
    write_safetensors(tensors, out / WEIGHTS_FILE)
    stored = meta["eval"]
    images = {split: dict(entry) for split, entry in stored["images"].items()}
    for split, entry in results.get("images", {}).items():
        images[split]["model"] = entry["model"]
    for split, entry in results["audio->image"].items():
        images[split]["audio->image"] = entry
    # Without a rotation, image and text vectors are the base's; a rotation turns them all.
    kept = [m for m in ("image", "text") if m in document["config"]["encoders"]]
    earlier = [
        {
            "name": f"{meta['release']} {meta['version']}",
            "fingerprint": base_digest,
            "modalities": kept,
        },
        *[
            {**e, "modalities": [m for m in e["modalities"] if m in kept]}
            for e in meta.get("same_vectors_as") or []
        ],
    ]
    document["metadata"] = {
        "release": recipe.name,
        "version": recipe.version,
        "base": recipe.base,
        "recipe": recipe.source,
        "trained": True,
        "base_release": f"{meta['release']} {meta['version']}",
        "transcript": choice,
        **({"prefix_rotation": rotation} if rotation is not None else {}),
        "eval": {
            "test_sets": results["test_sets"],
            "images": images,
            "text_neighbourhood": results.get("text_neighbourhood", stored["text_neighbourhood"]),
            **({"people": results["people"]} if "people" in results else {}),
        },
        # Earlier releases whose image and text vectors this one keeps: a store they
        # filled with no audio item is taken over as it is.
        "same_vectors_as": earlier if rotation is None else same_vectors(rotation, turned),
    }
    if rotation is not None:
        unrotated = recipe.unrotated or f"{recipe.name} {recipe.version} without its rotation"
        document["metadata"]["rotated_from"] = [
            {
                "name": unrotated,
                "fingerprint": unrotated_digest,
                # a transcript prefix is mixed in after the rotation, so no audio vector
                # of the same model without one turns into this release's
                "modalities": [
                    m
                    for m in document["config"]["encoders"]
                    if not (m == "audio" and config.prefix_weight)
                ],
            },
            *turned,
            *earlier,
        ]
    (out / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    write_transcript_card(out)
    return out


def same_vectors(rotation: dict[str, Any], turned: Sequence[dict[str, Any]]) -> list[dict]:
    """The releases whose rotation this one has (the one it keeps it from, and any other
    ``turned`` entry under the same rotation), for the modalities they embed alike: a
    store one of them filled with no other items is taken over as it is."""
    return [
        {k: e[k] for k in ("name", "fingerprint", "modalities")}
        for e in turned
        if e["name"] == rotation.get("kept_from") or e.get("same_rotation")
    ]


def check_export(
    recipe: TranscriptRecipe, sources: dict[str, str], manifest: Path, val: dict[str, Any]
) -> float:
    """The largest difference between the exported release's vectors of the first
    validation clips, loaded and embedded as a server does, and those chosen on."""
    from model.checkpoint import read_checkpoint_config
    from model.embedder import Embedder

    embedder = Embedder.from_pretrained(recipe.out, encoders=sources)
    config = TranscriptConfig(**read_checkpoint_config(recipe.out)["config"]["transcript"])
    rows = read_clips(manifest)[:CHECK_CLIPS]
    clips = [sf.read(r["audio"], dtype="float32") for r in rows]
    served = embedder.embed_audio([c for c, _ in clips], clips[0][1])
    head = {k: v[:CHECK_CLIPS] if isinstance(v, list | torch.Tensor) else v for k, v in val.items()}
    expected = mixed(embedder.model, head, config).numpy()
    return float(np.abs(served - expected).max())

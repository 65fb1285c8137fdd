"""What `mmembed train`, `eval` and `data features` / `compare-windows` do, apart from parsing.

The command line (``service/cli.py``) parses the flags and calls these with
plain values; each prints its report and returns an exit code.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model.multimodal import MultimodalModel
from model.training.data import Pair, SkipReport, read_dataset
from model.training.evaluate import evaluate_cached, format_table
from model.training.features import (
    FeatureCache,
    build_features,
    cache_pairs,
    frame_agreement,
    pair_feature_items,
)
from model.training.pairs import cached_pairs, load_split
from model.training.recipe import ModelPart, TrainConfig
from model.training.runtime import resolve_device
from model.training.trainable import build_model


def train_command(cfg: TrainConfig) -> int:
    """Train, print the summary and the best validation table."""
    from model.training.train import train

    summary = train(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "best_val"}, indent=2))
    if summary.get("best_val"):
        title = f"validation, best step {summary['best_step']}"
        print(format_table(summary["best_val"], title=title))
    return 0


def release_command(recipe: str | Path, overrides: dict[str, Any]) -> int:
    """Run a release recipe's every stage; print each test set's tables."""
    from model.training.pipeline import run_release

    results = run_release(recipe, overrides)
    for name, entry in results["test_sets"].items():
        for who in ("model", "baseline"):
            if who in entry:
                print(
                    format_table(entry[who], title=f"{who} on test set {name} ({entry['pairs']})")
                )
    print(json.dumps({"text_neighbourhood": results["text_neighbourhood"]}, indent=2))
    return 0


def check_command(
    recipe: str | Path,
    overrides: dict[str, Any],
    *,
    checkpoint: str | Path | None = None,
    tolerance: float = 0.01,
    json_out: str | None = None,
) -> int:
    """Measure a release again on its recipe's test sets and set each figure beside the
    stored one; 1 when any differs by more than ``tolerance``."""
    from model.training.pipeline import check_release

    checked = check_release(recipe, overrides, checkpoint)
    for name, entry in checked["results"]["test_sets"].items():
        print(format_table(entry["model"], title=f"model on test set {name} ({entry['pairs']})"))
    return _report_check(checked, tolerance, json_out)


def _report_check(checked: dict[str, Any], tolerance: float, json_out: str | None) -> int:
    """Write a check's whole result to ``json_out`` if asked, then print its figures."""
    if json_out:
        Path(json_out).write_text(json.dumps(checked, indent=2) + "\n")
    return _print_figures(checked["figures"], tolerance)


def _print_figures(figures: list[dict[str, Any]], tolerance: float) -> int:
    """Each figure stored beside measured; 1 when any is off by more than ``tolerance``."""
    width = max(len(f["what"]) for f in figures)
    print(f"{'figure':<{width}}  stored  measured  difference")
    off = []
    for f in figures:
        stored, measured = f["stored"], f["measured"]
        if stored is None:
            print(f"{f['what']:<{width}}       -     {measured:.3f}  (not stored)")
            continue
        diff = round(measured - stored, 3) + 0.0  # + 0.0: no "-0.000"
        mark = "" if abs(diff) <= tolerance else "  <- off"
        print(f"{f['what']:<{width}}   {stored:.3f}     {measured:.3f}      {diff:+.3f}{mark}")
        if mark:
            off.append(f["what"])
    compared = sum(f["stored"] is not None for f in figures)
    if not compared:
        print("the checkpoint stores no evaluation to compare with (only a release does)")
        return 0
    if off:
        print(
            f"{len(off)} of {compared} figures differ from the stored ones by more than "
            f"{tolerance:.3f}: {', '.join(off)}",
            file=sys.stderr,
        )
        return 1
    print(f"all {compared} figures within {tolerance:.3f} of the stored ones")
    return 0


def _check_baseline_encoders(
    baseline: Any, model: MultimodalModel, path: str, window: str | None
) -> None:
    """Refuse a baseline trained on other encoders than the checkpoint's."""
    for m, enc in baseline.encoder_config.items():
        mine = dataclasses.asdict(model.config.encoders[m]) if m in model.config.encoders else None
        if mine is not None and window and m == "audio":
            # An explicit --audio-window evaluates both models on that window.
            enc = {**enc, "audio_window": window}
        if mine != enc:
            raise ValueError(
                f"baseline {path} was trained on {m} encoder {enc}, the checkpoint uses {mine}"
            )


def eval_command(
    part: ModelPart,
    *,
    data: Sequence[str],
    cache_dir: str,
    device: str,
    limit: int | None = None,
    baseline: str | None = None,
    json_out: str | None = None,
) -> int:
    """Retrieval tables of the checkpoint (and a baseline) on ``data``; JSON to ``json_out``."""
    if part.checkpoint is None:
        raise ValueError("mmembed eval needs --checkpoint DIR (a folder `mmembed train` wrote)")
    dev = resolve_device(device)
    model = build_model(part).to(dev)
    split = load_split(data, limit)
    rep, _ = cache_pairs(model, cache_dir, split.pairs, device=dev)
    caches = {m: FeatureCache.for_model(cache_dir, model, m) for m in model.config.modalities}
    test, rep2 = cached_pairs(split.pairs, caches)
    for report in (split.skipped, rep, rep2):
        if report.count:
            print(report.summary(), file=sys.stderr)
    results: dict[str, Any] = {
        "checkpoint": str(part.checkpoint),
        "pairs": len(test),
        "model": evaluate_cached(model, test, caches, dev),
    }
    print(format_table(results["model"], title=f"{part.checkpoint} ({len(test)} pairs)"))
    if baseline:
        from model.training.baseline import MeanPoolBaseline

        other = MeanPoolBaseline.load(baseline)
        _check_baseline_encoders(other, model, baseline, part.audio_window)
        results["baseline"] = evaluate_cached(other.to(dev), test, caches, dev)
        print()
        print(format_table(results["baseline"], title=f"baseline {baseline} (mean-pool + linear)"))
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _read_pairs(specs: Sequence[str], limit: int | None) -> tuple[list[Pair], SkipReport]:
    """The pairs of each dataset spec (its first ``limit`` only, if given), and what was skipped."""
    pairs: list[Pair] = []
    skipped = SkipReport()
    for spec in specs:
        data = read_dataset(spec)
        skipped.extend(data.skipped)
        pairs.extend(data.pairs[:limit] if limit else data.pairs)
    return pairs, skipped


def features_command(
    part: ModelPart,
    *,
    data: Sequence[str],
    cache_dir: str,
    device: str,
    batch_size: int = 16,
    chunk: int = 2000,
    limit: int | None = None,
) -> int:
    """Fill the feature cache for ``data``; print what was skipped and the timing."""
    model = build_model(part).to(device).eval()
    pairs, skipped = _read_pairs(data, limit)
    rep, timing = cache_pairs(
        model, cache_dir, pairs, batch_size=batch_size, chunk=chunk, device=device
    )
    skipped.extend(rep)
    print(skipped.summary())
    print(json.dumps(timing, indent=2))
    return 0


def compare_windows_command(
    part: ModelPart, *, data: Sequence[str], cache_dir: str, batch_size: int, limit: int | None
) -> int:
    """Time both Whisper windows on the same clips, and how close their frames are.

    Encodes the first ``limit`` clips of ``data`` with ``audio_window="full"``
    and ``"trimmed"`` (each into its own cache under ``cache_dir``, timing only
    what is not cached yet) and prints seconds per clip and the agreement.
    """
    pairs = [p for spec in data for p in read_dataset(spec).pairs[:limit]]
    items, skipped = pair_feature_items([p for p in pairs if p.modality == "audio"])
    caches: dict[str, FeatureCache] = {}
    report: dict[str, Any] = {"clips": len(items)}
    for window in ("trimmed", "full"):
        model = build_model(dataclasses.replace(part, audio_window=window)).eval()
        caches[window] = FeatureCache.for_model(cache_dir, model, "audio")
        timed = [job for job in items if job.id not in caches[window]]
        rep, timing = build_features(
            model, caches[window], timed, batch_size=batch_size, progress=False
        )
        skipped.extend(rep)
        report[window] = timing
    ids = [job.id for job in items if job.id in caches["full"] and job.id in caches["trimmed"]]
    report["agreement"] = frame_agreement(caches["full"], caches["trimmed"], ids)
    if skipped.count:
        print(skipped.summary())
    print(json.dumps(report, indent=2))
    return 0


def image_release_command(recipe: str | Path, sources: dict[str, str]) -> int:
    """Run an image release recipe's every stage; print the image figures."""
    from model.training.image_card import image_rows, spoken_rows
    from model.training.image_release import run_image_release

    results = run_image_release(recipe, sources)
    print("\n".join(image_rows(results["images"])))
    print("\n".join(spoken_rows(results["images"])))
    return 0


def transcript_release_command(recipe: str | Path, sources: dict[str, str]) -> int:
    """Run a transcript release recipe's every stage; print the speech figures."""
    from model.training.transcript_card import audio_text_rows
    from model.training.transcript_release import run_transcript_release

    results = run_transcript_release(recipe, sources)
    print("\n".join(audio_text_rows(results["test_sets"])))
    return 0


def extension_check_command(
    check: Callable[[str | Path, dict[str, str], str | Path | None], dict[str, Any]],
    recipe: str | Path,
    sources: dict[str, str],
    *,
    checkpoint: str | Path | None = None,
    tolerance: float = 0.01,
    json_out: str | None = None,
) -> int:
    """Measure a release that extends another (an image or a transcript release, whose
    ``check`` is ``check_image_release`` or ``check_transcript_release``) again and set
    each figure beside the stored one; 1 when any differs by more than ``tolerance``."""
    return _report_check(check(recipe, sources, checkpoint), tolerance, json_out)

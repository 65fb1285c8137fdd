"""How good `/describe` is on the release's unseen spoken test sets (held-out voices).

- **Word error rate** of the greedy description against the sentence the clip speaks,
  beside Whisper-base's own decoder on the same clips (greedy and beam 5; transcripts
  from model/training/whisper_reference.py). Texts are compared lowercased, without
  punctuation (:func:`normalise`).
- **Meaning kept**: each description is embedded with plain MiniLM (mean pooling) and
  its reference sentence retrieved among the set's 500; R@1 is set beside the release's
  own audio->text R@1 on the same clips against the same 500.
- The pictures' captions: their word error rate says little (a caption is one of many
  right answers), so they get the meaning measure only, against their set's captions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.describer import Describer
from model.multimodal import MultimodalModel

_PUNCT = re.compile(r"[^\w\s']")


def normalise(text: str) -> str:
    """Lowercase words without punctuation (apostrophes kept), single-spaced."""
    return " ".join(_PUNCT.sub(" ", text.lower().replace("\u2019", "'")).split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (total edits over total reference words) after :func:`normalise`."""
    import jiwer

    refs = [normalise(r) or "<empty>" for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


@torch.inference_mode()
def minilm_vectors(model: MultimodalModel, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    """Plain MiniLM sentence embeddings (masked mean of its tokens, unit rows): what the
    cascade and the meaning measure use, not the release's text tower."""
    out = []
    encoder = model.encoder("text")
    for i in range(0, len(texts), batch):
        chunk = [t if t.strip() else "." for t in texts[i : i + batch]]
        enc = encoder(encoder.preprocess(chunk))
        mask = enc.mask.unsqueeze(-1).float()
        pooled = (enc.tokens.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def recall_at_1(queries: np.ndarray, gallery: np.ndarray, targets: Sequence[int]) -> float:
    """Share of queries whose nearest gallery row is their target."""
    best = (queries @ gallery.T).argmax(axis=1)
    return float(np.mean(best == np.asarray(targets)))


def describe_split(
    describer: Describer, data: dict[str, Any], n: int, batch: int = 8, max_tokens: int = 48
) -> list[str]:
    """Greedy descriptions of the first ``n`` items of a cached split."""
    from tqdm.auto import tqdm

    texts: list[str] = []
    for i in tqdm(range(0, n, batch), desc="describe", unit="batch"):
        j = min(n, i + batch)
        got = describer.generate(
            data["latents"][i:j].float(), data["modality"][i:j], max_tokens=max_tokens
        )
        texts.extend(g.text for g in got)
    return texts


def release_audio_vectors(
    model: MultimodalModel, feature_root: Path, audio: Sequence[str], texts: Sequence[str]
) -> np.ndarray:
    """The release's own 512-d embeddings of cached test clips."""
    from model.training.data import Pair
    from model.training.evaluate import embed_cached
    from model.training.features import FeatureCache, item_id

    cache = FeatureCache.for_model(str(feature_root), model, "audio")
    ids = [item_id(Pair("audio", Path(a), t, "", t, {})) for a, t in zip(audio, texts, strict=True)]
    return embed_cached(model, "audio", cache, ids, torch.device("cpu"))


def release_text_vectors(model: MultimodalModel, texts: Sequence[str]) -> np.ndarray:
    with torch.inference_mode():
        out = []
        for i in range(0, len(texts), 64):
            batch = model.preprocess("text", list(texts[i : i + 64]))
            out.append(model("text", batch, with_llm_tokens=False).embedding.float().numpy())
    return np.concatenate(out)


def evaluate_split(
    describer: Describer,
    model: MultimodalModel,
    data: dict[str, Any],
    *,
    n: int,
    feature_root: Path | None,
    whisper: list[dict] | None,
    generations: Path,
) -> dict[str, Any]:
    """The figures of one split (see the module docstring); ``generations`` keeps the
    descriptions, so a second run only scores them."""
    if generations.exists():
        described = json.loads(generations.read_text())
    else:
        described = describe_split(describer, data, n)
        generations.parent.mkdir(parents=True, exist_ok=True)
        generations.write_text(json.dumps(described, indent=1) + "\n")
    n = len(described)
    references = data["texts"][:n]
    gallery_texts = list(dict.fromkeys(data["texts"]))
    index = {t: i for i, t in enumerate(gallery_texts)}
    targets = [index[t] for t in references]
    gallery = minilm_vectors(model, gallery_texts)
    result: dict[str, Any] = {
        "clips": n,
        "gallery": len(gallery_texts),
        "describe": {
            "wer": round(word_error_rate(references, described), 4),
            "meaning_r1": round(recall_at_1(minilm_vectors(model, described), gallery, targets), 4),
        },
        "examples": [
            {"reference": r, "describe": d}
            for r, d in list(zip(references, described, strict=True))[:8]
        ],
    }
    if feature_root is not None:
        media = release_audio_vectors(model, feature_root, data["audio"][:n], references)
        release_gallery = release_text_vectors(model, gallery_texts)
        result["release_r1"] = round(recall_at_1(media, release_gallery, targets), 4)
        result["describe"]["meaning_share"] = round(
            result["describe"]["meaning_r1"] / max(result["release_r1"], 1e-9), 3
        )
    if whisper:
        by_audio = {Path(w["audio"]).name: w for w in whisper}
        rows = [by_audio.get(Path(a).name) for a in data["audio"][:n]]
        if all(rows):
            for name in ("greedy", "beam5"):
                hyps = [r[name] for r in rows]
                result[f"whisper_{name}"] = {
                    "wer": round(word_error_rate(references, hyps), 4),
                    "meaning_r1": round(
                        recall_at_1(minilm_vectors(model, hyps), gallery, targets), 4
                    ),
                }
            worst = max(result["whisper_greedy"]["wer"], result["whisper_beam5"]["wer"])
            best = min(result["whisper_greedy"]["wer"], result["whisper_beam5"]["wer"])
            result["describe"]["wer_vs_whisper"] = round(
                result["describe"]["wer"] / max(best, 1e-9), 2
            )
            result["whisper_wer_range"] = [best, worst]
    return result

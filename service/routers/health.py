"""Liveness, readiness and Prometheus metrics; open even when API keys are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from index.errors import StoreUnavailable
from model.constants import MATRYOSHKA_DIMS
from service.deps import MetricsDep
from service.errors import error_body
from service.schemas import EarlierModel, ErrorOut, HealthOut, ReadyOut, Upgrades
from service.state import ServiceState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
async def healthz():
    return HealthOut()


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={
        503: {
            "model": ErrorOut,
            "description": "Still loading, shutting down, or the index database is unreachable",
        }
    },
    summary="Model and index loaded: what is served",
)
async def readyz(request: Request):
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        body = error_body("not_ready", "the model and index are loading or shutting down")
        return JSONResponse(body, status_code=503)
    info = state.model_info
    try:
        index = await state.store.info()
        index["counts"] = await state.refresh_index_gauge()
    except StoreUnavailable as exc:
        body = error_body("index_unavailable", f"the index database cannot be reached: {exc}")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return ReadyOut(
        model=info.get("model"),
        version=info.get("version"),
        preset=info.get("preset"),
        checkpoint=info.get("checkpoint"),
        trained=bool(info.get("trained")),
        demo=bool(info.get("demo")),
        weights_digest=str(info["weights_digest"]),
        warning=state.warning,
        modalities=list(state.engine.modalities),
        encoders={k: str(v) for k, v in info.get("encoders", {}).items()},
        device=str(info.get("device", state.settings.device)),
        dtype=str(info.get("dtype", state.settings.dtype)),
        encoder_runtime=info.get("encoder_runtime", {}),
        dims=list(MATRYOSHKA_DIMS),
        audio_window=info.get("audio_window"),
        text_tower=info.get("text_tower"),
        blend=info.get("blend"),
        transcript=info.get("transcript"),
        describe={
            "available": state.describer is not None,
            "model": state.describer.name if state.describer is not None else None,
            "reason": state.describer_off,
        },
        upgrades=Upgrades(
            takes_over=_earlier(info.get("same_vectors_as")),
            turns=_earlier(info.get("rotated_from")),
        ),
        index=index,
    )


def _earlier(entries: list[dict] | None) -> list[EarlierModel]:
    """Earlier models a release names, as /readyz lists them."""
    keys = set(EarlierModel.model_fields)
    return [EarlierModel(**{k: v for k, v in e.items() if k in keys}) for e in entries or ()]


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, registry: MetricsDep):
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is not None:
        for modality, depth in state.engine.queue_depths().items():
            registry.queue.labels(modality).set(depth)
        registry.set_index_pool(state.store.connection_stats())
    body, content_type = registry.render()
    return Response(body, media_type=content_type)

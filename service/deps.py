"""Typed dependencies: routes ask for what they need, never reach into `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import EmbeddingEngine
from service.errors import NotReady
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState
from service.store import AsyncStore


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReady("the model and index are still loading; see /readyz")
    return state


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(state: Annotated[ServiceState, Depends(get_state)]) -> EmbeddingEngine:
    return state.engine


def get_store(state: Annotated[ServiceState, Depends(get_state)]) -> AsyncStore:
    return state.store


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[EmbeddingEngine, Depends(get_engine)]
StoreDep = Annotated[AsyncStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

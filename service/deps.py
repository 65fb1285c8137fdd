"""Typed dependencies: routes ask for what they need, never reach into `app.state`.

Settings come from `service.settings.get_settings`, the one settings dependency;
`create_app(settings)` overrides it with the app's own settings.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import EmbeddingEngine
from service.errors import NotReady
from service.metrics import Metrics
from service.settings import Settings, get_settings
from service.state import ServiceState
from service.store import AsyncStore


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReady("the model and index are still loading; see /readyz")
    return state


def get_engine(state: Annotated[ServiceState, Depends(get_state)]) -> EmbeddingEngine:
    return state.engine


def get_store(state: Annotated[ServiceState, Depends(get_state)]) -> AsyncStore:
    return state.store


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[EmbeddingEngine, Depends(get_engine)]
StoreDep = Annotated[AsyncStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

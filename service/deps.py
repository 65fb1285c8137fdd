"""Typed dependencies: routes ask for what they need, never reach into `app.state`.

Settings are the app's own (`create_app(settings)` keeps them on `app.state`), read
by `get_app_settings`. Every dependency here is `async def` on purpose: FastAPI runs a
plain `def` dependency on a worker thread, a thread hop per dependency per request for
what is only an attribute read. Nothing here uses `dependency_overrides` either: with
an override in place, FastAPI re-inspects the overriding callable's signature on every
request, which cost a third of the event loop's time under load.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import EmbeddingEngine
from service.errors import NotReady
from service.metrics import Metrics
from service.settings import Settings
from service.state import ServiceState
from service.store import AsyncStore


async def get_app_settings(request: Request) -> Settings:
    """The settings of the app serving this request."""
    return request.app.state.settings


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReady("the model and index are still loading; see /readyz")
    return state


async def get_engine(state: Annotated[ServiceState, Depends(get_state)]) -> EmbeddingEngine:
    return state.engine


async def get_store(state: Annotated[ServiceState, Depends(get_state)]) -> AsyncStore:
    return state.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[EmbeddingEngine, Depends(get_engine)]
StoreDep = Annotated[AsyncStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

"""What the lifespan loads once and every request shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from service.describe import DescribeService
from service.engine import EmbeddingEngine
from service.metrics import Metrics
from service.settings import Settings
from service.store import AsyncStore


@dataclass
class ServiceState:
    """The loaded model, the open index and the metrics; held on `app.state.service`."""

    settings: Settings
    engine: EmbeddingEngine
    store: AsyncStore
    metrics: Metrics
    model_info: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None
    describer: DescribeService | None = None  # /describe (service/describe.py)
    describer_off: str | None = None  # why /describe is off, when it is
    started_at: int = field(default_factory=lambda: int(time.time()))

    async def refresh_index_gauge(self) -> dict[str, int]:
        counts = await self.store.counts()
        self.metrics.set_index_counts(counts)
        return counts

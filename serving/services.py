"""What the routers depend on, built once per app by ``create_app`` and handed to each router."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_rl.events import EventStore
from serving.banner_batcher import BannerBatcher
from serving.config import ServeConfig
from serving.errors import ApiError
from serving.impression_ids import ImpressionIds
from serving.metrics import ServingMetrics
from serving.model_holder import ModelHolder


@dataclass
class Services:
    cfg: ServeConfig
    holder: ModelHolder
    metrics: ServingMetrics
    admin_token: str | None
    store: EventStore | None = None  # set at startup when the app opens it itself
    ids: ImpressionIds | None = None  # set at startup: the secret may be the store's
    batcher: BannerBatcher | None = None

    def ready_store(self) -> EventStore:
        if self.store is None:
            raise ApiError(503, "the event store is not open yet (server starting or stopping)")
        return self.store

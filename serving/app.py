"""The banner service, built by ``create_app(cfg, store, holder)``.

Tests and embedders pass their own event store and model holder; otherwise the app opens the store
named by ``cfg.events`` and follows the model source named by the config. Whatever the app opens or
starts itself it also closes or stops at shutdown (after the impressions already scored are stored).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import recsys_rl
from recsys_rl.events import EventStore, open_store
from serving import heap
from serving.banner_batcher import BannerBatcher
from serving.config import ServeConfig
from serving.errors import install_error_handlers
from serving.fast_path import FastPathApp
from serving.impression_ids import ImpressionIds
from serving.metrics import SYNC_INTERVAL_S, ServingMetrics
from serving.middleware import ServingMiddleware
from serving.model_holder import FileSource, ModelHolder, ModelSource, RegistrySource
from serving.models import BannerRequest, FeedbackEvent, FeedbackRequest, PinRequest
from serving.routers import admin_router, banners_router, feedback_router, ops_router
from serving.routers.banners import banner_body
from serving.routers.openapi import Limits, api_document
from serving.services import Services

log = logging.getLogger("serving")


def model_source(cfg: ServeConfig) -> ModelSource | None:
    """The source the config names (None if it names none)."""
    if cfg.model_uri is not None:
        return RegistrySource.from_uri(cfg.model_uri, cfg.resolved_tracking_uri())
    if cfg.registered_model is not None:
        return RegistrySource(cfg.registered_model, alias=cfg.alias, tracking_uri=cfg.resolved_tracking_uri())
    if cfg.policy_path is not None:
        return FileSource(Path(cfg.policy_path))
    return None


async def _sync_forever(metrics: ServingMetrics) -> None:
    while True:
        metrics.holder_sync.sync()
        await asyncio.sleep(SYNC_INTERVAL_S)


def create_app(
    cfg: ServeConfig, store: EventStore | None = None, holder: ModelHolder | None = None
) -> FastAPI:
    """The FastAPI app serving banners from ``holder`` (default: one following the config's model
    source) and logging events to ``store`` (default: opened from ``cfg.events`` at startup)."""
    torch.set_num_threads(cfg.torch_threads)
    if holder is None:
        holder = ModelHolder(
            model_source(cfg), reload_interval_s=cfg.reload_interval_s, keep=cfg.keep_versions
        )
    metrics = ServingMetrics(holder, cfg.temperature)
    services = Services(cfg, holder, metrics, cfg.resolved_admin_token(), store=store)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(63)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        opened = None
        if services.store is None:
            opened = services.store = await run_in_threadpool(
                lambda: open_store(cfg.events, durability=cfg.durability)
            )
        metrics.store_best_effort.set(int(services.store.durability == "best-effort"))
        ids = services.ids = await run_in_threadpool(ImpressionIds.resolve, cfg.secret, services.store)
        services.batcher = BannerBatcher(
            services.store,
            metrics,
            temperature=cfg.temperature,
            generator=torch.Generator().manual_seed(seed),
            max_batch=cfg.max_scoring_batch,
            ids=ids,
            fallbacks=holder.previous,
            demote=holder.demote,
            demote_after=cfg.auto_rollback_after,
        )
        started = holder.source is not None and not holder.running
        refreeze = heap.freeze_after_swap(lambda: holder.swaps)
        holder.poll_listeners.append(refreeze)
        if started:
            holder.start()
        heap.freeze_at_start()  # once the start-up objects exist; the new objects again after each swap
        syncing = None
        if metrics.holder_sync is not None:  # multiprocess mode: publish this worker's model state
            syncing = asyncio.create_task(_sync_forever(metrics))
        try:
            yield
        finally:
            if syncing is not None:
                syncing.cancel()
            holder.poll_listeners.remove(refreeze)
            batcher, services.batcher = services.batcher, None
            await batcher.drain()
            if started:
                holder.stop()
            if opened is not None:
                services.store = None
                opened.close()
            metrics.worker_exit()

    app = FastPathApp(
        title="recsys-rl banner service",
        version=recsys_rl.__version__,
        description="Banners from the served policy, with exact propensities; feedback in; hot model reload.",
        lifespan=lifespan,
        telemetry=None if cfg.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(ServingMiddleware, metrics=metrics, max_body_bytes=cfg.max_body_bytes)
    for router in (banners_router, feedback_router, ops_router, admin_router):
        app.include_router(router(services))
    if not cfg.opentelemetry:  # the spans come from the layers the fast path skips
        fast = {("POST", "/v1/banners"): lambda raw: banner_body(services, raw)}
        app.enable_fast_routes(fast, metrics, cfg.max_body_bytes)

    default_openapi = app.openapi  # FastAPI's document, generated once and cached by FastAPI
    documents: dict[Limits, dict] = {}

    def openapi() -> dict:
        """The exact document for the model being served (its catalogue bounds the product ids)."""
        model = holder.current
        limits = Limits(
            None if model is None else model.n_products,
            0 if model is None else model.n_user_features,
            cfg.max_batch_events,
            None if model is None else model.version,
            5 if model is None else model.banner_size,
            0 if model is None else len(model.categorical_vocab),
        )
        doc = documents.get(limits)
        if doc is None:
            doc = documents[limits] = api_document(
                default_openapi(), limits, BannerRequest, FeedbackRequest, FeedbackEvent, PinRequest
            )
        return doc

    app.openapi = openapi
    return app

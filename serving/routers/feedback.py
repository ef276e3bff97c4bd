"""``POST /v1/feedback``: clicks and purchases on served banners, stored durably and idempotently."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.errors import ApiError, store_unavailable
from serving.feedback import FeedbackRejected, ingest
from serving.models import FeedbackEvent, FeedbackRequest, FeedbackResponse, field_errors
from serving.routers.openapi import error_responses, json_body
from serving.services import Services


class _TooMany(ApiError):
    """More events than max_batch_events (counted as such, not as invalid)."""


def feedback_router(services: Services) -> APIRouter:
    router = APIRouter(tags=["feedback"])
    cfg, metrics = services.cfg, services.metrics

    def parse(body: bytes) -> tuple[list[FeedbackEvent], str]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(422, f"invalid JSON: {exc}", "body") from None
        if not isinstance(data, dict):
            raise ApiError(422, 'expected a feedback event object or {"events": [...]}', "body")
        if "events" not in data:
            try:
                return [FeedbackEvent.model_validate(data)], ""
            except ValidationError as exc:
                raise ApiError(422, field_errors(exc)) from None
        events = data["events"]
        if isinstance(events, list) and len(events) > cfg.max_batch_events:
            metrics.rejected.labels("too_many").inc(len(events))
            raise _TooMany(
                422, f"{len(events)} events in one request; at most {cfg.max_batch_events}", "events"
            )
        try:
            return FeedbackRequest.model_validate(data).events, "events"
        except ValidationError as exc:
            raise ApiError(422, field_errors(exc)) from None

    @router.post(
        "/v1/feedback",
        operation_id="post_feedback",
        summary="Record clicks and purchases",
        responses={
            200: {"model": FeedbackResponse, "description": "stored (or already stored) durably"},
            **error_responses(
                404,
                409,
                413,
                422,
                503,
                descriptions={
                    404: "an event quotes an impression this service did not serve (unknown or forged "
                    "id); nothing of the batch was stored",
                    409: "an event does not fit its impression (product not in the banner, or past "
                    "the attribution window); nothing of the batch was stored",
                    422: "invalid events (or more than max_batch_events); nothing of the batch was stored",
                    503: "the event store is unavailable (Redis down, disk full): nothing was "
                    "acknowledged; resend the same batch after the Retry-After seconds",
                },
                headers={
                    503: {
                        "Retry-After": {
                            "description": "seconds to wait before retrying",
                            "schema": {"type": "integer"},
                        }
                    }
                },
            ),
        },
        openapi_extra=json_body(FeedbackRequest, FeedbackEvent),
    )
    async def feedback(request: Request) -> Response:
        """Checks every event's impression id by its signature (forged ids are refused without a
        store lookup), then against its impression (it exists, is within the attribution window, the
        product is in its banner; the slot position is taken from the banner) and stores the batch,
        all or nothing. Events already stored (same event_id) are acknowledged as duplicates."""
        try:
            events, prefix = parse(await request.body())
        except ApiError as exc:
            if exc.status == 422 and not isinstance(exc, _TooMany):
                metrics.rejected.labels("invalid").inc()
            raise
        store = services.ready_store()
        try:
            new, dup = await run_in_threadpool(
                ingest, store, events, cfg.attribution_window_s, prefix, services.ids.verify
            )
        except FeedbackRejected as exc:
            for reason, n in exc.reasons.items():
                metrics.rejected.labels(reason).inc(n)
            raise
        except Exception as exc:
            raise store_unavailable("could not store the feedback", exc) from exc
        metrics.feedback.inc(new)
        metrics.duplicates.inc(dup)
        return Response(orjson.dumps({"accepted": new, "duplicates": dup}), media_type="application/json")

    return router

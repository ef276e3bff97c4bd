"""``POST /v1/banners``: a banner for a context, logged as an impression before it is returned."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from recsys_rl.records import PAD
from serving.errors import ApiError, store_unavailable
from serving.models import BannerRequest, BannerResponse, field_errors
from serving.routers.openapi import error_responses, json_body
from serving.services import Services

ERRORS = error_responses(
    413,
    422,
    503,
    descriptions={
        503: "no model loaded yet, or the event store is unavailable (Redis down, disk full): no banner "
        "is served unlogged; retry after the Retry-After seconds"
    },
    headers={
        503: {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    },
)


def check_catalogue(req: BannerRequest, n_products: int, n_user_features: int) -> None:
    """Product ids must be in the served model's catalogue [0, n_products)."""
    problems = []
    if req.viewed is not None and req.viewed >= n_products:
        problems.append(("viewed", req.viewed))
    problems += [(f"history[{i}]", x) for i, x in enumerate(req.history) if x >= n_products]
    items = [
        {"field": f, "message": f"product {x} is outside the catalogue [0, {n_products}) of the served model"}
        for f, x in problems
    ]
    if n_user_features and (req.user_features is None or len(req.user_features) != n_user_features):
        got = "none" if req.user_features is None else str(len(req.user_features))
        items.append(
            {
                "field": "user_features",
                "message": f"the served model needs {n_user_features} values, got {got}",
            }
        )
    if items:
        raise ApiError(422, items)


async def banner_body(services: Services, raw: bytes) -> bytes:
    """The JSON body of a served banner for the request body ``raw``: validated, checked against the
    served model, scored, durably logged. Raises ApiError (the documented 422 / 503) otherwise.

    Shared by the FastAPI route (which the OpenAPI document describes) and ``serving.fast_path``
    (which answers the same requests without FastAPI's per-request routing and dependency layers)."""
    try:
        req = BannerRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, field_errors(exc)) from None
    model = services.holder.current
    if model is None:
        raise ApiError(503, "no model loaded yet; see /readyz")
    check_catalogue(req, model.n_products, model.n_user_features)
    n_cat = len(model.categorical_vocab)
    if n_cat and (req.user_categories is None or len(req.user_categories) != n_cat):
        got = "none" if req.user_categories is None else str(len(req.user_categories))
        raise ApiError(
            422,
            [{"field": "user_categories", "message": f"the served model needs {n_cat} values, got {got}"}],
        )
    if req.k is not None and req.k > model.banner_size:
        raise ApiError(
            422,
            [
                {
                    "field": "k",
                    "message": f"the served model shows at most {model.banner_size} products, got {req.k}",
                }
            ],
        )
    if services.batcher is None:
        raise ApiError(503, "the event store is not open yet (server starting or stopping)")
    explore = req.mode == "explore"
    try:
        imp = await services.batcher.serve(
            model,
            req.user_id,
            PAD if req.viewed is None else req.viewed,
            req.history,
            req.user_features,
            explore,
            req.k,
            req.user_categories,
        )
    except ApiError:
        raise
    except Exception as exc:
        raise store_unavailable("could not log the impression", exc) from exc
    return orjson.dumps(
        {
            "impression_id": imp.impression_id,
            "model_version": imp.policy_version,
            "items": imp.items,
            "propensity": imp.propensity,
            "log_propensity": imp.log_propensity,
            "mode": req.mode,
        }
    )


def banners_router(services: Services) -> APIRouter:
    router = APIRouter(tags=["banners"])

    @router.post(
        "/v1/banners",
        operation_id="serve_banner",
        summary="Choose a banner for a context",
        responses={200: {"model": BannerResponse, "description": "the banner, logged"}, **ERRORS},
        openapi_extra=json_body(BannerRequest),
    )
    async def banners(request: Request) -> Response:
        """Scores the context, samples (explore) or takes the top (deterministic) k products, stores the
        impression and returns it with its exact propensity and a fresh impression id."""
        return Response(await banner_body(services, await request.body()), media_type="application/json")

    return router

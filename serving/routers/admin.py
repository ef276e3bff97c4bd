"""Model control for operators: ``/admin/versions``, ``/admin/pin``, ``/admin/rollback``, ``/admin/unpin``.

Every call needs the ``X-Admin-Token`` header; with no token configured the endpoints are disabled.
Pinning or rolling back stops the server from following the registry alias until ``unpin``.
"""

from __future__ import annotations

import secrets

import orjson
from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.errors import ApiError
from serving.model_holder import UnknownVersion
from serving.models import AdminState, PinRequest, VersionsResponse, field_errors
from serving.routers.openapi import error_responses, json_body
from serving.services import Services

TOKEN_HEADER = "X-Admin-Token"
API_KEY = APIKeyHeader(
    name=TOKEN_HEADER, scheme_name="AdminToken", description="the server's admin_token", auto_error=False
)
STATE = {200: {"model": AdminState, "description": "the served version and the rollback history"}}


def admin_router(services: Services) -> APIRouter:
    holder = services.holder

    async def authorise(token: str | None = Security(API_KEY)) -> None:
        """Runs before the body is validated, so a caller without the token learns nothing more."""
        expected = services.admin_token
        if expected is None:
            raise ApiError(401, "admin endpoints are disabled: no admin_token configured", TOKEN_HEADER)
        if token is None:
            raise ApiError(401, "missing admin token", TOKEN_HEADER)
        if not secrets.compare_digest(token.encode(), expected.encode()):
            raise ApiError(401, "wrong admin token", TOKEN_HEADER)

    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(authorise)],
        responses=error_responses(401, descriptions={401: f"missing or wrong {TOKEN_HEADER}"}),
    )

    def state() -> dict:
        cur = holder.current
        return {
            "current": None if cur is None else cur.version,
            "n_products": None if cur is None else cur.n_products,
            "pinned": holder.pinned,
            "following": None if holder.source is None else repr(holder.source),
            "history": holder.history(),
        }

    def answer(body: dict) -> Response:
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/versions",
        summary="Served version, rollback history and registry versions",
        responses={200: {"model": VersionsResponse, "description": "the state and the pinnable versions"}},
    )
    async def versions() -> Response:
        body = state()
        available = []
        if holder.source is not None:
            try:
                available = await run_in_threadpool(holder.source.available)
            except Exception as exc:  # noqa: BLE001 - still show what is known locally
                body["available_error"] = f"{type(exc).__name__}: {exc}"
        body["available"] = available
        return answer(body)

    @router.post(
        "/pin",
        operation_id="pin_version",
        summary="Serve exactly this version (stop following the alias)",
        responses={**STATE, **error_responses(404, 422, descriptions={404: "no such version"})},
        openapi_extra=json_body(PinRequest),
    )
    async def pin(request: Request) -> Response:
        try:
            req = PinRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise ApiError(422, field_errors(exc)) from None
        try:
            await run_in_threadpool(holder.pin, req.version)
        except UnknownVersion as exc:
            raise ApiError(404, str(exc).removeprefix("version: "), "version") from None
        return answer(state())

    @router.post(
        "/rollback",
        summary="Serve the previously served version again (and stay on it)",
        responses={**STATE, **error_responses(409, descriptions={409: "nothing to roll back to"})},
    )
    async def rollback() -> Response:
        try:
            await run_in_threadpool(holder.rollback)
        except UnknownVersion as exc:
            raise ApiError(409, str(exc).removeprefix("rollback: "), None) from None
        return answer(state())

    @router.post(
        "/unpin",
        summary="Follow the registry alias again (polls it now)",
        responses={
            **STATE,
            **error_responses(503, descriptions={503: "unpinned, but loading the alias's version failed"}),
        },
    )
    async def unpin() -> Response:
        try:
            await run_in_threadpool(holder.unpin)
        except Exception as exc:
            raise ApiError(
                503, f"unpinned, but loading the alias's version failed: {type(exc).__name__}: {exc}"
            ) from exc
        return answer(state())

    return router

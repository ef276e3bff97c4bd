"""One error shape for every 4xx/5xx: ``{"detail": [{"field": "history[3]", "message": "..."}]}``.

``field`` names where the problem is (a JSON path into the body, or a header), null when the problem
is not about one field (an unknown route, a store outage).
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from serving.models import field_errors


class ApiError(Exception):
    """An HTTP error with its problems listed per field."""

    def __init__(
        self, status: int, items: list[dict] | str, field: str | None = None, headers: dict | None = None
    ) -> None:
        if isinstance(items, str):
            items = [{"field": field, "message": items}]
        super().__init__(f"{status}: {items}")
        self.status, self.items, self.headers = status, items, headers


RETRY_AFTER_S = 1  # what a 503 for a store outage asks clients to wait before retrying


def store_unavailable(what: str, exc: BaseException) -> ApiError:
    """503 with Retry-After for a failed store call: nothing of the request was acknowledged, and
    retrying the same request is safe (appends are idempotent by id)."""
    return ApiError(503, f"{what}: {type(exc).__name__}: {exc}", headers={"Retry-After": str(RETRY_AFTER_S)})


def error_response(status: int, items: list[dict], headers: dict | None = None) -> Response:
    return Response(orjson.dumps({"detail": items}), status, headers, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.items, exc.headers)

    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        items = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                items.append({"field": "body", "message": f"invalid JSON: {e.get('msg')}"})
            else:
                items.extend(field_errors(_Single(e)))
        return error_response(422, items)

    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, [{"field": None, "message": str(exc.detail)}], exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


class _Single:
    """Adapts one FastAPI error dict to ``field_errors``' ValidationError-like input."""

    def __init__(self, err: dict) -> None:
        self._err = err

    def errors(self, include_url: bool = False) -> list[dict]:
        return [self._err]

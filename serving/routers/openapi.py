"""The OpenAPI document, exactly as the service behaves (checked by schemathesis with all its checks).

FastAPI's generated document is the base; ``api_document`` corrects what FastAPI cannot know:

- every error is ``ErrorResponse`` (``{"detail": [{"field", "message"}]}``): FastAPI's default 422
  ``HTTPValidationError`` (``loc/msg/type``) is replaced on every route, and each route lists the 4xx/5xx
  it really returns (``error_responses``; 413 on every route with a body, from the middleware);
- request bodies the endpoints parse themselves (for speed and for the error format) are put in the
  components (``json_body`` references them from the route);
- bounds that come with the served model (its catalogue size, its number of user features) and with
  the config (``max_batch_events``), so a request the document allows is one the service accepts;
- stateful links: a banner's ``impression_id`` and items feed a click and a purchase on it, so a
  client generator (schemathesis' stateful phase) walks banner -> feedback as a user does (the only
  entry point with links: schemathesis starts its scenarios only from "reliable" roots, and a GET
  with links, e.g. versions -> pin, would crowd banners out);
- the served version as the example of ``/admin/pin`` (a version that exists).

The document depends on the served model, so the app builds one per model version it serves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pydantic import BaseModel

from serving.models import ErrorResponse

REF = "#/components/schemas/{model}"
BODY_METHODS = ("post", "put", "patch")
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

ERROR_DESCRIPTIONS = {
    401: "missing or wrong admin token",
    404: "no such resource",
    409: "conflicts with the state of the resource",
    413: "request body too large (max_body_bytes)",
    422: "invalid request; each problem names its field",
    503: "the service cannot answer now (no model loaded, or the event store is unavailable)",
}


def error_responses(
    *statuses: int, descriptions: dict[int, str] | None = None, headers: dict[int, dict] | None = None
) -> dict:
    """``responses=`` entries documenting ``ErrorResponse`` for each of ``statuses`` (a route's own
    ``descriptions`` override the generic ones; ``headers`` per status, e.g. ``{503: {"Retry-After":
    {"schema": {"type": "integer"}, "description": "..."}}}``)."""
    out = {}
    for s in statuses:
        entry = {"model": ErrorResponse, "description": (descriptions or {}).get(s, ERROR_DESCRIPTIONS[s])}
        if headers and s in headers:
            entry["headers"] = headers[s]
        out[s] = entry
    return out


def json_body(*models: type[BaseModel]) -> dict:
    """``openapi_extra`` for a JSON body that is one of ``models``."""
    refs = [{"$ref": REF.format(model=m.__name__)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_schemas(openapi: dict, *models: type[BaseModel]) -> dict:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for m in models:
        s = m.model_json_schema(ref_template=REF)
        schemas.update(s.pop("$defs", {}))
        schemas[m.__name__] = s
    return openapi


@dataclass(frozen=True)
class Limits:
    """What the document's bounds come from: the served model (None before one is loaded) and config."""

    n_products: int | None
    n_user_features: int
    max_batch_events: int
    model_version: str | None = None
    banner_size: int = 5
    n_categories: int = 0


def api_document(base: dict, limits: Limits, *models: type[BaseModel]) -> dict:
    """A corrected copy of FastAPI's ``base`` document (see the module docstring)."""
    doc = add_schemas(copy.deepcopy(base), *models)
    _errors_as_returned(doc)
    schemas = doc["components"]["schemas"]
    if limits.n_products is not None:
        _catalogue_bounds(schemas["BannerRequest"], limits.n_products, limits.n_user_features)
        _model_bounds(schemas["BannerRequest"], limits.banner_size, limits.n_categories)
    schemas["FeedbackRequest"]["properties"]["events"]["maxItems"] = limits.max_batch_events
    _banner_links(doc)
    if limits.model_version is not None and "PinRequest" in schemas:  # a version that can be pinned
        schemas["PinRequest"]["examples"] = [{"version": limits.model_version}]
    return doc


def _errors_as_returned(doc: dict) -> None:
    """Every 422 documented as ErrorResponse (FastAPI's HTTPValidationError removed), and 413 on every
    operation with a body (the middleware refuses an oversize body before routing)."""
    ref = {"$ref": REF.format(model=ErrorResponse.__name__)}
    schemas = doc["components"]["schemas"]
    schemas.setdefault(ErrorResponse.__name__, ErrorResponse.model_json_schema(ref_template=REF))
    for name in FASTAPI_VALIDATION:
        schemas.pop(name, None)
    for methods in doc.get("paths", {}).values():
        for method, op in methods.items():
            responses = op.setdefault("responses", {})
            for status, resp in responses.items():
                if status.startswith(("4", "5")):
                    resp["content"] = {"application/json": {"schema": dict(ref)}}
            if method in BODY_METHODS and "413" not in responses:
                responses["413"] = {
                    "description": ERROR_DESCRIPTIONS[413],
                    "content": {"application/json": {"schema": dict(ref)}},
                }


def _model_bounds(schema: dict, banner_size: int, n_categories: int) -> None:
    """The request's k is at most the served model's K; a model with categorical user features needs
    exactly that many values (both checked in the endpoint, so documented here)."""
    props = schema["properties"]
    props["k"]["maximum"] = banner_size
    props["k"]["description"] = f"banner size, 1 to the served model's {banner_size} (default {banner_size})"
    if n_categories:
        props["user_categories"] = {
            "type": "array",
            "items": {"type": "string", "maxLength": 256},
            "minItems": n_categories,
            "maxItems": n_categories,
            "description": f"the served model's {n_categories} categorical user features (raw values)",
        }
        schema["required"] = sorted({*schema.get("required", []), "user_categories"})


def _catalogue_bounds(schema: dict, n_products: int, n_user_features: int) -> None:
    """Product ids of a banner request lie in the served catalogue; a model with user features needs
    exactly that many (checked in the endpoint, so documented here)."""
    props = schema["properties"]
    props["viewed"]["maximum"] = n_products - 1
    props["history"]["items"]["maximum"] = n_products - 1
    if n_user_features:
        props["user_features"] = {
            "type": "array",
            "items": {"type": "number"},
            "minItems": n_user_features,
            "maxItems": n_user_features,
            "description": f"the served model's {n_user_features} user features",
        }
        schema["required"] = sorted({*schema.get("required", []), "user_features"})
    for ex in schema.get("examples", []):  # keep the examples inside the catalogue
        ex["viewed"] = min(ex["viewed"], n_products - 1)
        ex["history"] = [x for x in ex.get("history", []) if x < n_products and x != ex["viewed"]]
        if n_user_features:
            ex["user_features"] = [0.0] * n_user_features


def _banner_links(doc: dict) -> None:
    """OpenAPI links from a served banner to feedback on it (a click on its first product, a purchase
    of its second), with event ids derived from the impression id so each is new."""
    banner = doc["paths"]["/v1/banners"]["post"]["responses"]["200"]
    iid = "$response.body#/impression_id"
    common = {"impression_id": iid}
    banner["links"] = {
        "ClickOnTheBanner": {
            "operationId": "post_feedback",
            "description": "a click on the banner's first product",
            "requestBody": {
                "events": [
                    {
                        **common,
                        "event_id": "click-{" + iid + "}",
                        "type": "click",
                        "product_id": "$response.body#/items/0",
                    }
                ]
            },
            "x-schemathesis": {"merge_body": False},
        },
        "PurchaseFromTheBanner": {
            "operationId": "post_feedback",
            "description": "a purchase of two units of the banner's second product",
            "requestBody": {
                **common,
                "event_id": "purchase-{" + iid + "}",
                "type": "purchase",
                "product_id": "$response.body#/items/1",
                "units": 2,
                "price": 9.5,
            },
            "x-schemathesis": {"merge_body": False},
        },
    }

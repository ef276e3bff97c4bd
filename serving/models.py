"""Request and response bodies of the HTTP API (pydantic; their examples appear in the OpenAPI schema).

Catalogue bounds are not known statically (they come with the served model), so product ids are
checked against the model in the endpoints; everything else is checked here. ``field_errors`` turns a
pydantic ValidationError into the API's error items, one per problem, each naming its field as a
path such as ``history[3]`` or ``events[2].units``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recsys_rl.records import HISTORY_LEN, MAX_BANNER_SIZE

MAX_USER_FEATURES = 1024
MAX_ID = 2**63 - 1  # ids are stored as signed 64-bit integers (SQLite INTEGER)
MAX_UNITS = 1_000_000
EXAMPLE_IMPRESSION_ID = "3f0c9a4be1d54b7f9a0e6c1d2b3a4f5e.9d1c07be58f2a64c3e0b7a19d4f6c2e8"
IMPRESSION_ID_PATTERN = r"^[0-9a-f]{32}\.[0-9a-f]{32}$"  # serving.impression_ids: <token>.<tag>


def _integral(v: object) -> object:
    """JSON Schema counts 10.0 as an integer, so the API does too (strict mode otherwise refuses any
    float); 10.5, strings and booleans are still refused."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


Int = Annotated[int, BeforeValidator(_integral)]
"""An integer field of a request body: strict, but 10.0 is 10 (see ``_integral``)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BannerRequest(_Body):
    """A banner request: who is looking at what, and their recent purchases (most recent first)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"user_id": 42, "viewed": 4, "history": [3, 1, 2], "mode": "explore"}]
        }
    )

    user_id: Int = Field(ge=0, le=MAX_ID, description="the shopper")
    viewed: Annotated[int, Field(ge=0, le=MAX_ID)] | None = Field(
        None,
        description="product being viewed (in the served catalogue); none on e.g. a home page",
    )
    history: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(
        default_factory=list,
        max_length=HISTORY_LEN,
        json_schema_extra={"uniqueItems": True},
        description="last purchases, most recent first, distinct (in the served catalogue)",
    )
    user_features: list[float] | None = Field(
        None, max_length=MAX_USER_FEATURES, description="optional features, used by models trained with them"
    )
    user_categories: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None,
        max_length=64,
        description="categorical user features (raw values), for models trained with them",
    )
    k: Annotated[int, Field(ge=1, le=MAX_BANNER_SIZE)] | None = Field(
        None,
        description="banner size: 1 to the served model's K (default: its K, 5 unless trained otherwise)",
    )
    mode: Literal["explore", "deterministic"] = Field(
        "explore", description="explore: sampled banner (logged for learning); deterministic: the top k"
    )

    @field_validator("viewed", "k", mode="before")
    @classmethod
    def _integral_optional(cls, v: object) -> object:  # as Int (an Annotated validator inside the
        return _integral(v)  # optional would lose its bounds in the schema)

    @field_validator("history", mode="before")
    @classmethod
    def _integral_items(cls, v: object) -> object:  # as Int, per item (a list item validator would
        return [_integral(x) for x in v] if isinstance(v, list) else v  # lose its bounds in the schema)

    @field_validator("history")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            seen: set[int] = set()
            for i, x in enumerate(v):
                if x in seen:
                    raise ValueError(f"history[{i}]: product {x} appears twice; purchases must be distinct")
                seen.add(x)
        if any(x < 0 for x in v):
            i = next(i for i, x in enumerate(v) if x < 0)
            raise ValueError(f"history[{i}]: product ids are >= 0, got {v[i]}")
        return v

    @field_validator("user_features")
    @classmethod
    def _finite(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            i = next(i for i, x in enumerate(v) if not math.isfinite(x))
            raise ValueError(f"user_features[{i}]: must be finite, got {v[i]}")
        return v


class BannerResponse(BaseModel):
    """The banner to show, and what the learner needs to use its feedback later."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "impression_id": EXAMPLE_IMPRESSION_ID,
                    "model_version": "banner-policy/3",
                    "items": [2, 0, 3, 1, 4],
                    "propensity": 2.1e-06,
                    "log_propensity": -13.07,
                    "mode": "explore",
                }
            ]
        }
    )

    impression_id: str = Field(
        pattern=IMPRESSION_ID_PATTERN, description="unguessable id to quote in feedback"
    )
    model_version: str = Field(description="the policy version that chose the banner")
    items: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1,
        max_length=MAX_BANNER_SIZE,
        json_schema_extra={"uniqueItems": True},
        description="k distinct product ids in display order (k: the request's, else the model's K)",
    )
    propensity: float = Field(ge=0, le=1, description="probability the policy gave this exact ordered banner")
    log_propensity: float = Field(le=0, description="its log (exact; propensity may underflow to 0)")
    mode: Literal["explore", "deterministic"]


def _click_or_purchase(schema: dict) -> None:
    """FeedbackEvent's JSON schema as what the validator enforces: ``oneOf`` a click (units 0 or absent)
    or a purchase (units >= 1, required), told apart by ``type``; the shared fields stay as they are.
    """
    props, required = schema["properties"], schema["required"]
    title, description = schema["title"], schema.get("description")
    schema.clear()

    def branch(kind: str, units: dict, need_units: bool) -> dict:
        units = {**props["units"], **units}
        if need_units:
            units.pop("default")
        p = {**props, "type": {"type": "string", "const": kind}, "units": units}
        req = [*required, *(["units"] if need_units else [])]
        return {
            "type": "object",
            "title": f"{title} ({kind})",
            "properties": p,
            "required": req,
            "additionalProperties": False,
        }

    schema.update(
        title=title,
        description=description,
        oneOf=[branch("click", {"maximum": 0}, False), branch("purchase", {"minimum": 1}, True)],
        examples=[
            {
                "event_id": "c-7f3e",
                "impression_id": EXAMPLE_IMPRESSION_ID,
                "type": "purchase",
                "product_id": 2,
                "units": 2,
                "price": 19.99,
            }
        ],
    )


class FeedbackEvent(_Body):
    """A click on, or purchase of, a product shown in a banner."""

    model_config = ConfigDict(json_schema_extra=_click_or_purchase)

    event_id: str = Field(min_length=1, max_length=128, description="client-chosen id; resending is harmless")
    impression_id: str = Field(pattern=IMPRESSION_ID_PATTERN, description="from the banner response")
    type: Literal["click", "purchase"]
    product_id: Int = Field(ge=0, le=MAX_ID, description="a product of that banner")
    units: Int = Field(
        0, ge=0, le=MAX_UNITS, description="units bought (>= 1 for a purchase, 0 or absent for a click)"
    )
    price: float = Field(0.0, ge=0, allow_inf_nan=False, description="unit price paid")

    @model_validator(mode="after")
    def _units_match_type(self) -> Self:
        if self.type == "purchase" and self.units < 1:
            raise _FieldError("units", f"a purchase needs units >= 1, got {self.units}")
        if self.type == "click" and self.units != 0:
            raise _FieldError("units", f"a click has no units (0 or absent), got {self.units}")
        return self


class FeedbackRequest(_Body):
    """A batch of feedback events (a single event object is accepted too)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_id": "c-7f3e",
                            "impression_id": EXAMPLE_IMPRESSION_ID,
                            "type": "click",
                            "product_id": 2,
                        },
                    ]
                }
            ]
        }
    )

    events: list[FeedbackEvent] = Field(
        min_length=1, description="events, at most the server's max_batch_events (maxItems)"
    )


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 9, "duplicates": 1}]})

    accepted: int = Field(description="events stored by this request")
    duplicates: int = Field(
        description="events whose event_id was already stored (acknowledged, not stored again)"
    )


class PinRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": "3"}]})

    version: str = Field(min_length=1, description="registry version to serve, e.g. '3' or 'banner-policy/3'")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: Literal["ready"]
    model_version: str = Field(description="the version being served")
    n_products: int = Field(ge=1, description="its catalogue size (product ids are below it)")
    n_user_features: int = Field(ge=0, description="user features it needs (0: none)")
    temperature: float = Field(gt=0, description="exploration temperature")
    event_store_durability: str = Field(description="durable, or best-effort (may lose acknowledged events)")
    registry: dict | None = Field(
        default=None,
        description="the model source's polls: fresh (last_poll) or stale (since, stale_s, last_error)",
    )


class AdminState(BaseModel):
    """What is served, whether it is pinned, what the server follows, and what it can roll back to."""

    current: str | None = Field(description="the version being served (null before one is loaded)")
    n_products: int | None = Field(ge=1, description="its catalogue size")
    pinned: bool = Field(description="true while pinned (not following the registry alias)")
    following: str | None = Field(description="the model source followed (null: a fixed model)")
    history: list[str] = Field(description="versions available for rollback, most recent first")


class VersionsResponse(AdminState):
    available: list[str] = Field(description="versions of the source that can be pinned")
    available_error: str | None = Field(
        None, description="why the source's versions could not be listed (absent when they could)"
    )


class ErrorItem(BaseModel):
    field: str | None = Field(
        description="where the problem is, e.g. 'history[3]'; null when not about a field"
    )
    message: str


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {"field": "history[3]", "message": "product 1200 is outside the catalogue [0, 1000)"}
                    ]
                }
            ]
        }
    )

    detail: list[ErrorItem]


class _FieldError(ValueError):
    """A model-level check that blames one field (pydantic would otherwise report the whole object)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def field_path(loc: tuple) -> str:
    """('events', 2, 'units') -> 'events[2].units'; ('',) -> '[""]'; a leading 'body' is dropped; an
    empty location is the whole body (e.g. a JSON array where an object is expected) -> 'body'."""
    if loc and loc[0] == "body":
        loc = loc[1:]
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "":  # an empty key (e.g. an unknown field named ""): still a path, not null
            out += '[""]'
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def field_errors(err: ValidationError, prefix: tuple = ()) -> list[dict]:
    """The API's error items for a pydantic error: [{'field': 'history[3]', 'message': ...}, ...]."""
    items = []
    for e in err.errors(include_url=False):
        loc = prefix + tuple(e["loc"])
        if e["type"] == "json_invalid":
            items.append(
                {"field": "body", "message": f"invalid JSON: {e['msg'].removeprefix('Invalid JSON: ')}"}
            )
            continue
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            items.append({"field": field_path(loc + (ctx_err.field,)), "message": ctx_err.message})
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if ": " in msg and msg.split(": ", 1)[0].startswith(str(loc[-1]) if loc else "\0"):
            # a validator that names the element itself, e.g. "history[2]: product 5 appears twice"
            head, msg = msg.split(": ", 1)
            loc = loc[:-1] + (head,)
            items.append({"field": field_path(loc), "message": msg})
            continue
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and not isinstance(e["input"], dict | list) and e["type"] != "json_invalid":
            shown = repr(e["input"])
            msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        items.append({"field": field_path(loc), "message": msg})
    return items

"""Column mappings: which columns of someone else's logged-data table hold what, as a validated YAML.

A ``ColumnMapping`` describes one of two layouts: ``banner`` (one row per impression, e.g. columns
item_0..item_4, click_0..click_4, prop_0..prop_4) or ``slot`` (one row per displayed item). It names
the logging policy's propensities (a banner propensity, its log, or per-position ones), inline feedback
columns or a separate long feedback file (``FeedbackMapping``), and the context columns. Checked on load,
so a file is only ever read through a mapping that makes sense.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys_rl.config import load
from recsys_rl.logdata.parquet import FEEDBACK_FILE, IMPRESSIONS_FILE
from recsys_rl.records import HISTORY_LEN, MAX_BANNER_SIZE

Columns = str | list[str]
"""One list-valued column, or one scalar column per slot (per banner position, or per history entry)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedbackMapping(_Strict):
    """A long feedback table: one row per click or purchase, joined to impressions by impression id."""

    file: str = Field(..., min_length=1, description="feedback file, relative to the impressions file")
    impression_id: str = Field("impression_id", description="impression the event belongs to")
    type: str = Field("type", description="event type column: 'click' or 'purchase'")
    position: str = Field("position", description="0-based banner position of the event")
    product_id: str | None = Field(
        "product_id", description="product of the event (checked against the banner)"
    )
    units: str = Field("units", description="units bought (purchases)")
    price: str | None = Field("price", description="unit price (revenue = units * price); null: no revenue")
    event_id: str | None = Field("event_id", description="event id; repeated ids count once")


class ColumnMapping(_Strict):
    """Which columns of a logged-data table hold what. Unset optional fields mean 'not logged'.

    ``layout: slot`` reads one row per displayed item: ``items``, ``position``, ``position_propensities``
    (that slot's propensity) and ``clicks``/``units``/``revenue`` each name one column; ``impression_id``
    (optional) regroups the rows of one banner."""

    impressions: str | None = Field(None, description="impressions file inside --logs when it is a directory")
    layout: Literal["banner", "slot"] = Field(
        "banner", description="banner: one row per impression; slot: one row per displayed item"
    )
    impression_id: str | None = Field(
        None, description="unique impression id (needed with a feedback file); slot layout: the banner key"
    )
    position: str | None = Field(None, description="slot layout: the row's banner position")
    first_position: Literal[0, 1] = Field(0, description="slot layout: the number of the first position")
    banner_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BANNER_SIZE,
        description="slot layout: products per banner (default: max position + 1)",
    )
    viewed: str | None = Field(None, description="the product being viewed (none: e.g. home-page banners)")
    history: Columns | None = Field(None, description="past purchases, most recent first (<= 10)")
    user_features: Columns | None = Field(
        None,
        description="numeric user features: one list column, one column per feature, or a pattern "
        "such as 'affinity_*' (every matching column, in numeric order)",
    )
    categorical_features: list[str] | None = Field(
        None,
        min_length=1,
        description="categorical user features, one column each (encoded by the model); patterns allowed",
    )
    items: Columns = Field(..., description="the banner's products in display order")
    propensity: str | None = Field(None, description="P(banner) under the logging policy")
    log_propensity: str | None = Field(None, description="log P(banner) under the logging policy")
    position_propensities: Columns | None = Field(
        None, description="P(logged product at its position) under the logging policy"
    )
    clicks: Columns | None = Field(None, description="inline feedback: 0/1 click per position")
    units: Columns | None = Field(None, description="inline feedback: units bought per position")
    revenue: Columns | None = Field(None, description="inline feedback: revenue per position")
    feedback: FeedbackMapping | None = Field(None, description="a separate long feedback file instead")

    @field_validator("items", "position_propensities", "clicks", "units", "revenue")
    @classmethod
    def _check_positions(cls, v: Columns | None) -> Columns | None:
        if isinstance(v, list) and not 1 <= len(v) <= MAX_BANNER_SIZE:
            raise ValueError(
                f"needs 1 to {MAX_BANNER_SIZE} column names, one per banner position, got {len(v)}"
            )
        return v

    @field_validator("history")
    @classmethod
    def _check_history(cls, v: Columns | None) -> Columns | None:
        if isinstance(v, list) and not 1 <= len(v) <= HISTORY_LEN:
            raise ValueError(f"needs 1 to {HISTORY_LEN} column names, got {len(v)}")
        return v

    @model_validator(mode="after")
    def _check_sources(self) -> ColumnMapping:
        if self.layout == "slot":
            return self._check_slot()
        if self.position is not None or self.banner_size is not None:
            raise ValueError("position/banner_size: only for layout: slot (one row per displayed item)")
        if isinstance(self.items, list):  # per-position columns: every per-position field has K of them
            k = len(self.items)
            for name in ("position_propensities", "clicks", "units", "revenue"):
                v = getattr(self, name)
                if isinstance(v, list) and len(v) != k:
                    raise ValueError(f"{name}: needs {k} column names, one per banner position (as items)")
        if self.propensity is None and self.log_propensity is None and self.position_propensities is None:
            raise ValueError(
                "give propensity, log_propensity or position_propensities (the logging policy's)"
            )
        if (self.clicks is None) == (self.feedback is None):
            raise ValueError("give exactly one of clicks (inline feedback) and feedback (a feedback file)")
        if self.clicks is None and (self.units is not None or self.revenue is not None):
            raise ValueError("units/revenue columns need inline clicks columns too")
        if self.feedback is not None and self.impression_id is None:
            raise ValueError("impression_id: needed to join a feedback file")
        return self

    def _check_slot(self) -> ColumnMapping:
        for name in ("items", "position_propensities", "clicks", "units", "revenue"):
            if isinstance(getattr(self, name), list):
                raise ValueError(f"{name}: layout slot: name one column (a row is one displayed item)")
        if self.position is None:
            raise ValueError("position: layout slot needs the column of each row's banner position")
        if self.feedback is not None or self.clicks is None:
            raise ValueError("clicks: layout slot needs the row's click column (no separate feedback file)")
        if self.position_propensities is None:
            raise ValueError("position_propensities: layout slot needs the column of that slot's propensity")
        if (self.propensity is not None or self.log_propensity is not None) and self.impression_id is None:
            raise ValueError(
                "propensity: a banner propensity in slot rows needs impression_id to regroup them"
            )
        return self


def event_mapping(impressions: str = IMPRESSIONS_FILE, feedback: str = FEEDBACK_FILE) -> ColumnMapping:
    """The event schema as a mapping (columns named as in IMPRESSION_SCHEMA / FEEDBACK_SCHEMA)."""
    return ColumnMapping(
        impressions=impressions,
        impression_id="impression_id",
        viewed="viewed",
        history="history",
        items="items",
        propensity="propensity",
        log_propensity="log_propensity",
        feedback=FeedbackMapping(file=feedback),
    )


def load_mapping(path: str | os.PathLike) -> ColumnMapping:
    """A ColumnMapping from YAML; ConfigError ('<file>: <field>: <problem>') when invalid."""
    return load(ColumnMapping, path)

"""The server's one config: where the model and the events come from and how banners are served.

Loaded from YAML with ``load_config`` (unknown keys, wrong types and out-of-range values stop with one
line naming the file and the field, as every other config of the project does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_rl.config import load

ADMIN_TOKEN_ENV = "RECSYS_RL_ADMIN_TOKEN"
MODEL_SOURCES = ("model_uri", "registered_model", "policy_path")


class ServeConfig(BaseModel):
    """Model source (exactly one of ``model_uri``, ``registered_model`` or ``policy_path``), event
    store, exploration and limits of the banner service."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model_uri: str | None = Field(
        None,
        min_length=1,
        description="registry model to serve, 'models:/<name>@<alias>' (followed) or 'models:/<name>/<version>'",
    )
    registered_model: str | None = Field(
        None, min_length=1, description="registered model name, served at `alias` (alternative to model_uri)"
    )
    alias: str = Field("champion", min_length=1, description="registry alias followed with registered_model")
    policy_path: Path | None = Field(None, description="a local policy file from save_policy (no registry)")
    tracking_uri: str | None = Field(
        None, min_length=1, description="MLflow tracking/registry URI; default $MLFLOW_TRACKING_URI or sqlite"
    )
    events: str = Field(
        "sqlite:///events.db", min_length=1, description="event store URI (sqlite:/// or redis://)"
    )
    durability: Literal["durable", "best-effort"] = Field(
        "durable",
        description="what the event store must guarantee: 'durable' refuses to start on a Redis that would "
        "lose acknowledged events on a restart (needs appendonly yes + appendfsync always); 'best-effort' "
        "starts anyway, warns once and shows recsys_event_store_best_effort 1 on /metrics",
    )
    temperature: float = Field(1.0, gt=0, le=100, description="exploration temperature of banner sampling")
    seed: int | None = Field(None, description="seed of the exploration noise; None draws one at start")
    attribution_window_s: float = Field(
        3600.0,
        gt=0,
        description="feedback older than this after its impression is refused (the trainer has moved on)",
    )
    reload_interval_s: float = Field(
        30.0, ge=0, description="how often to poll the registry / policy file for a new version; 0 = never"
    )
    keep_versions: int = Field(3, ge=1, le=50, description="previous models kept in memory for rollback")
    auto_rollback_after: int = Field(
        20,
        ge=0,
        description="scoring batches in a row that the served version fails (served by a fallback instead) "
        "before it is rolled back to that fallback and pinned; 0 = never",
    )
    admin_token: str | None = Field(
        None,
        min_length=8,
        description=f"token of the /admin endpoints; default ${ADMIN_TOKEN_ENV}; unset = disabled",
    )
    secret: str | None = Field(
        None,
        min_length=16,
        repr=False,
        description="key signing impression ids; default $RECSYS_RL_SECRET; unset = a key made once and "
        "kept in the event store (shared by the servers on that store, kept across restarts)",
    )
    max_batch_events: int = Field(1000, ge=1, description="most feedback events in one request (more -> 422)")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (more -> 413)")
    max_scoring_batch: int = Field(
        256, ge=1, description="most concurrent banner requests scored in one forward"
    )
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0 = any free port)")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes (uvicorn workers) on one port, sharing the event store, the "
        "registry alias and the signing secret; /metrics aggregates them (prometheus multiprocess mode)",
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="torch intra-op threads (1 is fastest per request)"
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs (needs an OpenTelemetry SDK "
        "configured in the process); off by default: /metrics already exports Prometheus metrics, and "
        "the check alone costs every request a few environment lookups",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [n for n in MODEL_SOURCES if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one model source, not {' and '.join(given)}")
        if self.model_uri is not None and not self.model_uri.startswith("models:/"):
            raise ValueError(
                f"model_uri: expected 'models:/<name>@<alias>' or 'models:/<name>/<version>', got {self.model_uri!r}"
            )
        return self

    @property
    def has_model_source(self) -> bool:
        return any(getattr(self, n) is not None for n in MODEL_SOURCES)

    def resolved_admin_token(self) -> str | None:
        """The configured token, else the environment's; None disables the admin endpoints."""
        return self.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> ServeConfig:
    """The YAML at ``path`` (defaults if None) with ``overrides`` (None values ignored) applied;
    ConfigError ('<file>: <field>: <problem>') on bad input."""
    from recsys_rl.config import validate

    base = load(ServeConfig, path).model_dump(exclude_unset=True) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given.keys() & set(MODEL_SOURCES):
        for k in MODEL_SOURCES:  # a source on the command line replaces the file's
            base.pop(k, None)
    base.update(given)
    return validate(ServeConfig, base, str(path) if path is not None else "serve options")

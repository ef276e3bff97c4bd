"""One worker process of ``recsys-rl serve --workers N``: the app built from the config its master
put in the environment (uvicorn spawns each worker as a fresh interpreter and calls ``app``).

Every worker opens the same event store (SQLite WAL, writers wait on each other up to the busy
timeout; or Redis), follows the same registry alias on its own (each hot-swaps on its own poll) and
signs impression ids with the same secret (the config's, the environment's, or the one kept in the
shared store), so feedback on a banner any worker served is accepted by every other.
"""

from __future__ import annotations

import gc
import os

from fastapi import FastAPI

CONFIG_ENV = "RECSYS_RL_SERVE_CONFIG"  # the validated ServeConfig as JSON, set by the master


def app() -> FastAPI:
    """uvicorn factory (``serving.worker:app``, ``factory=True``)."""
    from serving.app import create_app
    from serving.config import ServeConfig

    cfg = ServeConfig.model_validate_json(os.environ[CONFIG_ENV])
    application = create_app(cfg)
    gc.freeze()  # startup objects leave the collector (as in the single-worker server)
    return application

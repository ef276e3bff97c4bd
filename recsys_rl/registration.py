"""Registering a trainer's version exactly once, even when MLflow fails mid-call.

A registration whose reply was lost (MLflow died after creating the version) must not create a second
version when it is retried. Each candidate carries a key (the trainer's consumer and update number);
the version is created with that key as a tag, and every attempt first searches for a version with
the tag: found means a previous attempt got through, so only the alias is (re)set.
"""

from __future__ import annotations

import mlflow

from recsys_rl import tracking
from recsys_rl.policy import BannerPolicy

TAG = "recsys_rl.registration"


def registered_version(client: mlflow.MlflowClient, name: str, key: str) -> str | None:
    """The version of ``name`` registered under ``key`` by an earlier attempt, if any."""
    found = client.search_model_versions(f"name='{name}' and tags.`{TAG}` = '{key}'")
    return str(min(int(v.version) for v in found)) if found else None


def register_once(policy: BannerPolicy, name: str, alias: str | None, key: str) -> str:
    """Log ``policy`` and register it as a version of ``name`` tagged ``key``, unless a version with that
    tag exists already; point ``alias`` at it. Returns the version. Raises whatever MLflow raises (the
    caller retries: a retry after any failure registers at most one version per key)."""
    client = mlflow.MlflowClient()
    version = registered_version(client, name, key)
    if version is None:
        model_uri, _ = tracking.log_policy(policy, None)  # logged, not registered yet
        version = str(mlflow.register_model(model_uri, name, tags={TAG: key}).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version

"""Starting or joining Ray with the settings that bite on small machines, and the tracking-store check.

``connect("local", ...)`` starts a Ray in this process's machine; any other address (``auto``,
``host:6379``, ``ray://host:10001``) joins a running cluster, whose own settings then apply. What a
Ray started here gets (``RayConfig``): a bounded object store (Ray's default takes 30% of RAM), no
dashboard, no usage statistics. A ``RAY_ADDRESS`` left in the environment would make ``ray.init()``
join that cluster instead of starting one: with ``local`` it is set aside, and with an explicit
address it is the address given that counts. Ray 2.59+ starts clusters with token authentication:
a Ray started here keeps its token in ``~/.ray/auth_token`` (``ray.token_auth: false`` turns it off
via ``RAY_AUTH_MODE=disabled``), and joining a cluster needs its token (``RAY_AUTH_TOKEN`` or that
file); ``connect`` says so when the join is refused.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from recsys_rl.config import RayConfig, configs_dir

LOCAL = "local"


def ray_env_vars(cfg: RayConfig) -> dict[str, str]:
    """Environment every Ray process of ours sees: usage stats per the setting, our presets' directory."""
    env = {
        "RAY_USAGE_STATS_ENABLED": "1" if cfg.usage_stats else "0",
        "RECSYS_RL_CONFIGS": str(configs_dir().resolve()),
    }
    if not cfg.token_auth and "RAY_AUTH_MODE" not in os.environ:
        env["RAY_AUTH_MODE"] = "disabled"
    return env


def connect(address: str, cfg: RayConfig, tracking_uri: str | None = None):
    """Ray up for this driver (started here for ``local``, joined otherwise); returns the ``ray`` module.

    An already initialised Ray (a test's cluster, a notebook's ``ray.init``) is used as it is.
    ``tracking_uri``: refused when it is a file store and the cluster spans several hosts.
    """
    env = ray_env_vars(cfg)
    os.environ.update(env)  # read by ray.init itself (usage stats) and handed to workers below
    import ray

    if not ray.is_initialized():
        runtime_env = {"env_vars": env}
        if address == LOCAL:
            stray = os.environ.pop("RAY_ADDRESS", None)
            try:
                ray.init(
                    address="local",
                    num_cpus=cfg.num_cpus,
                    object_store_memory=cfg.object_store_mb * 2**20,
                    include_dashboard=cfg.include_dashboard,
                    runtime_env=runtime_env,
                    logging_level="WARNING",
                    log_to_driver=False,
                )
            finally:
                if stray is not None:
                    os.environ["RAY_ADDRESS"] = stray
        else:
            from ray.exceptions import AuthenticationError

            try:
                ray.init(
                    address=address, runtime_env=runtime_env, logging_level="WARNING", log_to_driver=False
                )
            except AuthenticationError as e:
                raise ConnectionError(
                    f"--ray {address}: the cluster requires its authentication token "
                    f"({' '.join(str(e).split())[:200]}): set RAY_AUTH_TOKEN or copy the head node's "
                    "~/.ray/auth_token here"
                ) from None
            except ConnectionError as e:
                raise ConnectionError(
                    f"--ray {address}: could not join the Ray cluster ({' '.join(str(e).split())[:300]}); "
                    "start one with `ray start --head`, or use --ray local; a cluster with token "
                    "authentication needs its token in RAY_AUTH_TOKEN"
                ) from None
    if tracking_uri is not None:
        check_tracking_store(tracking_uri, cluster_hosts(ray))
    return ray


def cluster_hosts(ray) -> set[str]:
    """The distinct host addresses of the cluster's live nodes (several nodes may share one host)."""
    return {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def check_tracking_store(uri: str, hosts: set[str]) -> None:
    """Refuse a file-backed MLflow store (``sqlite:``, a path) for a cluster on more than one host.

    A SQLite file is safe from many processes on one host (its nodes share the file and its locks),
    not from many hosts (network file systems break SQLite's locking): trials would lose or corrupt
    runs. The engine starts no server itself; the user points ``MLFLOW_TRACKING_URI`` at one.
    """
    scheme = urlparse(uri).scheme
    if len(hosts) > 1 and scheme in ("sqlite", "file", ""):
        raise ValueError(
            f"tracking.tracking_uri: {uri} is a file on one host, but the Ray cluster spans "
            f"{len(hosts)} hosts ({', '.join(sorted(hosts))}); run an MLflow tracking server "
            "(`mlflow server --backend-store-uri postgresql://...`) and set "
            "MLFLOW_TRACKING_URI=http://<server>:5000"
        )

"""Ray starts only when asked, and a file-backed MLflow store is refused for a cluster of many hosts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys_rl.config import RayConfig
from recsys_rl.distributed.cluster import check_tracking_store, ray_env_vars


def test_the_default_paths_never_import_ray():
    code = (
        "import sys\n"
        "import recsys_rl, recsys_rl.cli.main, recsys_rl.jobs.train, recsys_rl.logdata.parquet\n"
        "from recsys_rl.cli.main import app\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:////abs/mlflow.db", "file:///tmp/mlruns"])
def test_a_file_store_is_refused_for_a_cluster_on_two_hosts(uri):
    with pytest.raises(ValueError, match="tracking_uri: .* spans 2 hosts .* MLFLOW_TRACKING_URI"):
        check_tracking_store(uri, {"10.0.0.1", "10.0.0.2"})


def test_a_file_store_is_fine_on_one_host_and_a_server_anywhere():
    check_tracking_store("sqlite:///mlflow.db", {"10.0.0.1"})
    check_tracking_store("http://mlflow:5000", {"10.0.0.1", "10.0.0.2"})
    check_tracking_store("postgresql://u@db/mlflow", {"10.0.0.1", "10.0.0.2"})


def test_usage_stats_are_off_and_token_auth_follows_the_setting(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert ray_env_vars(RayConfig())["RAY_USAGE_STATS_ENABLED"] == "0"
    assert "RAY_AUTH_MODE" not in ray_env_vars(RayConfig())
    assert ray_env_vars(RayConfig(token_auth=False))["RAY_AUTH_MODE"] == "disabled"

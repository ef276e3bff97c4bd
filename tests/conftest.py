import os

import pytest
import torch

torch.set_num_threads(1)  # tests share 2 cores; one thread is also the fastest for these tiny tensors


@pytest.fixture(autouse=True)
def _no_env_tracking(monkeypatch):
    """A developer's MLFLOW_TRACKING_URI must not redirect test runs to a team server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

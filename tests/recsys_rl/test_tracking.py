"""Where a run's artifacts land: next to the SQLite store the run is tracked in, whatever the cwd."""

from __future__ import annotations

import mlflow

from recsys_rl import tracking
from recsys_rl.config import TrackingConfig


def test_artifacts_of_a_new_experiment_go_beside_the_sqlite_file_not_into_the_cwd(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = TrackingConfig(tracking_uri=f"sqlite:///{store}/mlflow.db")
    tracking.setup(cfg, "beside the store")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert list(elsewhere.iterdir()) == []
    assert (
        store / "mlruns" / "beside the store" / run.info.run_id / "artifacts" / "note.txt"
    ).read_text() == "hello"
    tracking.setup(cfg, "beside the store")  # an existing experiment is reused as it is
    assert mlflow.get_experiment_by_name("beside the store").experiment_id == run.info.experiment_id

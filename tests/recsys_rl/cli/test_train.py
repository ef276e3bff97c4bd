"""train-baseline, train and quickstart as a user runs them: a subprocess, real files, real MLflow store."""

import mlflow
import pandas as pd
import pytest

from tests.cli import run_cli


@pytest.mark.slow
def test_quickstart_leaves_a_run_with_metrics_plots_and_a_loadable_model(tmp_path):
    r = run_cli(["quickstart", "--impressions", "20480", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reference" in r.stdout and "oracle" in r.stdout and "MLflow run id" in r.stdout
    run_id = r.stdout.split("MLflow run id:")[1].split()[0]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    data = client.get_run(run_id).data
    assert "oracle_gap_closed" in data.metrics and data.tags["reward_scheme"] == "graded"
    assert {"learning_curves.png", "evaluation.csv", "config.yaml"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/banner-policy/1")
    contexts = pd.DataFrame({"viewed": [1, 2, 3], "history": [[4, 5], [], [6]]})
    greedy = model.predict(contexts)
    assert [len(set(b)) for b in greedy["items"]] == [5, 5, 5] and (greedy["propensity"] == 1.0).all()
    sampled = model.predict(contexts, params={"mode": "explore", "seed": 1})
    assert ((sampled["log_propensity"] < 0) & (sampled["propensity"] > 0)).all()
    again = model.predict(contexts, params={"mode": "explore", "seed": 1})
    assert sampled["items"].map(list).tolist() == again["items"].map(list).tolist()  # seeded: reproducible
    assert (tmp_path / "recsys-rl-quickstart" / "reference.pt").exists()


def test_simulate_then_train_baseline_from_the_files(tmp_path):
    r = run_cli(
        [
            "simulate",
            "--config",
            "configs/sim/small.yaml",
            "--impressions",
            "5000",
            "--out",
            str(tmp_path / "logs"),
        ],
        cwd=".",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(
        [
            "train-baseline",
            "--logs",
            str(tmp_path / "logs"),
            "--out",
            str(tmp_path / "ref.pt"),
            "--set",
            "baseline.epochs=1",
        ],
        cwd=".",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ref.pt").exists()
    assert "held out: the latest" in r.stdout and "reference (greedy)" in r.stdout and "logger" in r.stdout


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    r = run_cli(["train", "--reward", "nonexistent", "--quiet"], tmp_path)
    assert r.returncode == 2 and "unknown scheme 'nonexistent'" in r.stderr
    r = run_cli(["train-baseline", "--logs", str(tmp_path / "missing")], tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1

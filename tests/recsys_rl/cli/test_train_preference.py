"""`train --logs --objective dpo|ipo|kto|sdpo`: preference optimisation end to end on small simulated logs."""

from __future__ import annotations

from pathlib import Path

import mlflow

from tests.cli import run_cli as run

SMALL_SIM = str(Path("configs/sim/small.yaml").resolve())


def test_sdpo_runs_end_to_end_with_the_logs_table_and_trl_metrics(tmp_path):
    r = run(
        ["simulate", "--config", SMALL_SIM, "--impressions", "5000", "--out", str(tmp_path / "logs")],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    args = [
        "train",
        "--logs",
        str(tmp_path / "logs"),
        "--objective",
        "sdpo",
        "--sim-config",
        SMALL_SIM,
        "--quiet",
    ]
    sets = [
        "baseline.epochs=1",
        "preference.steps=30",
        "preference.minibatch_size=128",
        "train.eval_users=256",
    ]
    r = run([*args, *[a for s in sets for a in ("--set", s)]], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "offline fine-tuning: reference vs fine-tuned" in r.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    run_ = runs[runs["tags.mlflow.runName"] == "offline-sdpo-graded"].iloc[0]
    assert run_["params.preference.objective"] == "sdpo"
    for m in ("rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies"):
        assert run_[f"metrics.{m}"] == run_[f"metrics.{m}"]  # logged (not NaN)
    assert run_["metrics.final_kl_to_reference"] > 0 and "metrics.final_oracle_gap_closed" in runs.columns


def test_objective_settings_are_refused_where_they_do_not_apply(tmp_path):
    logs = str(tmp_path / "logs")
    r = run(["train", "--logs", logs, "--set", "preference.beta=0.5", "--quiet"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: preference.beta: does not apply to train --logs (only with --objective dpo|ipo|kto|sdpo)"
    ]
    r = run(["train", "--logs", logs, "--objective", "dpo", "--set", "train.lr=0.01", "--quiet"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: train.lr: does not apply to train --logs (--objective dpo reads preference.*, not train.*)"
    ]
    r = run(["train", "--logs", logs, "--objective", "rlhf", "--quiet"], tmp_path)
    assert r.returncode == 2 and "--objective: 'rlhf' is none of topk, dpo, ipo, kto, sdpo" in r.stderr
    r = run(["train", "--objective", "dpo", "--quiet"], tmp_path)
    assert r.returncode == 2 and "--objective: needs --logs" in r.stderr

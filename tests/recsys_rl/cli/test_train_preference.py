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


def test_sdpo_takes_its_examination_curve_from_a_reward_model(tmp_path):
    """The curve a reward model fitted on the logs is the one sdpo trains with (logged as its param);
    the other objectives refuse a reward model, and a curve given twice is refused."""
    logs = str(tmp_path / "logs")
    r = run(["simulate", "--config", SMALL_SIM, "--impressions", "4000", "--out", logs], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(["train-reward-model", "--logs", logs, "--set", "epochs=1", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    from recsys_rl.reward_model import load_reward_model

    curve = load_reward_model("models:/banner-reward-model/1").examination().tolist()
    assert curve[0] == 1.0 and all(0 < e < 1 for e in curve[1:])
    sets = ["baseline.epochs=1", "preference.steps=10", "preference.minibatch_size=64"]
    base = ["train", "--logs", logs, "--reward-model", "models:/banner-reward-model/1", "--quiet"]
    r = run([*base, "--objective", "sdpo", *[a for s in sets for a in ("--set", s)]], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = mlflow.search_runs(search_all_experiments=True)
    logged = runs[runs["tags.mlflow.runName"] == "offline-sdpo-graded"].iloc[0][
        "params.preference.examination"
    ]
    assert [float(e) for e in logged.strip("[]").split(",")] == [round(e, 6) for e in curve]

    r = run([*base, "--objective", "kto"], tmp_path)
    assert (
        r.returncode == 2
        and "--reward-model: --objective kto takes its preferences from the logs" in r.stderr
    )
    r = run([*base, "--objective", "sdpo", "--set", "preference.examination=[1,0.5,0.4,0.3,0.2]"], tmp_path)
    assert r.returncode == 2 and "preference.examination is set too" in r.stderr


def test_item_level_objectives_run_on_the_open_bandit_sample_and_are_judged_by_iips_and_dr(tmp_path):
    """The real Open Bandit sample (slot rows, no impression key) through the shipped mapping: kto and
    dpo train on the item-level rows and report the held-out IIPS value beside the logger's; the kept
    policy is valued by IIPS and DR with `evaluate`; sdpo, which needs whole banners, says why not."""
    from tests.obd import open_bandit_sample

    (tmp_path / "all.csv").symlink_to(open_bandit_sample())
    mapping = str(Path("configs/mappings/open_bandit.yaml").resolve())
    logs = ["--logs", "all.csv", "--mapping", mapping]
    r = run(["train-baseline", *logs, "--out", "ref.pt", "--set", "baseline.epochs=2"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    sets = ["preference.steps=40", "preference.minibatch_size=128"]
    base = ["train", *logs, "--reference", "ref.pt", "--reward", "ctr", "--quiet"]
    for objective in ("kto", "dpo"):
        r = run([*base, "--objective", objective, *[a for s in sets for a in ("--set", s)]], tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        table = r.stdout.split("offline fine-tuning")[1]
        iips = next(line for line in table.splitlines() if "iips_value" in line)
        assert len([c for c in iips.split("│") if c.strip() not in ("", "–")]) == 3  # name, ref, fine-tuned
        assert "heldout_sampled " in table  # the logger's own held-out value beside them
    model = r.stdout.split("model:")[1].split()[0]
    ev = [
        "evaluate",
        *logs,
        "--policy",
        model,
        "--reward",
        "ctr",
        "--estimators",
        "iips,dr",
        "--samples",
        "8",
    ]
    r = run(ev, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "IIPS" in r.stdout and "DR" in r.stdout
    r = run([*base, "--objective", "sdpo"], tmp_path)
    assert r.returncode == 2 and "sdpo compares the products of one banner" in r.stderr

"""`recsys-rl loop`: the closed loop as a user runs it, tracked as one parent run with a child per round."""

import mlflow

from tests.cli import run_cli

SMALL = [
    "--set", "sim.n_products=200", "--set", "sim.n_categories=10", "--set", "sim.n_users=3000",
    "--set", "sim.consideration_size=30", "--set", "policy.embed_dim=16", "--set", "policy.hidden_dim=64",
    "--set", "baseline.logged_impressions=5000", "--set", "baseline.epochs=1",
    "--set", "train.contexts_per_batch=256", "--set", "train.minibatch_size=512",
    "--set", "loop.impressions_per_round=2000", "--set", "loop.finetune_impressions=4096",
    "--set", "loop.eval_users=256",
]  # fmt: skip


def test_loop_compares_the_plain_and_the_mitigated_loop_in_one_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["loop", "--rounds", "1", "--compare", "--quiet", *SMALL, "--set", f"tracking.tracking_uri={uri}"]
    args += [
        "--set",
        "loop.debias=true",
        "--set",
        "loop.anchor=round0",
        "--set",
        "loop.exploration_floor=0.1",
    ]
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "exposure_gini" in r.stdout and "oracle: exposure Gini" in r.stdout
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys-rl").experiment_id])
    parent = next(x for x in runs if x.info.run_name.startswith("loop-"))
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(x.info.run_name for x in children) == [
        "configured-round0", "configured-round1", "plain-round0", "plain-round1"
    ]  # fmt: skip
    assert "exposure_gini" in children[0].data.metrics and "jaccard" in children[0].data.metrics
    history = client.get_metric_history(parent.info.run_id, "plain_exposure_gini")
    assert [m.step for m in history] == [0, 1]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"loop_rounds.png", "loop_rounds.csv"} <= arts


def test_a_bad_loop_setting_is_one_readable_line(tmp_path):
    r = run_cli(["loop", "--set", "loop.exposure_cap=0.5"], tmp_path)
    assert r.returncode == 2
    assert "loop" in r.stderr and "exposure_cap" in r.stderr and "Traceback" not in r.stderr

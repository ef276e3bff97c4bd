"""Sweeps on a real two-node Ray cluster: every trial one MLflow child run, surviving a node's death."""

from __future__ import annotations

import functools
import subprocess
import threading
import time

import mlflow
import pytest
import yaml

from recsys_rl.config import SearchConfig, load_reward
from recsys_rl.distributed.sweep import grid_points, ray_sweep
from recsys_rl.distributed.trial import TRIAL_TAG
from simulator import Simulator
from tests.cli import CLI, run_cli
from tests.recsys_rl.distributed.conftest import tiny_reference, tiny_run

pytestmark = pytest.mark.ray


def children(uri: str, parent: str):
    client = mlflow.MlflowClient(uri)
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def test_sweep_cli_runs_four_trials_on_both_nodes_with_one_child_run_each(two_nodes, tmp_path):
    cfg = tiny_run(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = run_cli(
        [
            "sweep",
            "--ray",
            two_nodes.cluster.address,
            "--config",
            "run.yaml",
            "--rewards",
            "graded,ctr",
            "--kl-targets",
            "0.1,0.3",
            "--experiment",
            "sweep-test",
            "--name",
            "four",
            "--quiet",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 trials (0 failed)" in res.stdout
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("sweep-test").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.ray_sweep = 'four'")
    runs = children(cfg.tracking.tracking_uri, parent.info.run_id)
    assert len(runs) == 4
    assert len({r.data.tags[TRIAL_TAG] for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["ray_node_attempt_0"] for r in runs} == {two_nodes.head_id, two_nodes.worker.node_id}
    assert sorted((r.data.params["reward"], r.data.params["train.kl_target"]) for r in runs) == [
        ("ctr", "0.1"),
        ("ctr", "0.3"),
        ("graded", "0.1"),
        ("graded", "0.3"),
    ]
    assert all(r.data.metrics["impressions"] == cfg.train.total_impressions for r in runs)
    assert (tmp_path / "recsys-rl-runs" / "four.csv").is_file()


def test_asha_stops_trailing_trials_and_their_runs_are_closed(two_nodes, tmp_path):
    cfg = tiny_run(tmp_path)
    search = SearchConfig(
        scheduler="asha",
        num_samples=4,
        grace_period=1,
        reduction_factor=4,
        space={"train.lr": {"loguniform": [1e-5, 1e-2]}},
    )
    res = ray_sweep(
        cfg,
        tiny_reference(),
        functools.partial(Simulator, cfg.sim),
        grid_points([load_reward("graded")], [None], [None], [None]),
        address="auto",
        experiment="asha-test",
        name="asha",
        search=search,
        progress=False,
    )
    assert (res.trials, res.errors) == (4, 0)
    runs = children(cfg.tracking.tracking_uri, res.parent_run_id)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.params["train.lr"] for r in runs}) == 4  # drawn, not fixed
    total = cfg.train.total_impressions
    for r in runs:  # ASHA's choices depend on arrival order; how each run is closed must match them
        stopped = r.data.metrics["impressions"] < total
        assert r.data.tags["trial_outcome"] == ("stopped_early" if stopped else "completed")
    assert any(r.data.tags["trial_outcome"] == "completed" for r in runs)


def test_a_killed_worker_node_does_not_lose_or_duplicate_a_trial(two_nodes, tmp_path):
    cfg = tiny_run(tmp_path, updates=24, evaluations=6)
    uri = cfg.tracking.tracking_uri
    grid = grid_points([load_reward("graded")], [None], [None], [0, 1, 2, 3])
    out: dict = {}

    def sweep():
        out["res"] = ray_sweep(
            cfg,
            tiny_reference(),
            functools.partial(Simulator, cfg.sim),
            grid,
            address="auto",
            experiment="kill-test",
            name="kill",
            progress=False,
        )

    thread = threading.Thread(target=sweep)
    thread.start()
    worker, victim = two_nodes.worker.node_id, None
    deadline = time.time() + 90
    mlflow.set_tracking_uri(uri)
    while victim is None and time.time() < deadline and thread.is_alive():
        time.sleep(0.5)
        exp = mlflow.get_experiment_by_name("kill-test")
        runs = [] if exp is None else mlflow.MlflowClient().search_runs([exp.experiment_id])
        for r in runs:
            on_worker = r.data.tags.get("ray_node_attempt_0") == worker
            if on_worker and r.data.metrics.get("impressions", 0) >= 2 * 512 * 4:  # two checkpoints
                victim = r.info.run_id
    assert victim is not None, "no trial reached its second checkpoint on the worker node"
    killed = two_nodes.replace_worker()
    thread.join(timeout=180)
    assert not thread.is_alive()
    res = out["res"]
    assert (res.trials, res.errors) == (4, 0)
    runs = {r.info.run_id: r for r in children(uri, res.parent_run_id)}
    assert len(runs) == 4 and {r.info.status for r in runs.values()} == {"FINISHED"}
    v = runs[victim]
    assert v.data.tags["ray_node_attempt_0"] == killed
    assert v.data.metrics["restores"] >= 1
    assert int(v.data.tags["resumed_from_update"]) >= 8  # from its checkpoint, not from the start
    assert v.data.tags["ray_node_attempt_1"] != killed
    assert all(r.data.metrics["impressions"] == cfg.train.total_impressions for r in runs.values())
    history = mlflow.MlflowClient().get_metric_history(victim, "impressions")
    assert max(h.value for h in history) == cfg.train.total_impressions


def test_an_interrupted_sweep_resumes_into_the_same_parent_run(two_nodes, tmp_path):
    cfg = tiny_run(tmp_path, updates=16)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["sweep", "--ray", two_nodes.cluster.address, "--config", "run.yaml", "--rewards", "graded"]
    args += ["--seeds", "0,1,2,3", "--experiment", "resume-test", "--name", "again", "--quiet"]
    driver = subprocess.Popen(
        [*CLI, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    deadline, reported = time.time() + 120, False
    while not reported and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        exp = mlflow.get_experiment_by_name("resume-test")
        runs = [] if exp is None else mlflow.MlflowClient().search_runs([exp.experiment_id])
        reported = any(r.data.metrics.get("impressions", 0) >= 2 * 512 * 4 for r in runs)
    assert reported and driver.poll() is None, "the sweep ended before it could be interrupted"
    driver.kill()  # the driver dies mid-sweep: its trials go with it
    driver.wait()
    res = run_cli([*args, "--resume"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 trials (0 failed)" in res.stdout
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("resume-test").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.ray_sweep = 'again'")
    assert parent.info.status == "FINISHED"
    runs = children(cfg.tracking.tracking_uri, parent.info.run_id)
    assert len(runs) == 4 and len({r.data.tags[TRIAL_TAG] for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.metrics["impressions"] == cfg.train.total_impressions for r in runs)
    assert len(client.search_runs([exp])) == 5  # the parent and its four trials, nothing twice

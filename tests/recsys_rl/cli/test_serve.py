"""`recsys-rl drive`: simulated users close the loop through a running server over HTTP."""

from __future__ import annotations

import time

import mlflow
import typer
import yaml
from typer.testing import CliRunner

from recsys_rl.cli.serve import drive
from recsys_rl.events import open_store
from serving.app import create_app
from tests.cli import run_cli
from tests.serving.helpers import config, running_server, tiny_holder

WORLD = {"n_products": 50, "n_categories": 4, "n_users": 300, "consideration_size": 20, "seed": 3}


def _drive_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(drive)
    return app


def test_drive_requests_banners_and_posts_the_users_feedback(tmp_path):
    sim_config = tmp_path / "world.yaml"
    sim_config.write_text(yaml.safe_dump(WORLD))
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        with running_server(create_app(config(tmp_path), store=store, holder=tiny_holder())) as url:
            args = ["--url", url, "--users", "300", "--sim-config", str(sim_config), "--reward", "ctr"]
            result = CliRunner().invoke(_drive_app(), args)
        assert result.exit_code == 0, result.output
        line = result.output.strip().splitlines()[-1]
        stats = dict(kv.split("=") for kv in line.removeprefix("drive: ").split())
        assert stats["requests"] != "0" and stats["errors"] == "0" and stats["impressions"] == "300"
        assert int(stats["events_posted"]) > 0 and stats["events_posted"] == stats["events_accepted"]
        assert store.count_impressions() == 300
        assert store.count_feedback() == int(stats["events_accepted"])
        logged = store.read_ready("check", time.time() + 1, 1000).to_logged(50)
        # ctr reward = clicks per impression, measured the same way by the driver and the store
        assert float(stats["mean_reward_ctr"]) == float(f"{logged.outcomes.clicks.sum().item() / 300:.4f}")
    finally:
        store.close()


def test_drive_refuses_a_simulator_with_another_catalogue(tmp_path):
    sim_config = tmp_path / "world.yaml"
    sim_config.write_text(yaml.safe_dump({**WORLD, "n_products": 60}))
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    try:
        with running_server(create_app(config(tmp_path), store=store, holder=tiny_holder())) as url:
            result = CliRunner().invoke(_drive_app(), ["--url", url, "--sim-config", str(sim_config)])
    finally:
        store.close()
    assert result.exit_code == 2
    assert "--sim-config" in result.output and "60 products" in result.output and "50" in result.output


def test_register_puts_a_saved_policy_under_an_alias(tmp_path):
    from recsys_rl.policy import BannerPolicy, save_policy

    save_policy(BannerPolicy(30, 4, 8), tmp_path / "p.pt")
    r = run_cli(["register", "--policy", str(tmp_path / "p.pt"), "--alias", "champion"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    v = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_model_version_by_alias(
        "banner-policy", "champion"
    )
    assert str(v.version) == "1"


def test_train_online_warm_start_without_logs_names_the_option(tmp_path):
    r = run_cli(
        [
            "train-online",
            "--events",
            f"sqlite:///{tmp_path}/events.db",
            "--reference",
            "ref.pt",
            "--set",
            "warm_start.enabled=true",
        ],
        tmp_path,
        timeout=120,
    )
    assert r.returncode != 0
    assert "--logs" in r.stdout + r.stderr and "warm_start.enabled" in r.stdout + r.stderr
    assert not (tmp_path / "events.db").exists()  # refused before anything was opened

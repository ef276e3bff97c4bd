"""`recsys-rl drive`: simulated users close the loop through a running server over HTTP."""

from __future__ import annotations

import time

import typer
import yaml
from typer.testing import CliRunner

from recsys_rl.cli.serve import drive
from recsys_rl.events import open_store
from serving.app import create_app
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

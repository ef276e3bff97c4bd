"""`recsys-rl simulate`: writes a readable log; a bad config exits 2 with a one-line message."""

import typer
from typer.testing import CliRunner

from recsys_rl.cli.simulate import simulate
from recsys_rl.logdata.parquet import read_logs

app = typer.Typer()
app.command()(simulate)
app.command("noop")(lambda: None)  # two commands, so the app is invoked as `<app> simulate ...`


def test_simulate_writes_logs_from_a_preset(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("n_products: 100\nn_categories: 5\nn_users: 500\nconsideration_size: 20\n")
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--config",
            str(cfg),
            "--impressions",
            "700",
            "--out",
            str(tmp_path / "logs"),
            "--seed",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "impressions.parquet" in res.output
    logged = read_logs(tmp_path / "logs")
    assert len(logged) == 700 and logged.banners.items.max() < 100


def test_bad_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("n_products: 100\nclick_model: sideways\n")
    res = CliRunner().invoke(app, ["simulate", "--config", str(cfg), "--out", str(tmp_path / "logs")])
    assert res.exit_code == 2
    assert "click_model" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


def test_zero_impressions_is_refused(tmp_path):
    res = CliRunner().invoke(app, ["simulate", "--impressions", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2

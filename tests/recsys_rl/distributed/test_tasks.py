"""`simulate --ray`: Parquet shards from Ray tasks on the two-node cluster, the same rows whatever the
number of workers, read back by every logs reader as one log."""

from __future__ import annotations

import pytest
import torch

from recsys_rl.logdata.importer import import_logs
from recsys_rl.logdata.parquet import read_logs
from tests.cli import run_cli

pytestmark = pytest.mark.ray

SIM = "n_products: 100\nn_categories: 5\nn_users: 500\nconsideration_size: 20\n"


def simulate(tmp_path, address: str, workers: int):
    out = tmp_path / f"w{workers}"
    res = run_cli(
        [
            "simulate",
            "--config",
            str(tmp_path / "sim.yaml"),
            "--impressions",
            "2500",
            "--shard-size",
            "700",
            "--seed",
            "3",
            "--ray",
            address,
            "--workers",
            str(workers),
            "--quiet",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def test_sharded_simulation_gives_the_same_rows_with_one_or_two_workers(two_nodes, tmp_path):
    (tmp_path / "sim.yaml").write_text(SIM)
    one = simulate(tmp_path, two_nodes.cluster.address, 1)
    two = simulate(tmp_path, two_nodes.cluster.address, 2)
    assert sorted(p.name for p in two.iterdir()) == [f"shard-{i:05d}" for i in range(4)]
    a, b = read_logs(one), read_logs(two)
    assert len(a) == len(b) == 2500
    for x, y in (
        (a.contexts.viewed, b.contexts.viewed),
        (a.contexts.history, b.contexts.history),
        (a.banners.items, b.banners.items),
        (a.banners.log_prob, b.banners.log_prob),
        (a.outcomes.clicks, b.outcomes.clicks),
        (a.outcomes.units, b.outcomes.units),
    ):
        assert torch.equal(x, y)
    assert not torch.equal(a.banners.items[:700], a.banners.items[700:1400])  # shards differ
    imported = import_logs(two, 100)  # the reader `evaluate` and --mapping use
    assert len(imported.batch) == 2500
    assert torch.equal(imported.batch.banners.items, b.banners.items)
    assert torch.equal(imported.batch.outcomes.clicks, b.outcomes.clicks)


def test_simulate_refuses_a_directory_that_holds_a_log(two_nodes, tmp_path):
    (tmp_path / "sim.yaml").write_text(SIM)
    (tmp_path / "w1" / "shard-00000").mkdir(parents=True)
    res = run_cli(
        ["simulate", "--config", "sim.yaml", "--ray", two_nodes.cluster.address, "--out", "w1"],
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: --out: w1 already holds a log")

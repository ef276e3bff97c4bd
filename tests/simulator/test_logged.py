"""Generated logs: readable, deterministic, and carrying the behaviour policy's exact propensities."""

import pyarrow.parquet as pq
import torch

from recsys_rl.logdata.parquet import read_logs
from simulator.behaviour import POLICY_VERSION, ExploringBehaviour, PopularityBehaviour
from simulator.logged import generate_logs


def test_generated_logs_round_trip_with_exact_propensities(sim, tmp_path):
    out = generate_logs(sim, 2500, tmp_path / "logs", seed=3, chunk=1000, progress=False)
    logged = read_logs(out)
    assert len(logged) == 2500
    policy = PopularityBehaviour(sim.popularity)
    assert torch.allclose(logged.banners.log_prob, policy.log_prob(logged.banners.items))
    imp = pq.read_table(out / "impressions.parquet").to_pandas()
    assert imp["impression_id"].is_unique and imp["impression_id"].iloc[1500] == "3-1500"
    assert (imp["policy_version"] == POLICY_VERSION).all()
    assert imp["timestamp"].is_monotonic_increasing
    fb = pq.read_table(out / "feedback.parquet").to_pandas()
    assert int((fb["type"] == "click").sum()) == int(logged.outcomes.clicks.sum())
    assert int(fb["units"].sum()) == int(logged.outcomes.units.sum())
    assert logged.outcomes.clicks.sum() > 0 and logged.outcomes.units.sum() > 0


def test_same_seed_same_logs_different_seed_different_logs(sim, tmp_path):
    a = read_logs(generate_logs(sim, 800, tmp_path / "a", seed=1, chunk=300, progress=False))
    b = read_logs(generate_logs(sim, 800, tmp_path / "b", seed=1, chunk=300, progress=False))
    c = read_logs(generate_logs(sim, 800, tmp_path / "c", seed=2, chunk=300, progress=False))
    assert torch.equal(a.banners.items, b.banners.items) and torch.equal(a.outcomes.units, b.outcomes.units)
    assert torch.equal(a.contexts.history, b.contexts.history)
    assert not torch.equal(a.banners.items, c.banners.items)


def test_logged_contexts_come_from_the_simulator(sim, tmp_path):
    logged = read_logs(generate_logs(sim, 500, tmp_path, seed=0, progress=False))
    users = torch.from_numpy(
        pq.read_table(tmp_path / "impressions.parquet").column("user_id").to_numpy().copy()
    )
    cons = sim.population.consider_items[users]
    assert (cons == logged.contexts.viewed[:, None]).any(1).all()


def test_logs_of_a_contextual_exploring_recommender_carry_its_exact_propensities(sim, tmp_path):
    n = sim.n_products
    table = torch.randn(n, n, generator=torch.Generator().manual_seed(0)) * 2
    behaviour = ExploringBehaviour(lambda ctx: table[ctx.viewed], n, epsilon=0.2, version="ref-eps0.2")
    out = generate_logs(sim, 1200, tmp_path, seed=4, chunk=500, progress=False, behaviour=behaviour)
    logged = read_logs(out)
    exact = behaviour.log_prob(logged.contexts, logged.banners.items)
    assert torch.allclose(logged.banners.log_prob.double(), exact, rtol=1e-6)
    assert (
        pq.read_table(out / "impressions.parquet").column("policy_version").to_numpy() == "ref-eps0.2"
    ).all()
    again = read_logs(
        generate_logs(sim, 1200, tmp_path / "b", seed=4, chunk=500, progress=False, behaviour=behaviour)
    )
    assert torch.equal(again.banners.items, logged.banners.items)


def test_shards_are_fixed_by_the_totals_and_seeded_apart(sim, tmp_path):
    from simulator.logged import generate_shard, shard_plan, shard_seed

    assert shard_plan(2500, 1000) == [(0, 1000), (1, 1000), (2, 500)]
    assert len({shard_seed(7, i) for i in range(100)}) == 100 and shard_seed(7, 0) != shard_seed(8, 0)
    for i, n in shard_plan(1500, 1000):
        generate_shard(sim.cfg.model_dump_json(), str(tmp_path), 7, i, n)
    both = read_logs(tmp_path)  # the directory of shards reads as one log
    assert len(both) == 1500
    first = read_logs(tmp_path / "shard-00000")
    assert torch.equal(both.banners.items[:1000], first.banners.items)
    assert not torch.equal(both.banners.items[:500], both.banners.items[1000:])
    ids = pq.read_table(tmp_path / "shard-00001" / "impressions.parquet").column("impression_id")
    assert ids[0].as_py() == "7.1-0"

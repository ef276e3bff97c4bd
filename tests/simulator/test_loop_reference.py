"""The per-impression loop used as the benchmark reference simulates the same model."""

import pytest
import torch

from simulator import Simulator
from simulator.loop_reference import LoopSimulator
from tests.simulator.worlds import small_config


@pytest.mark.parametrize("model", ["pbm", "cascade"])
def test_loop_reference_matches_exact_expectations(model):
    sim = Simulator(small_config(click_model=model))
    loop = LoopSimulator(sim, seed=0)
    user = int(sim.population.basket.argmax())
    banner = sim.population.consider_items[user, :5].tolist()
    n = 20_000
    out = torch.tensor([loop.respond(user, banner) for _ in range(n)], dtype=torch.float64)  # (n, K, 3)
    exp = sim.expected(torch.tensor([user]), torch.tensor([banner]))
    for idx, exact in [(0, exp.click[0]), (1, exp.units[0]), (2, exp.revenue[0])]:
        x = out[:, :, idx]
        se = x.std(0) / n**0.5
        assert ((x.mean(0) - exact.double()).abs() <= 5 * se + 1e-6).all()


def test_loop_reference_contexts_are_well_formed(sim):
    loop = LoopSimulator(sim, seed=1)
    for _ in range(200):
        _, viewed, history, banner, outcome = loop.impression()
        real = [h for h in history if h != -1]
        assert history[: len(real)] == real and len(set(real)) == len(real) and viewed not in real
        assert sim.cfg.min_history <= len(real) <= 10
        assert len(set(banner)) == 5 and len(outcome) == 5

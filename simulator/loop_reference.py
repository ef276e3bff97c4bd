"""The same simulator physics as a plain per-impression Python loop, for the throughput benchmark.

It reads the vectorised simulator's catalogue and population (so both simulate the same world) and
redoes the per-impression work one user and one banner position at a time with Python's ``random``:
draw a user, draw a context from their consideration set (Gumbel-top-(1 + HISTORY_LEN)), draw a banner
of distinct products, respond position by position. Not used anywhere but the benchmark and tests.
"""

from __future__ import annotations

import math
import random

from recsys_rl.records import HISTORY_LEN, PAD
from simulator.env import Simulator
from simulator.response import MAX_EXTRA_RATE


class LoopSimulator:
    """Per-impression reference implementation over the world of ``sim``."""

    def __init__(self, sim: Simulator, seed: int) -> None:
        cfg, cat, pop = sim.cfg, sim.catalogue, sim.population
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.vectors = cat.vectors.tolist()
        self.appeal = cat.appeal.tolist()
        self.quality = cat.quality.tolist()
        self.log_price = cat.log_price.tolist()
        self.prices = cat.prices.tolist()
        self.taste = pop.taste.tolist()
        self.sensitivity = pop.sensitivity.tolist()
        self.basket = pop.basket.tolist()
        self.consider_items = pop.consider_items.tolist()
        self.consider_logits = pop.consider_logits.tolist()
        self.position_bias = list(cfg.position_bias)

    def impression(self) -> tuple[int, int, list[int], list[int], list[tuple[int, int, float]]]:
        """One impression: (user, viewed, history, banner, [(click, units, revenue) per position])."""
        rng = self.rng
        user = rng.randrange(len(self.taste))
        viewed, history = self.context(user)
        banner = rng.sample(range(len(self.prices)), self.cfg.banner_size)
        return user, viewed, history, banner, self.respond(user, banner)

    def context(self, user: int) -> tuple[int, list[int]]:
        rng = self.rng
        keyed = []
        for item, logit in zip(self.consider_items[user], self.consider_logits[user], strict=True):
            u = min(max(rng.random(), 1e-12), 1 - 1e-7)
            keyed.append((logit - math.log(-math.log(u)), item))
        keyed.sort(reverse=True)
        picked = [item for _, item in keyed[: 1 + HISTORY_LEN]]
        length = rng.randint(self.cfg.min_history, HISTORY_LEN)
        history = picked[1 : 1 + length] + [PAD] * (HISTORY_LEN - length)
        return picked[0], history

    def respond(self, user: int, banner: list[int]) -> list[tuple[int, int, float]]:
        cfg, rng = self.cfg, self.rng
        taste, s, b = self.taste[user], self.sensitivity[user], self.basket[user]
        out = []
        clicked_before = False
        reached = True
        for k, item in enumerate(banner):
            affinity = sum(t * v for t, v in zip(taste, self.vectors[item], strict=True))
            gap = self.log_price[item] - cfg.price_log_mean
            c = 1 / (1 + math.exp(-(cfg.affinity_click * affinity + self.appeal[item] + cfg.click_bias)))
            logit = cfg.affinity_purchase * affinity + self.quality[item] - s * gap + cfg.purchase_bias
            pi = 1 / (1 + math.exp(-logit))
            if cfg.click_model == "pbm":
                examined = rng.random() < self.position_bias[k]
            else:
                prev = self.position_bias[k - 1] if k > 0 else 1.0
                reached = reached and rng.random() < self.position_bias[k] / prev
                examined = reached and not clicked_before
            click = examined and rng.random() < c
            clicked_before = clicked_before or click
            units = 0
            if click and rng.random() < pi:
                units = 1 + poisson(rng, min(b * math.exp(-s * gap), MAX_EXTRA_RATE))
            out.append((int(click), units, units * self.prices[item]))
        return out


def poisson(rng: random.Random, lam: float) -> int:
    """Knuth's multiplication method; fine for the small rates (<= 5) used here."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k

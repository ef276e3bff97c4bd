"""The classic rows of an evaluation table: each classic fitted on the training logs, valued exactly.

Call from a job that has an ``Evaluator`` (e.g. ``jobs.train.offline_job`` with an environment) and
append the rows to its table beside "reference" and "fine-tuned".
"""

from __future__ import annotations

from recsys_rl.config import RewardScheme
from recsys_rl.evaluation import Evaluator, greedy_banners
from recsys_rl.records import LoggedBatch
from recsys_rl.yardsticks.common import ScoredClassic
from recsys_rl.yardsticks.covisitation import CoVisitation
from recsys_rl.yardsticks.ips_logreg import IPSLogisticRegression
from recsys_rl.yardsticks.popularity import Popularity
from recsys_rl.yardsticks.reshow import ReshowContext


def fit_classics(logs: LoggedBatch, scheme: RewardScheme, n_products: int, seed: int) -> list[ScoredClassic]:
    """The four classics fitted on ``logs``: popularity, co-visitation, re-show the context, IPS LR."""
    pop = Popularity.fit(logs, scheme, n_products)
    return [
        pop,
        CoVisitation.fit(logs, pop.totals, n_products),
        ReshowContext(pop),
        IPSLogisticRegression.fit(logs, scheme, n_products, seed),
    ]


def classic_rows(evaluator: Evaluator, classics: list[ScoredClassic]) -> dict[str, dict[str, float]]:
    """{name: metrics} of each classic's greedy banners on the evaluator's users, with the share of the
    reference-to-oracle gap it closes (the same columns as the fine-tune's row, less KL and entropy)."""
    rows = {}
    for c in classics:
        banners = greedy_banners(c, evaluator.eval_set.contexts, c.n_products, evaluator.k)
        m = evaluator.score_banners(banners)
        m["oracle_gap_closed"] = evaluator.gap_closed(m[f"reward_{evaluator.scheme.name}"])
        rows[c.name] = m
    return rows

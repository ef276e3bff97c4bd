"""`recsys-rl train --logs PATH --reward-model URI`: fine-tune from logs against a learned reward model.

The last 20% of the logs are held out (as in the top-K off-policy job): the baseline and the fine-tune
see only the first 80%; the fine-tuned policy is judged on the held-out contexts by the reward model
(proxy), by SNIPS on the held-out logged outcomes, and exactly when an environment is given. Best-of-n
(n = ``best_of_n``) runs beside it as a baseline on the same contexts.
"""

from __future__ import annotations

import time

import mlflow
import pandas as pd
import torch

from recsys_rl import tracking
from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, builtin_rewards, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.reward_model import rm_finetune
from recsys_rl.jobs.result import JobResult, fine_tuned_metrics, finish_run, oracle_row, reference_row
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model.best_of_n import best_of_n, best_of_n_kl
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.packaging import check_catalogue
from recsys_rl.reward_model.scoring import check_scheme, policy_value


def rm_job(
    cfg: RunConfig,
    logs: LoggedBatch,
    model: BannerRewardModel,
    *,
    reward_model_uri: str,
    reference: BannerPolicy | None = None,
    env: Environment | None = None,
    data_source: str = "logs",
    n_best: int = 16,
    progress: bool = True,
    banner_size: int | None = None,
    categorical_vocab: list[list[str]] | None = None,
) -> JobResult:
    """One tracked run: (baseline from the first 80% of logs unless given) -> RL vs reward model -> judge.

    ``banner_size`` / ``categorical_vocab``: the baseline's, for logs that carry them (a mapped table);
    the policy defaults otherwise."""
    from recsys_rl.guard_rails import snips_value

    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    check_scheme(model, scheme)
    n_train = int(0.8 * len(logs))
    train, holdout = logs[:n_train], logs[n_train:]
    n_products = reference.n_products if reference is not None else model.n_products
    check_catalogue(model, n_products, "the reference policy")
    if reference is None:
        reference = train_baseline(
            train,
            n_products,
            cfg.policy,
            cfg.baseline,
            cfg.seed,
            progress,
            banner_size=banner_size,
            categorical_vocab=categorical_vocab,
        )
    tracking.setup(cfg.tracking)
    with tracking.start_run(cfg, scheme.name, data_source, run_name=f"reward-model-{scheme.name}") as run:
        mlflow.set_tags({"reward_model": reward_model_uri, "job": "train_reward_model_rl"})
        start = time.perf_counter()
        policy, history = rm_finetune(
            reference, model, train.contexts, scheme, cfg.train, cfg.seed, progress=progress
        )
        seconds = time.perf_counter() - start
        for i, row in enumerate(history[:: max(1, len(history) // 200)]):
            tracking.log_metrics(row, step=i)
        ctx, g = holdout.contexts, lambda: torch.Generator().manual_seed(cfg.seed + 5)
        snips = snips_value(holdout, scheme)
        items, scores = best_of_n(reference.logits, model, scheme, ctx, n_best, g())
        rows = {
            "reference": {
                "proxy_value": policy_value(model, scheme, reference.logits, ctx, g()),
                "snips_value": snips(reference),
            },
            "fine-tuned": {
                "proxy_value": policy_value(model, scheme, policy.logits, ctx, g()),
                "snips_value": snips(policy),
            },
            f"best-of-{n_best}": {
                "proxy_value": float(scores.mean()),
                "kl_to_reference": best_of_n_kl(n_best),
            },
        }
        if env is not None:
            ev = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
            rows["reference"].update(reference_row(ev))
            rows["fine-tuned"].update(ev(policy))
            bon = ev.score_banners(
                best_of_n(reference.logits, model, scheme, ev.eval_set.contexts, n_best, g())[0]
            )
            rows[f"best-of-{n_best}"].update(
                {**bon, "oracle_gap_closed": ev.gap_closed(bon[f"reward_{scheme.name}"])}
            )
            rows["oracle"] = oracle_row(ev)
        table = pd.DataFrame.from_dict(rows, orient="index")
        bon_row = table.loc[f"best-of-{n_best}"]
        tracking.log_metrics(
            {f"bon_{k}": float(v) for k, v in bon_row.items() if pd.notna(v)}, step=len(history)
        )
        return finish_run(
            run, cfg, table, fine_tuned_metrics(table), len(history), policy, reference, seconds
        )

"""The logs job: fine-tune from logs alone, judged on held-out logs (and exactly on an env if given).

The reference and the fine-tune train on the same earlier rows (``recsys_rl.holdout.time_split``,
``baseline.holdout_fraction``); every value in the table is on the later rows no training step saw,
greedy and sampled with 95% CIs. The fine-tune is scored there at ``CHECKS`` points, the best kept,
and stops after ``PATIENCE`` checks without a better value; a warning is printed when its in-sample
value runs away from its held-out one.

No simulator import here: ``env`` is any ``Environment``, or None where only the logs exist.
"""

from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from recsys_rl import tracking
from recsys_rl.config import RunConfig, builtin_rewards, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.guard_rails import iips_value, snips_value
from recsys_rl.holdout import (
    HeldOutLogs,
    Split,
    heldout_value,
    heldout_values,
    logger_value,
    runaway_warning,
    split_logs,
    time_split,
)
from recsys_rl.jobs.result import JobResult, fine_tuned_metrics, finish_run, oracle_row, reference_row
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch, catalogue_size
from recsys_rl.reference import fit_reference

CHECKS = 10
"""Held-out checks of the fine-tune over its run (each costs two IIPS passes over the held-out rows)."""

PATIENCE = 3
"""Checks without a better held-out sampled value before the fine-tune stops (the best is kept)."""


def offline_job(
    cfg: RunConfig,
    logs: LoggedBatch,
    *,
    reference: BannerPolicy | None = None,
    env: Environment | None = None,
    data_source: str = "logs",
    n_products: int | None = None,
    progress: bool = True,
    slots=None,
) -> JobResult:
    """Fine-tune from logs alone; judge on held-out logs (SNIPS) and, when an env is given, exactly.

    The latest ``baseline.holdout_fraction`` of the logs is held out from both. ``slots``: the
    ``ImportedLogs`` of slot rows (one displayed item per row) that ``logs`` comes from: training uses
    item-level examples and the held-out value is IIPS on the logged slot propensities.
    """
    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    split = time_split(len(logs), cfg.baseline.holdout_fraction)
    n_train = len(split.train_rows)
    train, held = split_logs(logs, split, slots)
    holdout = held.logs
    n_products = n_products or (env.n_products if env is not None else catalogue_size(logs))
    k = slots.banner_size if slots is not None else None
    if reference is None:
        vocab = getattr(slots, "vocabulary", None)
        reference = fit_reference(
            train,
            held,
            scheme,
            n_products,
            cfg.policy,
            cfg.baseline,
            cfg.seed,
            progress,
            banner_size=k,
            categorical_vocab=vocab,
        ).policy
    extra, value_name = {}, "snips_value"
    if slots is not None and slots.slot_rows:
        pos = torch.from_numpy(slots.positions)
        mu = torch.from_numpy(slots.behaviour_marginals).float() * slots.banner_size  # P(shown in the banner)
        extra = {"positions": pos[split.train_rows], "behaviour_item_prob": mu[split.train_rows]}
        value = iips_value(
            holdout, scheme, held.positions, held.behaviour_marginals, slots.banner_size, cfg.seed
        )
        value_name = "iips_value"
    else:
        value = snips_value(holdout, scheme)
    tracking.setup(cfg.tracking)
    with tracking.start_run(cfg, scheme.name, data_source, run_name=f"offline-{scheme.name}") as run:
        start = time.perf_counter()
        best = BestCheck(held, scheme, cfg.seed)
        last, history = offline_finetune(
            reference,
            train,
            scheme,
            cfg.train,
            cfg.seed,
            progress=progress,
            on_check=best,
            checks=CHECKS,
            **extra,
        )
        policy = last if best.policy is None else best.policy
        if best.policy is not None:
            policy.refresh_candidates()
        seconds = time.perf_counter() - start
        for i, row in enumerate(history[:: max(1, len(history) // 200)]):
            tracking.log_metrics(row, step=i)
        ref_values = heldout_values(reference, held, scheme, cfg.seed)
        values = heldout_values(policy, held, scheme, cfg.seed)
        m = min(len(holdout), n_train)  # in-sample: as many of the latest training rows
        seen = split_logs(logs, Split(split.train_rows[:-m], split.train_rows[-m:]), slots)[1]
        in_sample = heldout_values(policy, seen, scheme, cfg.seed).sampled
        rows = {
            "logger": _estimate_row(logger_value(held, scheme)),
            "reference": {value_name: value(reference), **ref_values.row()},
            "fine-tuned": {value_name: value(policy), **values.row(), "in_sample_sampled": in_sample.value},
        }
        warning = runaway_warning("the fine-tune", in_sample, values.sampled)
        if warning is not None:
            print(warning, file=sys.stderr)
        tracking.log_metrics({"fine_tune_best_step": best.step, "fine_tune_steps": len(history)}, step=0)
        if env is not None:
            ev = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
            final = ev(policy.eval())
            rows["reference"].update(reference_row(ev))
            rows["fine-tuned"].update(final)
            rows["oracle"] = oracle_row(ev)
        table = pd.DataFrame.from_dict(rows, orient="index")
        return finish_run(
            run, cfg, table, fine_tuned_metrics(table), len(history), policy, reference, seconds
        )


def _estimate_row(e) -> dict[str, float]:
    """The logger's held-out value in the columns of the policies' sampled values."""
    return {"heldout_sampled": e.value, "heldout_sampled_low": e.ci_low, "heldout_sampled_high": e.ci_high}


class BestCheck:
    """``on_check`` for ``offline_finetune``: scores the policy on the held-out rows, keeps the best
    (a frozen copy) and says stop after ``PATIENCE`` checks without a better sampled value."""

    def __init__(self, held: HeldOutLogs, scheme, seed: int):
        self.held, self.scheme, self.seed = held, scheme, seed
        self.policy: BannerPolicy | None = None
        self.value, self.step, self.since = float("-inf"), 0, 0

    def __call__(self, step: int, policy: BannerPolicy) -> bool:
        value = heldout_value(policy, self.held, self.scheme, self.seed).value
        policy.train()
        if value > self.value:
            self.policy, self.value, self.step, self.since = policy.frozen_copy(), value, step, 0
        else:
            self.since += 1
        return self.since >= PATIENCE

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
from pydantic import BaseModel

from recsys_rl import tracking
from recsys_rl.config import RunConfig, builtin_rewards, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.finetune.preference import preference_finetune
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
from recsys_rl.yardsticks.table import classic_rows, fit_classics

CHECKS = 10
"""Held-out checks of the fine-tune over its run (each costs two IIPS passes over the held-out rows)."""

PATIENCE = 3
"""Checks without a better held-out sampled value before the fine-tune stops (the best is kept)."""

TRAIN_USED = (  # what ``offline_finetune`` reads (train.eval_users too, with an env to judge on)
    "total_impressions",
    "minibatch_size",
    "lr",
    "lr_anneal",
    "max_grad_norm",
    "kl_beta",
    "kl_target",
    "kl_adaptive",
    "kl_margin",
    "kl_horizon",
    "weight_clip",
)
WHY_NOT = {  # train.<key>: why the logs fine-tune has no use for it
    "algorithm": "its one objective is the top-K off-policy correction with the KL penalty",
    "contexts_per_batch": "each step samples train.minibatch_size logged rows",
    "banners_per_context": "each logged row is one banner; none are sampled per context",
    "epochs": "each step draws a fresh minibatch; train.total_impressions sets the length",
    "item_lr": "one Adam learning rate, train.lr, for every parameter",
    "clip_eps": "no PPO ratio: item importance weights are clipped at train.weight_clip",
    "entropy_coef": "its objective has no entropy term",
    "value_coef": "its objective has no critic",
    "replay_batches": "every step already samples from all the logs",
    "eval_every": f"the fine-tune is checked on the held-out rows {CHECKS} times over its run",
    "kl_hard_limit": "nothing is guard-railed or rolled back on this path",
}
OBJECTIVES = ("topk", "dpo", "ipo", "kto", "sdpo")
"""train --logs --objective: the top-K off-policy correction (train.*) or a preference objective
(preference.*, ``recsys_rl.finetune.preference``)."""

SECTION_WHY = {  # sections the logs job never reads
    "sim": "the simulator to judge on is --sim-config",
    "warm_start": "the warm start runs before simulator or live fine-tuning only",
    "dyna": "Dyna updates run in the simulator loop only",
    "online": "these are the online trainer's (train-online)",
}


def _why_unused(
    section: str, key: str, *, reference_given: bool, env_given: bool, objective: str = "topk"
) -> str | None:
    if section == "train":
        if key == "eval_users":
            return None if env_given else "no exact evaluation without --sim-config"
        if objective != "topk":
            return f"--objective {objective} reads preference.*, not train.*"
        return WHY_NOT.get(key)
    if section == "preference":
        if key == "objective":
            return "the objective is --objective"
        return "only with --objective dpo|ipo|kto|sdpo" if objective == "topk" else None
    if section == "baseline" and key == "holdout_fraction":
        return None  # the split of the logs, made whether or not the reference is given
    if section in ("policy", "baseline"):
        return "the reference is given (--reference), not trained here" if reference_given else None
    return SECTION_WHY.get(section)


def refuse_settings_unused_on_logs(
    cfg: RunConfig, *, reference_given: bool, env_given: bool, objective: str = "topk"
) -> None:
    """Raise ``ValueError`` ('<section>.<key>: does not apply to train --logs (<why>)') for the first
    setting the user gave that the logs job would ignore, so every accepted setting is honoured.

    "Gave" is a key in pydantic's ``model_fields_set`` (the YAML or a --set) at a value other than its
    default: a config file that writes every field out at its default asks for nothing this path lacks.
    """
    for section in type(cfg).model_fields:
        sub = getattr(cfg, section)
        if section not in cfg.model_fields_set or not isinstance(sub, BaseModel):
            continue  # seed, torch_threads, a reward scheme's name: every job uses them
        for key in type(sub).model_fields:
            field = type(sub).model_fields[key]
            if key not in sub.model_fields_set or getattr(sub, key) == field.get_default(
                call_default_factory=True
            ):
                continue
            why = _why_unused(
                section, key, reference_given=reference_given, env_given=env_given, objective=objective
            )
            if why is not None:
                raise ValueError(f"{section}.{key}: does not apply to train --logs ({why})")


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
    objective: str = "topk",
) -> JobResult:
    """Fine-tune from logs alone; judge on held-out logs (SNIPS) and, when an env is given, exactly,
    beside the classic yardsticks (popularity, co-visitation, re-show the context, IPS logistic
    regression) fitted on the same training logs.

    The latest ``baseline.holdout_fraction`` of the logs is held out from both. ``slots``: the
    ``ImportedLogs`` of slot rows (one displayed item per row) that ``logs`` comes from: training uses
    item-level examples and the held-out value is IIPS on the logged slot propensities. ``objective``:
    "topk" (the top-K off-policy correction) or a preference objective of ``OBJECTIVES``, trained with
    ``cfg.preference`` and judged the same way.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: {objective!r} is none of {', '.join(OBJECTIVES)}")
    if objective != "topk":  # the run's logged config names the objective it trained
        cfg = cfg.model_copy(
            update={"preference": cfg.preference.model_copy(update={"objective": objective})}
        )
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
        mu = (
            torch.tensor(slots.behaviour_marginals, dtype=torch.float32) * slots.banner_size
        )  # P(shown in the banner)
        extra = {"positions": pos[split.train_rows], "behaviour_item_prob": mu[split.train_rows]}
        value = iips_value(
            holdout, scheme, held.positions, held.behaviour_marginals, slots.banner_size, cfg.seed
        )
        value_name = "iips_value"
    else:
        value = snips_value(holdout, scheme)
    tracking.setup(cfg.tracking)
    name = f"offline-{scheme.name}" if objective == "topk" else f"offline-{objective}-{scheme.name}"
    with tracking.start_run(cfg, scheme.name, data_source, run_name=name) as run:
        start = time.perf_counter()
        policy, history, best_step = best_finetune(
            reference, train, held, scheme, cfg, progress=progress, objective=objective, **extra
        )
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
        tracking.log_metrics({"fine_tune_best_step": best_step, "fine_tune_steps": len(history)}, step=0)
        if env is not None:
            ev = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
            final = ev(policy.eval())
            rows["reference"].update(reference_row(ev))
            rows["fine-tuned"].update(final)
            rows["oracle"] = oracle_row(ev)
            rows.update(classic_rows(ev, fit_classics(train, scheme, n_products, cfg.seed)))
        table = pd.DataFrame.from_dict(rows, orient="index")
        return finish_run(
            run, cfg, table, fine_tuned_metrics(table), len(history), policy, reference, seconds
        )


def best_finetune(
    reference: BannerPolicy,
    train: LoggedBatch,
    held: HeldOutLogs,
    scheme,
    cfg: RunConfig,
    progress: bool = True,
    objective: str = "topk",
    **extra,
) -> tuple[BannerPolicy, list[dict[str, float]], int]:
    """(the fine-tune kept, its training history, the step kept): ``offline_finetune`` on ``train``,
    checked ``CHECKS`` times on ``held``, stopped after ``PATIENCE`` checks without a better held-out
    sampled value, the best check kept. ``extra``: slot rows' positions and behaviour_item_prob.
    ``objective``: "topk" (the off-policy top-K correction) or a preference objective (dpo, ipo, kto,
    sdpo: ``preference_finetune`` with ``cfg.preference``), checked and kept alike."""
    best = BestCheck(held, scheme, cfg.seed)
    if objective == "topk":
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
    else:
        last, history = preference_finetune(
            reference,
            train,
            scheme,
            cfg.preference,
            cfg.seed,
            progress=progress,
            on_check=best,
            checks=CHECKS,
        )
    if best.policy is None:
        return last, history, best.step
    best.policy.refresh_candidates()
    return best.policy, history, best.step


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

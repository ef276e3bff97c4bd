"""Training jobs end to end: baseline -> fine-tune -> evaluate -> MLflow. The CLI wires an env in.

No simulator import here: callers pass any ``Environment`` and the logs to learn the baseline from.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
import torch

from recsys_rl import tracking
from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, builtin_rewards, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.finetune.warm_start import warm_start
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import LoggedBatch

TABLE_COLUMNS = [
    "clicks_per_impression",
    "ctr",
    "purchases_per_impression",
    "units_per_impression",
    "revenue_per_impression",
    "multi_purchases_per_impression",
    "reward_ctr",
    "reward_purchase",
    "reward_graded",
    "reward_revenue",
    "kl_to_reference",
    "entropy",
    "coverage",
    "oracle_gap_closed",
]


@dataclass
class JobResult:
    run_id: str
    model_uri: str | None
    model_version: str | None
    table: pd.DataFrame  # rows: reference, fine-tuned, oracle
    final: dict[str, float]
    policy: BannerPolicy
    reference: BannerPolicy
    seconds: float


def comparison_table(evaluator: Evaluator, final: dict[str, float]) -> pd.DataFrame:
    ref = {**evaluator.reference_metrics, "kl_to_reference": 0.0, "oracle_gap_closed": 0.0}
    orc = {**evaluator.oracle_metrics, "oracle_gap_closed": 1.0}
    rows = {"reference": ref, "fine-tuned": final, "oracle": orc}
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df[
        [c for c in TABLE_COLUMNS if c in df.columns]
        + [c for c in df.columns if c.startswith("reward_") and c not in TABLE_COLUMNS]
    ]


def train_job(
    cfg: RunConfig,
    env: Environment,
    *,
    logs: LoggedBatch | None = None,
    reference: BannerPolicy | None = None,
    data_source: str = "simulator",
    run_name: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
) -> JobResult:
    """One tracked run: (train the baseline from ``logs`` unless given) -> fine-tune on ``env`` -> evaluate."""
    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    if reference is None:
        if logs is None:
            raise ValueError("train_job needs logs to train the baseline from, or a trained reference")
        reference = train_baseline(logs, env.n_products, cfg.policy, cfg.baseline, cfg.seed, progress)
    policy = trainable_copy(reference)
    evaluator = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
    tracking.setup(cfg.tracking, experiment)
    if cfg.warm_start.enabled and logs is None:
        raise ValueError("warm_start.enabled: needs the logs that trained the reference")
    with tracking.start_run(cfg, scheme.name, data_source, run_name) as run:
        dyna = None
        if cfg.warm_start.enabled:
            ws = warm_start(reference, logs, scheme, cfg.train, cfg.warm_start, cfg.seed, progress)
            policy = ws.policy
            mlflow.log_metrics(
                {
                    "warm_start_kl": ws.kl,
                    "warm_start_updates": ws.updates,
                    "warm_start_rolled_back": float(ws.rolled_back),
                }
            )
            if cfg.dyna.enabled:
                from recsys_rl.finetune.dyna import Dyna

                dyna = Dyna(ws.reward_model, logs, scheme, cfg.dyna, cfg.seed)
        result = finetune(
            policy,
            reference,
            env,
            scheme,
            cfg.train,
            evaluator,
            cfg.seed,
            on_eval=lambda step, m: tracking.log_metrics(m, step),
            progress=progress,
            dyna=dyna,
        )
        table = comparison_table(evaluator, result.final)
        tracking.log_metrics({f"final_{k}": v for k, v in result.final.items()}, step=result.impressions)
        tracking.log_metrics({f"reference_{k}": v for k, v in evaluator.reference_metrics.items()}, step=0)
        tracking.log_metrics({f"oracle_{k}": v for k, v in evaluator.oracle_metrics.items()}, step=0)
        mlflow.log_metric("train_seconds", result.seconds)
        tracking.log_table(table, "evaluation")
        fig = tracking.learning_curves(
            result.history,
            evaluator.reference_metrics,
            evaluator.oracle_metrics,
            scheme.name,
            cfg.train.kl_target,
        )
        tracking.log_figure(fig, "learning_curves.png")
        uri = version = None
        if cfg.tracking.log_model:
            uri, version = tracking.log_policy(policy, cfg.tracking.registered_model, alias=None)
    return JobResult(
        run.info.run_id,
        uri,
        None if version is None else str(version),
        table,
        result.final,
        policy,
        reference,
        result.seconds,
    )


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

    The last 20% of the logs are held out from training and from the baseline. ``slots``: the
    ``ImportedLogs`` of slot rows (one displayed item per row) that ``logs`` comes from: training uses
    item-level examples and the held-out value is IIPS on the logged slot propensities.
    """
    from recsys_rl.finetune.logs import offline_finetune
    from recsys_rl.guard_rails import iips_value, snips_value

    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    n_train = int(0.8 * len(logs))
    train, holdout = logs[:n_train], logs[n_train:]
    n_products = n_products or (env.n_products if env is not None else cfg.sim.n_products)
    k = slots.banner_size if slots is not None else None
    if reference is None:
        vocab = getattr(slots, "vocabulary", None)
        reference = train_baseline(
            train,
            n_products,
            cfg.policy,
            cfg.baseline,
            cfg.seed,
            progress,
            banner_size=k,
            categorical_vocab=vocab,
        )
    extra, value_name = {}, "snips_value"
    if slots is not None and slots.slot_rows:
        pos = torch.from_numpy(slots.positions)
        mu = torch.from_numpy(slots.behaviour_marginals).float() * slots.banner_size  # P(shown in the banner)
        extra = {"positions": pos[:n_train], "behaviour_item_prob": mu[:n_train]}
        value = iips_value(
            holdout,
            scheme,
            slots.positions[n_train:],
            slots.behaviour_marginals[n_train:],
            slots.banner_size,
            cfg.seed,
        )
        value_name = "iips_value"
    else:
        value = snips_value(holdout, scheme)
    tracking.setup(cfg.tracking)
    with tracking.start_run(cfg, scheme.name, data_source, run_name=f"offline-{scheme.name}") as run:
        import time

        start = time.perf_counter()
        policy, history = offline_finetune(
            reference, train, scheme, cfg.train, cfg.seed, progress=progress, **extra
        )
        seconds = time.perf_counter() - start
        for i, row in enumerate(history[:: max(1, len(history) // 200)]):
            tracking.log_metrics(row, step=i)
        rows = {"reference": {value_name: value(reference)}, "fine-tuned": {value_name: value(policy)}}
        if env is not None:
            ev = Evaluator(env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
            final = ev(policy.eval())
            rows["reference"].update(
                {**ev.reference_metrics, "kl_to_reference": 0.0, "oracle_gap_closed": 0.0}
            )
            rows["fine-tuned"].update(final)
            rows["oracle"] = {**ev.oracle_metrics, "oracle_gap_closed": 1.0}
        table = pd.DataFrame.from_dict(rows, orient="index")
        final = {k: float(v) for k, v in table.loc["fine-tuned"].items() if pd.notna(v)}
        tracking.log_metrics({f"final_{k}": v for k, v in final.items()}, step=len(history))
        tracking.log_table(table, "evaluation")
        uri = version = None
        if cfg.tracking.log_model:
            uri, version = tracking.log_policy(policy, cfg.tracking.registered_model)
    return JobResult(
        run.info.run_id,
        uri,
        None if version is None else str(version),
        table,
        final,
        policy,
        reference,
        seconds,
    )

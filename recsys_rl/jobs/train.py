"""The simulator training job end to end: baseline -> fine-tune -> evaluate -> MLflow. The CLI wires an env in.

No simulator import here: callers pass any ``Environment`` and the logs to learn the baseline from.
"""

from __future__ import annotations

import mlflow
import torch

from recsys_rl import tracking
from recsys_rl.audit.plots import lorenz_figure
from recsys_rl.audit.world import AuditWorld
from recsys_rl.baseline import train_baseline
from recsys_rl.config import RunConfig, builtin_rewards, load_reward, per_banner
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.environment import finetune
from recsys_rl.finetune.warm_start import warm_start
from recsys_rl.jobs.result import JobResult, comparison_table, finish_run
from recsys_rl.policy import BannerPolicy, trainable_copy
from recsys_rl.records import LoggedBatch


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
    audit: AuditWorld | None = None,
) -> JobResult:
    """One tracked run: (train the baseline from ``logs`` unless given) -> fine-tune on ``env`` -> evaluate.

    With an ``audit`` world every evaluation carries the bias audit and the run gets the exposure
    Lorenz curves (reference, fine-tuned, oracle) as ``exposure_lorenz.png``."""
    torch.manual_seed(cfg.seed)
    scheme = load_reward(cfg.reward)
    if reference is None:
        if logs is None:
            raise ValueError("train_job needs logs to train the baseline from, or a trained reference")
        reference = train_baseline(
            logs,
            env.n_products,
            cfg.policy,
            cfg.baseline,
            cfg.seed,
            progress,
            item_category=getattr(env, "category", None),  # the item table, where the environment has one
        )
    policy = trainable_copy(reference)
    evaluator = Evaluator(
        env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000, audit=audit
    )
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
        tracking.log_metrics({f"reference_{k}": v for k, v in evaluator.reference_metrics.items()}, step=0)
        tracking.log_metrics({f"oracle_{k}": v for k, v in evaluator.oracle_metrics.items()}, step=0)
        mlflow.log_metric("train_seconds", result.seconds)
        fig = tracking.learning_curves(
            result.history,
            evaluator.reference_metrics,
            evaluator.oracle_metrics,
            scheme.name,
            per_banner(cfg.train.kl_target, reference.banner_size),
        )
        tracking.log_figure(fig, "learning_curves.png")
        if evaluator.exposures:
            tracking.log_figure(lorenz_figure(evaluator.exposures), "exposure_lorenz.png")
        table = comparison_table(evaluator, result.final)
        return finish_run(
            run, cfg, table, result.final, result.impressions, policy, reference, result.seconds
        )

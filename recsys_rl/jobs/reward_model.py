"""`train-reward-model` end to end: fit on logs -> held-out metrics and reliability plot -> MLflow registry."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd

import recsys_rl
from recsys_rl import tracking
from recsys_rl.config import TrackingConfig
from recsys_rl.records import LoggedBatch
from recsys_rl.reward_model.config import RewardModelConfig
from recsys_rl.reward_model.fit import fit_reward_model
from recsys_rl.reward_model.metrics import evaluate, reliability_figure
from recsys_rl.reward_model.model import BannerRewardModel
from recsys_rl.reward_model.packaging import REGISTERED_NAME, log_reward_model

EXPERIMENT = "recsys-rl-reward-model"


@dataclass
class RewardModelRun:
    run_id: str
    model_uri: str
    version: str | None
    metrics: dict[str, float]
    model: BannerRewardModel


def train_reward_model_job(
    logs: LoggedBatch,
    n_products: int,
    cfg: RewardModelConfig | None = None,
    tracking_cfg: TrackingConfig | None = None,
    *,
    data_source: str = "logs",
    experiment: str = EXPERIMENT,
    registered_name: str | None = REGISTERED_NAME,
    progress: bool = True,
    n_positions: int | None = None,
    categorical_vocab: list[list[str]] | None = None,
) -> RewardModelRun:
    """Fit, validate on the held-out share, log everything to one MLflow run and register the model."""
    cfg = cfg or RewardModelConfig()
    result = fit_reward_model(logs, n_products, cfg, progress, n_positions, categorical_vocab)  # raises first
    metrics, curves = evaluate(result.model, result.validation, cfg.calibration_bins)
    tracking.setup(tracking_cfg or TrackingConfig(), experiment)
    with mlflow.start_run(run_name=f"reward-model-seed{cfg.seed}") as run:
        mlflow.log_params(
            {
                **{k: str(v) for k, v in cfg.model_dump().items()},
                "n_products": n_products,
                "n_impressions": len(logs),
                "n_validation": len(result.validation),
            }
        )
        mlflow.set_tags(
            {"job": "reward_model", "data_source": data_source, "recsys_rl_version": recsys_rl.__version__}
        )
        for row in result.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        exam = result.model.examination().detach()
        metrics = {**metrics, "best_epoch": float(result.best_epoch)}
        metrics.update({f"examination_{k}": float(v) for k, v in enumerate(exam)})
        mlflow.log_metrics(metrics)
        tracking.log_figure(reliability_figure(curves, metrics), "reliability.png")
        table = pd.DataFrame(
            {
                o: {m: metrics[f"{m}_{o}"] for m in ("log_loss", "auc", "ece", "n", "base_rate")}
                for o in curves
            }
        ).T
        tracking.log_table(table, "reward_model_validation")
        uri, version = log_reward_model(result.model, registered_name)
    return RewardModelRun(
        run.info.run_id, uri, None if version is None else str(version), metrics, result.model
    )

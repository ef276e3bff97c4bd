"""The closed-loop job: one MLflow parent run, a child run per variant and round, plots against rounds.

Variants are named loop settings run from the same round-0 reference on the same simulator, e.g.
"plain" (every mitigation off) beside the configured mitigations, so the parent run compares them.
No simulator import: the CLI passes the environment, its audit world and the logs of round 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd

from recsys_rl import tracking
from recsys_rl.audit.plots import rounds_figure
from recsys_rl.audit.world import AuditWorld
from recsys_rl.config import LoopConfig, RunConfig, builtin_rewards, load_reward
from recsys_rl.env import Environment
from recsys_rl.evaluation import Evaluator
from recsys_rl.finetune.closed_loop import run_loop
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch

PLOTTED = [
    "oracle_gap_closed",
    "exposure_gini",
    "tail_share",
    "popularity_lift",
    "jaccard",
    "calibration_kl",
]

PLAIN = {
    "debias": False,
    "anchor": "latest",
    "exposure_cap": 0.0,
    "exploration_floor": 0.0,
}
"""The loop with every mitigation off."""


@dataclass
class LoopResult:
    run_id: str
    history: pd.DataFrame  # one row per (variant, round): the round's fine-tuned policy's metrics
    oracle: dict[str, float]
    reference: dict[str, float]

    def final(self, variant: str) -> pd.Series:
        return self.history[self.history["variant"] == variant].iloc[-1]

    def rise(self, variant: str, metric: str) -> float:
        """Final round minus round 0."""
        h = self.history[self.history["variant"] == variant]
        return float(h[metric].iloc[-1] - h[metric].iloc[0])


def loop_job(
    cfg: RunConfig,
    env: Environment,
    world: AuditWorld,
    logs0: LoggedBatch,
    reference0: BannerPolicy,
    variants: dict[str, LoopConfig] | None = None,
    experiment: str | None = None,
    progress: bool = True,
) -> LoopResult:
    """Run each variant's loop (default: just ``cfg.loop``, as "loop") and track it all under one parent."""
    variants = variants or {"loop": cfg.loop}
    scheme = load_reward(cfg.reward)
    evaluator = Evaluator(
        env, reference0, scheme, builtin_rewards(), cfg.loop.eval_users, cfg.seed + 1000, audit=world
    )
    tracking.setup(cfg.tracking, experiment)
    rows: list[dict] = []
    with tracking.start_run(cfg, scheme.name, "simulator", f"loop-{'-'.join(variants)}") as parent:
        mlflow.set_tags({"loop_variants": ",".join(variants), "loop_rounds": str(cfg.loop.rounds)})
        tracking.log_metrics({f"oracle_{k}": v for k, v in evaluator.oracle_metrics.items()}, step=0)
        tracking.log_metrics({f"reference_{k}": v for k, v in evaluator.reference_metrics.items()}, step=0)
        for name, loop in variants.items():
            run_cfg = cfg.model_copy(update={"loop": loop})

            def on_round(r: int, m: dict[str, float], name=name, run_cfg=run_cfg) -> None:
                rows.append({"variant": name, "round": r, **m})
                with tracking.start_run(run_cfg, scheme.name, "simulator", f"{name}-round{r}"):
                    mlflow.set_tags({"loop_variant": name, "loop_round": str(r)})
                    mlflow.log_metrics(m)
                mlflow.log_metrics({f"{name}_{k}": v for k, v in m.items()}, step=r)

            run_loop(
                run_cfg, env, evaluator, reference0, logs0, scheme, world.examination, on_round, progress
            )
        history = pd.DataFrame(rows)
        tracking.log_table(history.set_index(["variant", "round"]), "loop_rounds")
        fig = rounds_figure(history, [m for m in PLOTTED if m in history], evaluator.oracle_metrics)
        tracking.log_figure(fig, "loop_rounds.png")
        return LoopResult(parent.info.run_id, history, evaluator.oracle_metrics, evaluator.reference_metrics)

"""What every fine-tuning job hands back, and the tail every one of them ends its MLflow run with.

The jobs differ in how they train and judge; they agree on the result: an evaluation table (rows:
reference, fine-tuned, then whatever else was judged, e.g. best-of-n or the oracle; columns: metrics),
the fine-tuned row as ``final_*`` metrics, the table as the run's ``evaluation`` artifact, and the
policy logged (and registered) as an MLflow model when ``tracking.log_model`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys_rl import tracking
from recsys_rl.audit.report import AUDIT_METRICS
from recsys_rl.config import RunConfig
from recsys_rl.evaluation import Evaluator
from recsys_rl.policy import BannerPolicy

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
    *AUDIT_METRICS,
]


@dataclass
class JobResult:
    run_id: str
    model_uri: str | None
    model_version: str | None
    table: pd.DataFrame  # rows: reference, fine-tuned, ... (e.g. best-of-n, oracle); columns: metrics
    final: dict[str, float]
    policy: BannerPolicy
    reference: BannerPolicy
    seconds: float


def reference_row(evaluator: Evaluator) -> dict[str, float]:
    """The reference's exact metrics: KL 0 to itself, none of the oracle gap closed."""
    return {
        **evaluator.reference_metrics,
        "kl_to_reference": 0.0,
        "kl_per_slot": 0.0,
        "oracle_gap_closed": 0.0,
    }


def oracle_row(evaluator: Evaluator) -> dict[str, float]:
    return {**evaluator.oracle_metrics, "oracle_gap_closed": 1.0}


def comparison_table(evaluator: Evaluator, final: dict[str, float]) -> pd.DataFrame:
    """Reference, fine-tuned and oracle on the simulator, in ``TABLE_COLUMNS`` order (then other schemes)."""
    rows = {"reference": reference_row(evaluator), "fine-tuned": final, "oracle": oracle_row(evaluator)}
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df[
        [c for c in TABLE_COLUMNS if c in df.columns]
        + [c for c in df.columns if c.startswith("reward_") and c not in TABLE_COLUMNS]
        + [c for c in df.columns if c.startswith("segment_")]
    ]


def fine_tuned_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The fine-tuned row without the cells it has no value for (a metric only another row has)."""
    return {k: float(v) for k, v in table.loc["fine-tuned"].items() if pd.notna(v)}


def finish_run(
    run,
    cfg: RunConfig,
    table: pd.DataFrame,
    final: dict[str, float],
    step: int,
    policy: BannerPolicy,
    reference: BannerPolicy,
    seconds: float,
) -> JobResult:
    """Inside the job's active ``run``: log ``final`` as ``final_*`` at ``step``, the table, the model."""
    tracking.log_metrics({f"final_{k}": v for k, v in final.items()}, step=step)
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

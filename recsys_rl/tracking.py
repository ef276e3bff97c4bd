"""MLflow tracking: one run per training job, plots and the policy as a registered pyfunc model.

The embedded default store is SQLite on local disk (MLflow 3 refuses a bare ./mlruns file store);
A team points runs at its server with ``MLFLOW_TRACKING_URI`` or an explicit ``tracking.tracking_uri``
(the config wins when it names one: MLflow itself exports the env var on ``set_tracking_uri``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

import recsys_rl
from recsys_rl.config import RunConfig, TrackingConfig, flatten
from recsys_rl.policy import BannerPolicy

# The MLflow 3 UI opens an experiment by this tag: "custom_model_development" ("Machine learning" in its
# bundle's experiment-kind enum) is the classic runs table and charts; untagged experiments open on
# the GenAI traces overview. A kind someone set by hand is left alone.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(cfg: TrackingConfig) -> str:
    """An explicit ``tracking_uri`` in the config, else $MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    default = TrackingConfig.model_fields["tracking_uri"].default
    if cfg.tracking_uri != default:
        return cfg.tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def setup(cfg: TrackingConfig, experiment: str | None = None) -> str:
    """Point MLflow at the configured store and experiment; returns the URI in use."""
    uri = tracking_uri(cfg)
    use(uri, experiment or cfg.experiment)
    return uri


def use(uri: str, experiment: str) -> None:
    """Make ``experiment`` of the store at ``uri`` the active one, creating it as the project does
    (artifacts beside a SQLite store, the UI's experiment-kind tag)."""
    mlflow.set_tracking_uri(uri)
    _create_beside_sqlite_store(uri, experiment)
    exp = mlflow.set_experiment(experiment)
    if exp.tags.get(EXPERIMENT_KIND_TAG) is None:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def _create_beside_sqlite_store(uri: str, name: str) -> None:
    """Create a new experiment of a SQLite store with its artifacts in ``mlruns/`` next to the .db file.

    MLflow's own default is ``./mlruns`` of whatever directory the process happens to run in, so a
    run from another directory against the same ``sqlite:///`` file scatters artifacts (models,
    plots) over the file system. Existing experiments keep their location.
    """
    if not uri.startswith("sqlite:///") or mlflow.get_experiment_by_name(name) is not None:
        return
    root = Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns"
    try:
        mlflow.create_experiment(name, artifact_location=(root / name).as_uri())
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it first: use theirs
            raise


def start_run(cfg: RunConfig, scheme_name: str, data_source: str, run_name: str | None = None):
    """Open a run with the flattened config as params and the tags people filter on."""
    # inside an open run (a sweep's parent) the job is its nested child: tag mlflow.parentRunId
    run = mlflow.start_run(
        run_name=run_name or f"{scheme_name}-seed{cfg.seed}", nested=mlflow.active_run() is not None
    )
    params = {k: str(v) for k, v in flatten(cfg).items()}
    params["reward"] = scheme_name
    mlflow.log_params(params)
    mlflow.set_tags(
        {
            "reward_scheme": scheme_name,
            "seed": str(cfg.seed),
            "data_source": data_source,
            "recsys_rl_version": recsys_rl.__version__,
        }
    )
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.yaml"
        p.write_text(_yaml(cfg))
        mlflow.log_artifact(str(p))
    return run


def _yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def log_metrics(metrics: dict[str, float], step: int) -> None:
    mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in metrics.items()}, step=step)


def learning_curves(
    history: list[dict[str, float]],
    reference: dict,
    oracle: dict,
    scheme: str,
    kl_target: float | None = None,
):
    """A figure of reward, gap closed, KL and beta against impressions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(history)
    x = df["impressions"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    key = f"reward_{scheme}"
    ax[0, 0].plot(x, df[key], label="policy")
    ax[0, 0].axhline(reference[key], color="gray", ls="--", label="reference")
    ax[0, 0].axhline(oracle[key], color="green", ls="--", label="oracle")
    ax[0, 0].set_title(f"expected {scheme} reward per impression")
    ax[0, 0].legend()
    ax[0, 1].plot(x, df["oracle_gap_closed"])
    ax[0, 1].set_title("fraction of reference→oracle gap closed")
    ax[1, 0].plot(x, df["kl_to_reference"], label="KL(π‖ref)")
    if kl_target is not None:
        ax[1, 0].axhline(kl_target, color="red", ls=":", label="KL budget")
    ax[1, 0].set_title("KL to reference (nats per banner) and β")
    ax[1, 0].legend(loc="upper left")
    if "beta" in df:
        tw = ax[1, 0].twinx()
        tw.plot(x, df["beta"], color="orange", label="β")
        tw.set_ylabel("β", color="orange")
    for m in ("clicks_per_impression", "purchases_per_impression", "multi_purchases_per_impression"):
        ax[1, 1].plot(x, df[m] / max(reference[m], 1e-9), label=m)
    ax[1, 1].set_title("outcomes per impression relative to reference")
    ax[1, 1].legend()
    for a in ax.flat:
        a.set_xlabel("impressions")
    fig.tight_layout()
    return fig


def sweep_comparison(table: pd.DataFrame, metrics: list[str]):
    """Side-by-side bars of each metric (one panel each) for every row of a sweep table (reference first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    colors = ["gray"] + [f"C{i}" for i in range(len(table) - 1)]
    for ax, m in zip(axes.flat, metrics, strict=False):
        ax.barh(table.index.astype(str), table[m].astype(float), color=colors)
        ax.set_title(m)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle("sweep: exact expected metrics per impression (reference in gray)")
    fig.tight_layout()
    return fig


def log_figure(fig, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, name)
    plt.close(fig)


def log_table(table: pd.DataFrame, name: str) -> None:
    """The table as CSV (readable anywhere) and as an MLflow table (comparable in the UI)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"{name}.csv"
        table.to_csv(p)
        mlflow.log_artifact(str(p))
    mlflow.log_table(table.reset_index(), artifact_file=f"{name}.json")


def log_policy(policy: BannerPolicy, registered_name: str | None, alias: str | None = None):
    """Log the policy as a standard MLflow pyfunc model (``recsys_rl.mlflow_model``: signature, input
    example, pinned requirements, the torch weights as an artifact); register it, point ``alias`` at it.

    Returns (model_uri, registered version or None).
    """
    from recsys_rl import mlflow_model

    with tempfile.TemporaryDirectory(prefix="recsys-policy-") as d:
        info = mlflow_model.log_model(policy.eval(), registered_name, d)
    version = info.registered_model_version
    if registered_name and alias and version is not None:
        mlflow.MlflowClient().set_registered_model_alias(registered_name, alias, str(version))
    return info.model_uri, version


def load_logits_model(uri: str) -> BannerPolicy:
    """A callable (viewed (B,), history (B, H)) -> logits (B, N) from a model URI: the logged weights."""
    from recsys_rl import mlflow_model

    return mlflow_model.load_banner_policy(uri).eval()

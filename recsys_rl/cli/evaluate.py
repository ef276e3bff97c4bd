"""`recsys-rl evaluate`: off-policy estimates of a policy's value from logged data, as one MLflow run.

The policy is a registered or logged MLflow model (models:/banner-policy/3, runs:/<id>/policy), a file
written by ``save_policy``, or the word ``reference`` (the file given by --reference). Logs are an
event-schema directory or any table a --mapping YAML describes (``recsys_rl.logdata.importer``).

Everything the user gave is read and checked before anything is written: a bad option, mapping or log
file ends in one line on stderr and exit code 2, with no MLflow run and no file created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.cli.common import friendly
from recsys_rl.config import TrackingConfig, load_reward

MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
DEFAULT_EXPERIMENT = "recsys-rl-ope"


def _tracking_uri(explicit: str | None) -> str:
    from recsys_rl.tracking import tracking_uri

    return explicit or tracking_uri(TrackingConfig())


def _check_store(uri: str) -> None:
    """A local SQLite store must exist already: reading a model from a missing one would create it."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ValueError(f"--policy: tracking store {uri} does not exist (set --tracking-uri)")


def _load_file(path: Path, option: str):
    from recsys_rl.policy import load_policy

    if not path.is_file():
        raise ValueError(f"{option}: {path}: file not found")
    try:
        policy = load_policy(path).eval()
    except Exception as e:  # torch.load / state-dict errors have many types; all mean "not a policy file"
        raise ValueError(
            f"{option}: {path}: not a file written by save_policy ({type(e).__name__})"
        ) from None
    return policy.logits


def _load_mlflow(uri: str, tracking: str):
    import mlflow

    from recsys_rl.tracking import load_logits_model

    _check_store(tracking)
    mlflow.set_tracking_uri(tracking)
    try:
        model = load_logits_model(uri)
    except Exception as e:  # MlflowException, missing artifacts, export errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--policy: cannot load {uri} from {tracking} ({first})") from None
    return model.logits  # the policy itself: contexts with their user features, vocabulary included


def _policy(spec: str, reference: Path | None, tracking: str):
    """(logits function, label) for the --policy value."""
    if spec == "reference":
        if reference is None:
            raise ValueError("--policy: 'reference' needs --reference PATH")
        return _load_file(reference, "--reference"), "reference"
    if spec.startswith(MLFLOW_PREFIXES):
        return _load_mlflow(spec, tracking), spec
    return _load_file(Path(spec), "--policy"), Path(spec).name


def _width(fn, option: str) -> int:
    import torch

    from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch

    owner = getattr(fn, "__self__", None)  # a save_policy file's policy: probe with the features it takes
    n_feat = getattr(owner, "n_user_features", 0)
    n_cat = len(getattr(owner, "categorical_vocab", None) or [])
    ctx = ContextBatch(
        torch.zeros(2, dtype=torch.long),
        torch.full((2, HISTORY_LEN), PAD, dtype=torch.long),
        torch.zeros(2, n_feat) if n_feat else None,
        torch.zeros(2, n_cat, dtype=torch.long) if n_cat else None,
    )
    try:
        with torch.no_grad():
            out = fn(ctx)
    except Exception as e:
        raise ValueError(f"{option}: the model cannot score a context ({type(e).__name__}: {e})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        raise ValueError(f"{option}: expected logits (B, N) from (viewed, history)")
    return int(out.shape[1])


def _table(result):
    import pandas as pd

    rows = {
        name: {
            "estimate": e.value,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "std_err": e.std_err,
            "ess": e.ess,
            "max_weight": e.max_weight,
            "n": e.n,
        }
        for name, e in result.estimates.items()
    }
    table = pd.DataFrame(rows).T
    table.index.name = "estimator"
    table["label"] = [e.name for e in result.estimates.values()]
    return table


def _print(table, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("estimator", "estimate", "95% CI", "std err", "ESS", "max weight", "n"):
        t.add_column(col, justify="left" if col == "estimator" else "right", no_wrap=True)
    for _, r in table.iterrows():
        t.add_row(
            r["label"],
            f"{r['estimate']:.4f}",
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
            f"{r['std_err']:.4f}",
            f"{r['ess']:,.0f}",
            f"{r['max_weight']:.3g}",
            f"{int(r['n']):,}",
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: no terminal width to respect, keep rows on one line
        console = Console(width=120)
    console.print(t)


@friendly
def evaluate(
    logs: Annotated[
        Path, typer.Option("--logs", help="event-schema directory, or a table described by --mapping")
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy", help="models:/NAME/VERSION, runs:/ID/policy, a save_policy .pt file, or 'reference'"
        ),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference", help="save_policy file: the policy for 'reference'; else reward-model features"
        ),
    ] = None,
    estimators: Annotated[
        str, typer.Option("--estimators", help="comma-separated: ips, snips, iips, dm, dr")
    ] = "ips,snips,iips,dr",
    reward: Annotated[str, typer.Option("--reward", help="reward scheme name or YAML")] = "graded",
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="column-mapping YAML for logs not in the event schema")
    ] = None,
    n_products: Annotated[
        int | None, typer.Option("--n-products", help="catalogue size (default: the policy's)")
    ] = None,
    clip: Annotated[
        float | None, typer.Option("--clip", help="clip importance weights at this value")
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", help="sampling temperature of the evaluated policy")
    ] = 1.0,
    samples: Annotated[
        int, typer.Option("--samples", help="banners drawn per context for per-position marginals")
    ] = 64,
    seed: Annotated[int, typer.Option("--seed", help="seed of the sampling and the reward model")] = 0,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment")] = DEFAULT_EXPERIMENT,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"),
    ] = None,
) -> None:
    """Estimate a policy's value per impression from logged data (IPS, SNIPS, IIPS, DM, DR) and log it."""
    table, params, title = _estimate(  # every input read and checked before anything is written
        logs,
        policy,
        reference,
        estimators,
        reward,
        mapping,
        n_products,
        clip,
        temperature,
        samples,
        seed,
        tracking_uri,
    )
    _print(table, title)
    run_id = _log(table, params, experiment, _tracking_uri(tracking_uri))
    typer.echo(
        f"MLflow run id: {run_id}  (experiment {experiment}, tracking URI {_tracking_uri(tracking_uri)})"
    )


def _estimate(
    logs,
    policy,
    reference,
    estimators,
    reward,
    mapping,
    n_products,
    clip,
    temperature,
    samples,
    seed,
    tracking_uri,
):
    """Read and check every input, then compute the estimates; raises ValueError on bad input."""
    import torch

    from recsys_rl.logdata.importer import import_logs
    from recsys_rl.logdata.mapping import load_mapping
    from recsys_rl.ope.pipeline import BANNER_WEIGHTED, evaluate_policy, parse_estimators

    torch.set_num_threads(1)
    names = parse_estimators(estimators)
    scheme = load_reward(reward)
    if clip is not None and not clip > 0:
        raise ValueError(f"--clip: must be > 0, got {clip}")
    if not temperature > 0:
        raise ValueError(f"--temperature: must be > 0, got {temperature}")
    if samples < 1:
        raise ValueError(f"--samples: must be >= 1, got {samples}")
    column_mapping = load_mapping(mapping) if mapping is not None else None
    target, label = _policy(policy, reference, _tracking_uri(tracking_uri))
    width = _width(target, "--policy")
    if n_products is not None and n_products != width:
        raise ValueError(f"--n-products: {n_products}, but the policy scores {width} products")
    ref_fn = None
    if reference is not None and policy != "reference":
        ref_fn = _load_file(reference, "--reference")
        if _width(ref_fn, "--reference") != width:
            raise ValueError(
                f"--reference: scores {_width(ref_fn, '--reference')} products, the policy {width}"
            )
    imported = import_logs(logs, width, column_mapping)
    missing = imported.unobserved(scheme)
    if missing:
        raise ValueError(
            f"--reward: scheme {scheme.name!r} rewards {', '.join(missing)}, which this log does not record "
            f"(it has {', '.join(sorted(imported.outcomes))})"
        )
    banner_weighted = [e for e in names if e in BANNER_WEIGHTED]
    if imported.slot_rows and banner_weighted:
        raise ValueError(
            f"--estimators: {', '.join(banner_weighted)} weight whole banners, and this log has one row per "
            "displayed item with no impression key to regroup them (use iips, dm, dr; or map impression_id)"
        )
    if not imported.has_banner_propensity and banner_weighted:
        raise ValueError("--estimators: ips/snips need a banner propensity column, and the log has none")
    owner = getattr(target, "__self__", None)
    slots = (
        {"positions": imported.positions, "banner_size": imported.banner_size} if imported.slot_rows else {}
    )
    result = evaluate_policy(
        imported.for_model(getattr(owner, "categorical_vocab", None)),
        target,
        scheme,
        names,
        behaviour_marginals=imported.behaviour_marginals,
        reference=ref_fn,
        temperature=temperature,
        clip=clip,
        n_samples=samples,
        seed=seed,
        **slots,
    )
    table = _table(result)
    params = {
        "logs": str(logs),
        "log_source": imported.source,
        "mapping": str(mapping) if mapping else "",
        "policy": policy,
        "reference": str(reference) if reference else "",
        "estimators": ",".join(names),
        "reward": scheme.name,
        "n_products": width,
        "n_impressions": len(imported),
        "clip": clip if clip is not None else "",
        "temperature": temperature,
        "samples": samples,
        "seed": seed,
        "target_marginals": "exact"
        if result.exact_target_marginals
        else f"sampled ({result.n_samples} per context)",
        "behaviour_marginals": result.behaviour_marginals,
    }
    title = f"off-policy value of {label} per impression ({scheme.name} reward, {len(imported):,} logged impressions)"
    return table, params, title


def _log(table, params: dict, experiment: str, uri: str) -> str:
    """One MLflow run: the inputs as params, the estimates as a table and as metrics ope_<name>_*."""
    import mlflow

    from recsys_rl import tracking

    tracking.use(uri, experiment)
    with mlflow.start_run(run_name=f"ope-{Path(str(params['policy'])).name}") as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.set_tags(
            {"job": "ope", "data_source": f"logs:{params['logs']}", "reward_scheme": params["reward"]}
        )
        tracking.log_table(table, "ope_estimates")
        metrics = {}
        for name, row in table.iterrows():
            for col in ("estimate", "ci_low", "ci_high", "std_err", "ess"):
                key = "value" if col == "estimate" else col
                metrics[f"ope_{name}_{key}"] = float(row[col])
        mlflow.log_metrics(metrics)
    return run.info.run_id

"""CLI of the reward-model path: `train-reward-model`, and the `train`/`sweep` branches for --reward-model.

`train` and `sweep` (``cli.train``) dispatch here when --reward-model is given, so the ordinary commands
stay as they are. Bad input ends in one line on stderr and exit 2 (``cli.common.friendly``), before any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys_rl.cli.common import (
    console,
    friendly,
    logs_with_catalogue,
    parse_overrides,
    print_table,
    simulator_at,
    use_threads,
)


def _rm_config(pairs: list[str] | None, seed: int | None):
    import pydantic

    from recsys_rl.config import ConfigError
    from recsys_rl.reward_model import RewardModelConfig

    values = parse_overrides(pairs)
    if seed is not None:
        values.setdefault("seed", seed)
    try:
        return RewardModelConfig(**values)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "?"
        raise ConfigError(f"--set: {field}: {err['msg']}") from None


@friendly
def train_reward_model(
    logs: Annotated[
        Path, typer.Option("--logs", help="event-schema directory, or a table described by --mapping")
    ],
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="column-mapping YAML for logs not in the event schema")
    ] = None,
    n_products: Annotated[
        int | None,
        typer.Option("--n-products", help="catalogue size (default: the largest product id in the logs + 1)"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="run config YAML (seed, sim and tracking sections used)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="reward-model setting, e.g. --set epochs=10")
    ] = None,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment")
    ] = "recsys-rl-reward-model",
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Fit the reward model (click, purchase, units per context x product x position) and register it.

    Held-out log-loss, AUC and calibration per outcome go to MLflow with a reliability plot; the model is
    registered as `banner-reward-model` (load it with mlflow.pyfunc.load_model).
    """
    from recsys_rl.config import load_run
    from recsys_rl.jobs.reward_model import train_reward_model_job

    cfg = load_run(config)
    use_threads(cfg)
    rm_cfg = _rm_config(set_, cfg.seed)
    imported, n = logs_with_catalogue(logs, mapping, n_products)
    if "clicks" not in imported.outcomes:
        raise ValueError(f"--logs: {logs}: records no clicks; the reward model needs click feedback")
    res = train_reward_model_job(
        imported.batch,
        n,
        rm_cfg,
        cfg.tracking,
        data_source=f"logs:{logs}",
        experiment=experiment,
        progress=not quiet,
        n_positions=imported.banner_size,
        categorical_vocab=imported.vocabulary,
    )
    m = res.metrics
    for o in ("click", "purchase", "multi"):
        console.print(
            f"{o:>8}: log-loss {m[f'log_loss_{o}']:.4f}  AUC {m[f'auc_{o}']:.4f}  "
            f"ECE {m[f'ece_{o}']:.4f}  (held-out rows {int(m[f'n_{o}']):,})"
        )
    exam = ", ".join(f"{m[f'examination_{k}']:.3f}" for k in range(res.model.n_positions))
    console.print(f"examination by position (relative to the top slot): {exam}")
    console.print(
        f"MLflow run id: [bold]{res.run_id}[/bold]  model: {res.model_uri}  "
        f"registered: banner-reward-model version {res.version}"
    )


def _setup_tracking_for_load(cfg) -> None:
    import mlflow

    from recsys_rl import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking))


def _model_and_world(cfg, reward_model: str, reference, sim_config: Path | None):
    """The reward model at ``reward_model`` and the simulator of ``sim_config`` (or None), refused
    unless both, and the reference, share one catalogue."""
    from recsys_rl.reward_model import check_catalogue, load_reward_model

    _setup_tracking_for_load(cfg)
    model = load_reward_model(reward_model)
    env = simulator_at(sim_config) if sim_config is not None else None
    if env is not None:
        check_catalogue(model, env.n_products, f"the simulator ({sim_config})")
    if reference is not None:
        check_catalogue(model, reference.n_products, "the --reference policy")
    return model, env


def with_fitted_examination(cfg, reward_model: str):
    """``cfg`` with ``preference.examination`` set to the reward model's fitted position curve (K,),
    so in-banner DPO counts an ignored neighbour as rejected only as often as its slot is examined.
    A curve given in the config as well is refused: two sources for one setting."""
    if cfg.preference.examination is not None:
        raise ValueError(
            "--reward-model: preference.examination is set too; give the curve or the reward model, not both"
        )
    from recsys_rl.reward_model import load_reward_model

    _setup_tracking_for_load(cfg)
    curve = load_reward_model(reward_model).examination().detach()
    pref = cfg.preference.model_copy(update={"examination": [round(float(e), 6) for e in curve]})
    return cfg.model_copy(update={"preference": pref})


def train_with_reward_model(
    cfg,
    logs: Path,
    reward_model: str,
    reference,
    sim_config: Path | None,
    quiet: bool,
    mapping: Path | None = None,
):
    """`train --logs PATH [--mapping M] --reward-model URI`: RL against the reward model from the logged contexts.

    The catalogue is the reward model's: a logged product id past it is refused."""
    from recsys_rl.config import load_reward
    from recsys_rl.jobs.against_reward_model import rm_job

    model, env = _model_and_world(cfg, reward_model, reference, sim_config)
    banner_size = vocabulary = None
    if mapping is not None:
        from recsys_rl.logdata.importer import import_logs

        imported = import_logs(logs, model.n_products, mapping)
        batch = imported.for_model(reference.categorical_vocab) if reference is not None else imported.batch
        banner_size, vocabulary = imported.banner_size, imported.vocabulary
    else:
        from recsys_rl.logdata.parquet import read_logs
        from recsys_rl.records import catalogue_size

        batch = read_logs(logs)
        if catalogue_size(batch) > model.n_products:
            raise ValueError(
                f"--logs: product id {catalogue_size(batch) - 1}, but the reward model knows {model.n_products} products"
            )
    res = rm_job(
        cfg,
        batch,
        model,
        reward_model_uri=reward_model,
        reference=reference,
        env=env,
        data_source=f"logs:{logs}",
        progress=not quiet,
        banner_size=banner_size,
        categorical_vocab=vocabulary,
    )
    key = f"reward_{load_reward(cfg.reward).name}"
    cols = ["proxy_value", "snips_value", key, "reward_graded", "kl_to_reference", "oracle_gap_closed"]
    cols = list(dict.fromkeys(c for c in cols if c in res.table.columns))
    print_table(res.table[cols], "fine-tuning against the reward model: reference vs fine-tuned vs best-of-n")
    console.print(f"MLflow run id: [bold]{res.run_id}[/bold]  model: {res.model_uri}")


def sweep_with_reward_model(
    cfg,
    reward_model: str,
    kl_targets: str,
    logs: Path | None,
    reference,
    sim_config: Path | None,
    experiment: str | None,
    bon_max_n: int,
    quiet: bool,
    max_kl: float | None = None,
    reach_rounds: int = 1,
):
    """`sweep --reward-model URI --kl-targets ...`: proxy vs gold against sqrt(KL), RL and best-of-n.

    ``max_kl``: widen (double the largest budget, up to this) while the gold still peaks at the end;
    ``reach_rounds``: continue a run that ends short of its budget, up to this many runs (``kl_sweep``)."""
    from recsys_rl.baseline import train_baseline
    from recsys_rl.config import builtin_rewards, load_reward
    from recsys_rl.evaluation import Evaluator
    from recsys_rl.jobs.judges import DoublyRobustJudge, ExactJudge
    from recsys_rl.jobs.kl_sweep import EXPERIMENT, kl_sweep
    from recsys_rl.logdata.parquet import read_logs

    try:
        targets = [float(t) for t in kl_targets.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--kl-targets: expected comma-separated numbers, got {kl_targets!r}") from None
    if not targets or any(not t > 0 for t in targets):
        raise ValueError(f"--kl-targets: budgets must be positive numbers, got {kl_targets!r}")
    if logs is None:
        raise ValueError(
            "--logs: the reward-model sweep fine-tunes on logged contexts; give the log directory"
        )
    if max_kl is not None and not max_kl > max(targets):
        raise ValueError(
            f"--max-kl: {max_kl:g} must be above the largest --kl-targets budget {max(targets):g}"
        )
    scheme = load_reward(cfg.reward)
    use_threads(cfg)
    model, env = _model_and_world(cfg, reward_model, reference, sim_config)
    batch = read_logs(logs)
    n_train = int(0.8 * len(batch))
    train, holdout = batch[:n_train], batch[n_train:]
    if reference is None:
        reference = train_baseline(train, model.n_products, cfg.policy, cfg.baseline, cfg.seed, not quiet)
    evaluator = None
    if env is not None:
        judge = ExactJudge(env, scheme, cfg.train.eval_users, cfg.seed + 1000)
        evaluator = Evaluator(
            env, reference, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000
        )
    else:
        judge = DoublyRobustJudge(holdout, scheme, reference.logits, cfg.seed)
    res = kl_sweep(
        reference,
        model,
        train.contexts,
        scheme,
        cfg,
        targets,
        judge,
        bon_max_n=bon_max_n,
        widen_to=max_kl,
        reach_rounds=reach_rounds,
        experiment=experiment or EXPERIMENT,
        evaluator=evaluator,
        progress=not quiet,
        log=console.print,
    )
    show = res.table.set_index(res.table["method"] + " " + res.table["kl_target"].map("{:g}".format))
    print_table(
        show[
            [c for c in ("n", "rounds", "kl", "sqrt_kl", "proxy", "gold", "oracle_gap_closed") if c in show]
        ],
        f"KL sweep against {reward_model} ({res.gold_label})",
    )
    s = res.summary
    if s:
        console.print(
            f"gold peak at kl_target={res.recommended_kl_target:g} (KL {s['gold_peak_kl']:.3f}); "
            f"past it the proxy gains {s['proxy_gain_past_peak']:+.4f} while the gold "
            f"{'loses' if s['gold_loss_past_peak'] > 0 else 'changes by'} {abs(s['gold_loss_past_peak']):.4f}"
        )
        console.print(f"recommended kl_target: [bold]{res.recommended_kl_target:g}[/bold]")
    console.print(
        f"MLflow parent run: [bold]{res.run_id}[/bold] (one child run per budget; plot overoptimisation.png)"
    )
